"""The joint loss: the orthogonality identity, radial weighting, batching, masks, gradients; the
spectral options (normalised and band weights, the noise-level gate, the amplitude term, the
division by 1 + lam) and the bit-identity of the loss with the options off."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from weather_sr.core.fourier import inverse_real_fourier2, radial_frequency, real_fourier2
from weather_sr.core.loss import (
    amplitude_loss,
    band_weight,
    gate_factor,
    joint_loss,
    lr_nyquist,
    masked_mean,
    normalise_weight,
    radial_bins,
    radial_power,
    radial_weight,
)
from weather_sr.core.schedule import make_schedule
from weather_sr.errors import UserError

B, C, H, W = 3, 2, 16, 12


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


class TinyDenoiser(nn.Module):
    """A small conv net that also sees y and t; counts its calls and batch sizes."""

    def __init__(self, kernel: int = 3) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(2 * C, C, kernel, padding=kernel // 2).double()
        self.calls: list[int] = []

    def forward(self, x: torch.Tensor, y: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        self.calls.append(x.shape[0])
        return self.conv(torch.cat([x, y], 1)) * (1 + t.view(-1, 1, 1, 1) / 1000)


@pytest.fixture
def data() -> tuple[torch.Tensor, torch.Tensor]:
    x0 = torch.randn(B, C, H, W, generator=_gen(0), dtype=torch.float64)
    y = torch.randn(B, C, H, W, generator=_gen(1), dtype=torch.float64)
    return x0, y


def test_unweighted_fourier_loss_equals_pixel_loss(data) -> None:
    """With W = 1, eps_f = F_R(eps_x) and the same t, L_f = L_x (F_R is orthogonal)."""
    x0, y = data
    sch = make_schedule("linear", 100)
    den = TinyDenoiser()
    eps_x = torch.randn(B, C, H, W, generator=_gen(2), dtype=torch.float64)
    t = torch.tensor([1, 50, 100])
    out = joint_loss(den, x0, y, sch, lam=1.0, t=t, noise_x=eps_x, noise_f=real_fourier2(eps_x))
    torch.testing.assert_close(out.loss_f, out.loss_x, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(out.loss, out.loss_x + out.loss_f)
    assert out.loss.shape == (B,)


def _oracle_with_error(x0: torch.Tensor, sch, error: torch.Tensor):
    """A denoiser that knows x0: it returns the true noise minus a planted pixel error."""

    def den(x: torch.Tensor, y: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        ab = sch.alpha_bars[t].view(-1, 1, 1, 1)
        k = x.shape[0] // x0.shape[0]
        return (x - ab.sqrt() * x0.repeat(k, 1, 1, 1)) / (1 - ab).sqrt() - error.repeat(k, 1, 1, 1)

    return den


def test_radial_weight_penalises_high_frequency_errors_more(data) -> None:
    x0, y = data
    sch = make_schedule("linear", 100)
    xx = torch.arange(W, dtype=torch.float64)
    low = torch.cos(2 * math.pi * 1 * xx / W).expand(B, C, H, W)  # nu = 1/12
    high = torch.cos(2 * math.pi * 5 * xx / W).expand(B, C, H, W)  # nu = 5/12
    weight = radial_weight(H, W, gamma=3.0, power=2.0, dtype=torch.float64)
    kwargs = {"lam": 1.0, "generator": _gen(3)}
    losses = {}
    for name, err in (("low", low), ("high", high)):
        plain = joint_loss(_oracle_with_error(x0, sch, err), x0, y, sch, **kwargs)
        kwargs["generator"] = _gen(3)
        weighted = joint_loss(_oracle_with_error(x0, sch, err), x0, y, sch, weight=weight, **kwargs)
        kwargs["generator"] = _gen(3)
        # the pixel term sees the same error energy; W = 1 gives the same L_f for both
        torch.testing.assert_close(plain.loss_x, err.square().flatten(1).mean(1))
        torch.testing.assert_close(plain.loss_f, plain.loss_x)
        losses[name] = weighted.loss_f
    assert bool((losses["high"] > 2.0 * losses["low"]).all())
    w_low = 1 + 3.0 * (1 / 12 / math.sqrt(0.5)) ** 2
    torch.testing.assert_close(losses["low"], w_low**2 * low.square().flatten(1).mean(1))


def test_radial_weight_layout_and_errors() -> None:
    w = radial_weight(8, 6, gamma=2.0, power=1.5)
    assert w.shape == (8, 6) and w.dtype == torch.float32
    assert w[0, 0] == 1.0 and w.max().item() == pytest.approx(3.0)
    assert w[7, 5].item() == pytest.approx(3.0)  # both Nyquist: nu = nu_max
    assert torch.equal(radial_weight(1, 1, 2.0, 2.0), torch.ones(1, 1))
    # core says what it expected; the config (diffusion.gamma, diffusion.power) names the key
    with pytest.raises(ValueError, match="expected gamma >= 0") as info:
        radial_weight(4, 4, gamma=-1.0, power=2.0)
    assert not isinstance(info.value, UserError)
    with pytest.raises(ValueError, match="expected power > 0"):
        radial_weight(4, 4, gamma=1.0, power=0.0)


def test_one_batched_call_and_lam_zero_skips_fourier_branch(data) -> None:
    x0, y = data
    sch = make_schedule("cosine", 50)
    den = TinyDenoiser()
    out = joint_loss(den, x0, y, sch, lam=0.5, generator=_gen(4))
    assert den.calls == [2 * B]
    torch.testing.assert_close(out.loss, out.loss_x + 0.5 * out.loss_f)
    den.calls.clear()
    out0 = joint_loss(den, x0, y, sch, lam=0.0, generator=_gen(4))
    assert den.calls == [B]
    assert torch.equal(out0.loss_f, torch.zeros(B, dtype=torch.float64))
    # same generator stream: t and eps_x are drawn first, so L_x is the same with or without L_f
    torch.testing.assert_close(out0.loss_x, out.loss_x)
    with pytest.raises(ValueError, match="expected lam >= 0") as info:
        joint_loss(den, x0, y, sch, lam=-1.0)
    assert not isinstance(info.value, UserError)


def test_gradients_are_finite(data) -> None:
    x0, y = data
    sch = make_schedule("linear", 100)
    den = TinyDenoiser()
    weight = radial_weight(H, W, 1.0, 2.0, dtype=torch.float64)
    mask = torch.ones(B, 1, H, W, dtype=torch.float64)
    mask[:, :, :4] = 0
    out = joint_loss(den, x0, y, sch, lam=1.0, weight=weight, mask=mask, generator=_gen(5))
    out.loss.mean().backward()
    grads = [p.grad for p in den.parameters()]
    assert all(g is not None and bool(torch.isfinite(g).all()) for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0


def test_mask_excludes_missing_pixels(data) -> None:
    x0, y = data
    sch = make_schedule("linear", 100)
    den = TinyDenoiser(kernel=1)  # pointwise: masked inputs cannot leak into valid outputs
    mask = (torch.rand(B, 1, H, W, generator=_gen(6)) > 0.3).double()
    changed = torch.where(mask.bool(), x0, 100.0 * torch.randn_like(x0))
    t = torch.tensor([3, 40, 90])
    eps_x = torch.randn(B, C, H, W, generator=_gen(7), dtype=torch.float64)
    eps_f = torch.randn(B, C, H, W, generator=_gen(8), dtype=torch.float64)
    kw = {"lam": 1.0, "mask": mask, "t": t, "noise_x": eps_x, "noise_f": eps_f}
    a = joint_loss(den, x0, y, sch, **kw)
    b = joint_loss(den, changed, y, sch, **kw)
    torch.testing.assert_close(a.loss_x, b.loss_x)
    torch.testing.assert_close(a.loss_f, b.loss_f)
    # with W = 1, L_f is the masked pixel loss of the f branch, normalised by the valid count
    ab = sch.alpha_bars[t].view(-1, 1, 1, 1)
    pix = inverse_real_fourier2(eps_f)
    pred = den(ab.sqrt() * x0 + (1 - ab).sqrt() * pix, y, t)
    valid = mask.expand_as(x0)
    expected = ((pix - pred) ** 2 * valid).flatten(1).sum(1) / valid.flatten(1).sum(1)
    torch.testing.assert_close(a.loss_f, expected)


def test_drawn_t_in_range_and_reproducible(data) -> None:
    x0, y = data
    sch = make_schedule("linear", 5)
    seen: list[torch.Tensor] = []

    def den(x: torch.Tensor, y: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        seen.append(t)
        return torch.zeros_like(x)

    a = joint_loss(den, x0, y, sch, lam=1.0, generator=_gen(9))
    b = joint_loss(den, x0, y, sch, lam=1.0, generator=_gen(9))
    assert torch.equal(a.loss, b.loss)
    t = seen[0]
    assert torch.equal(t[:B], t[B:])  # one t per sample, shared by both branches
    assert t.dtype == torch.long and int(t.min()) >= 1 and int(t.max()) <= 5


def test_masked_mean() -> None:
    values = torch.arange(24, dtype=torch.float64).view(2, 3, 4)
    torch.testing.assert_close(masked_mean(values, None), values.flatten(1).mean(1))
    mask = torch.zeros(2, 1, 4, dtype=torch.float64)
    mask[0, :, :2] = 1  # sample 0: columns 0, 1 valid; sample 1: nothing valid -> 0
    expected = torch.tensor([float(values[0, :, :2].mean()), 0.0], dtype=torch.float64)
    torch.testing.assert_close(masked_mean(values, mask), expected)
    # apply_mask=False: the values already carry the mask; their sum over the valid count
    torch.testing.assert_close(masked_mean(values, mask, apply_mask=False)[0],
                               values[0].sum() / 6)


def test_per_row_generators_draw_t_and_noise_per_sample(data) -> None:
    # with one generator per sample, a sample's loss does not depend on the batch it is in
    x0, y = data
    sch = make_schedule("linear", 50)
    den = TinyDenoiser(kernel=1)
    whole = joint_loss(den, x0, y, sch, lam=1.0, generator=[_gen(20), _gen(21), _gen(22)])
    alone = joint_loss(den, x0[1:2], y[1:2], sch, lam=1.0, generator=[_gen(21)])
    torch.testing.assert_close(whole.loss[1:2], alone.loss)


# ---------------------------------------------------------------- spectral options (issue 15)


def _reference_joint_loss(denoiser, x0, y, schedule, *, lam, weight=None, mask=None,
                          generator=None):
    """The joint loss as it was before the spectral options (commit d4132d0), verbatim."""
    from weather_sr.core.loss import masked_mean as mm
    from weather_sr.core.process import q_sample, randint_batch, randn_like_batch

    b = x0.shape[0]
    t = randint_batch(1, schedule.T + 1, b, generator, x0.device).to(x0.device, torch.long)
    noise_x = randn_like_batch(x0.shape, generator, x0.device, x0.dtype)
    x_t = q_sample(schedule, x0, t, noise_x)
    if lam == 0:
        eps = denoiser(x_t, y, t)
        loss_x = mm((noise_x - eps).square(), mask)
        return loss_x, loss_x, torch.zeros_like(loss_x)
    noise_f = randn_like_batch(x0.shape, generator, x0.device, x0.dtype)
    noise_f_pix = inverse_real_fourier2(noise_f)
    x_t_f = q_sample(schedule, x0, t, noise_f_pix)
    eps = denoiser(torch.cat([x_t, x_t_f]), torch.cat([y, y]), torch.cat([t, t]))
    eps_x, eps_f = eps[:b], eps[b:]
    loss_x = mm((noise_x - eps_x).square(), mask)
    err_pix = noise_f_pix - eps_f
    if mask is not None:
        err_pix = err_pix * mask
    err = real_fourier2(err_pix)
    if weight is not None:
        err = err * weight.to(device=err.device, dtype=err.dtype)
    loss_f = mm(err.square(), mask, apply_mask=False)
    return loss_x + lam * loss_f, loss_x, loss_f


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("lam, weighted, masked", [(0.0, False, False), (0.0, False, True),
                                                   (1.0, False, False), (0.5, True, True),
                                                   (1.0, True, False)])
def test_defaults_are_bit_identical_to_the_previous_loss(data, dtype, lam, weighted, masked):
    """With the options off (gate none, amp_mu 0, no divide) the loss is today's, bit for bit;
    gate_t alone changes nothing."""
    x0, y = (v.to(dtype) for v in data)
    sch = make_schedule("linear", 100)
    den = TinyDenoiser()
    den.conv.to(dtype)
    weight = radial_weight(H, W, 1.0, 2.0, dtype=dtype) if weighted else None
    mask = (torch.rand(B, 1, H, W, generator=_gen(30)) > 0.2).to(dtype) if masked else None
    ref = _reference_joint_loss(den, x0, y, sch, lam=lam, weight=weight, mask=mask,
                                generator=_gen(31))
    for extra in ({}, {"gate_t": 0.3, "divide": False, "amp_mu": 0.0, "gate": "none"}):
        new = joint_loss(den, x0, y, sch, lam=lam, weight=weight, mask=mask, generator=_gen(31),
                         **extra)
        for a, b in zip(new[:3], ref, strict=True):
            assert torch.equal(a, b)
        assert torch.equal(new.loss_amp, torch.zeros_like(new.loss))


def test_normalised_weights_have_unit_mean_square() -> None:
    for w in (radial_weight(16, 12, 2.0, 2.0, normalise=True),
              radial_weight(9, 20, 0.5, 1.0, normalise=True, dtype=torch.float64),
              band_weight(16, 24, 1.0, 4, normalise=True)):
        assert w.double().square().mean().item() == pytest.approx(1.0, rel=1e-6)
    plain = radial_weight(16, 12, 2.0, 2.0, dtype=torch.float64)
    torch.testing.assert_close(normalise_weight(plain), plain / plain.square().mean().sqrt())
    # gamma = 0: W = 1 already, normalising keeps it
    assert torch.equal(radial_weight(8, 8, 0.0, 2.0, normalise=True), torch.ones(8, 8))
    with pytest.raises(ValueError, match="zero everywhere"):
        normalise_weight(torch.zeros(3, 3))


def test_normalised_weight_keeps_the_white_noise_loss(data) -> None:
    """E ||W F_R e||^2 = mean(W^2) E ||e||^2 for white e: with mean W^2 = 1, L_f of a white
    error has the mean of the unweighted one (lam and clipping stay comparable)."""
    x0, y = data
    big_b = 64
    x0 = x0[:1].expand(big_b, C, H, W)
    y = y[:1].expand(big_b, C, H, W)
    sch = make_schedule("linear", 100)
    err = torch.randn(big_b, C, H, W, generator=_gen(32), dtype=torch.float64)
    den = _oracle_with_error(x0, sch, err)
    w = radial_weight(H, W, 3.0, 2.0, normalise=True, dtype=torch.float64)
    out = joint_loss(den, x0, y, sch, lam=1.0, weight=w, generator=_gen(33))
    expected = (real_fourier2(err) * w).square().flatten(1).mean(1)
    torch.testing.assert_close(out.loss_f, expected)
    assert out.loss_f.mean().item() == pytest.approx(err.square().mean().item(), rel=0.05)


def test_loss_divide(data) -> None:
    x0, y = data
    sch = make_schedule("linear", 100)
    den = TinyDenoiser()
    w = radial_weight(H, W, 1.0, 2.0, dtype=torch.float64)
    a = joint_loss(den, x0, y, sch, lam=3.0, weight=w, generator=_gen(34))
    b = joint_loss(den, x0, y, sch, lam=3.0, weight=w, generator=_gen(34), divide=True)
    torch.testing.assert_close(b.loss, (a.loss_x + 3.0 * a.loss_f) / 4.0)
    assert torch.equal(a.loss_f, b.loss_f) and torch.equal(a.loss_x, b.loss_x)
    c = joint_loss(den, x0, y, sch, lam=0.0, generator=_gen(34), divide=True)
    assert torch.equal(c.loss, c.loss_x)  # / (1 + 0)


def test_band_weight_is_one_up_to_the_lr_nyquist_frequency() -> None:
    h, w, s, gamma = 32, 48, 4, 2.0
    weight = band_weight(h, w, gamma, s, dtype=torch.float64)
    nu = radial_frequency(h, w)
    assert lr_nyquist(s) == 0.125
    # brute force over the coefficients: wavenumbers of the F_R layout, nu vs 0.5 / s
    for i in range(h):
        for j in range(w):
            ky, kx = (i + 1) // 2, (j + 1) // 2
            nu_ij = math.hypot(ky / h, kx / w)
            assert nu[i, j].item() == pytest.approx(nu_ij)
            expected = 1.0 + gamma if nu_ij > 0.5 / s + 1e-12 else 1.0
            assert weight[i, j].item() == expected
    assert weight[0, 0] == 1.0 and weight.max() == 1.0 + gamma
    assert torch.equal(band_weight(8, 8, 0.0, 2), torch.ones(8, 8))
    with pytest.raises(ValueError, match="expected gamma >= 0"):
        band_weight(8, 8, -1.0, 2)
    with pytest.raises(ValueError, match="scale_factor >= 1"):
        lr_nyquist(0)


def test_band_weight_penalises_only_unresolved_scales(data) -> None:
    x0, y = data
    sch = make_schedule("linear", 100)
    xx = torch.arange(W, dtype=torch.float64)
    w = band_weight(H, W, 3.0, 4, dtype=torch.float64)  # LR Nyquist: 0.125 cycles/spacing
    out = {}
    for name, k in (("resolved", 1), ("unresolved", 3)):  # nu = 1/12 and 3/12
        err = torch.cos(2 * math.pi * k * xx / W).expand(B, C, H, W)
        out[name] = joint_loss(_oracle_with_error(x0, sch, err), x0, y, sch, lam=1.0, weight=w,
                               generator=_gen(35))
    torch.testing.assert_close(out["resolved"].loss_f, out["resolved"].loss_x)
    torch.testing.assert_close(out["unresolved"].loss_f, 16.0 * out["unresolved"].loss_x)


def test_gate_factor_values() -> None:
    sch = make_schedule("linear", 100)
    t = torch.tensor([1, 30, 50, 51, 100])
    assert torch.equal(gate_factor(sch, t, "none"), torch.ones(5, dtype=torch.float64))
    assert gate_factor(sch, t, "time", 0.5).tolist() == [1.0, 1.0, 1.0, 0.0, 0.0]
    assert gate_factor(sch, t, "time", 1.0).tolist() == [1.0] * 5
    snr = sch.alpha_bars[t] / (1 - sch.alpha_bars[t])
    torch.testing.assert_close(gate_factor(sch, t, "snr"), snr / (1 + snr))
    with pytest.raises(ValueError, match="gate_t"):
        gate_factor(sch, t, "time", 0.0)
    with pytest.raises(ValueError, match="expected a gate"):
        gate_factor(sch, t, "sometimes")


@pytest.mark.parametrize("gate", ["time", "snr"])
def test_gate_blends_the_weight_per_sample(data, gate) -> None:
    """Each sample's L_f is that of W_t = 1 + g(t) (W - 1): W at low noise, 1 where g = 0."""
    x0, y = data
    sch = make_schedule("linear", 100)
    den = TinyDenoiser()
    w = radial_weight(H, W, 2.0, 2.0, dtype=torch.float64)
    t = torch.tensor([5, 40, 95])
    eps_x = torch.randn(B, C, H, W, generator=_gen(36), dtype=torch.float64)
    eps_f = torch.randn(B, C, H, W, generator=_gen(37), dtype=torch.float64)
    kw = {"lam": 1.0, "t": t, "noise_x": eps_x, "noise_f": eps_f}
    gated = joint_loss(den, x0, y, sch, weight=w, gate=gate, gate_t=0.5, **kw)
    g = gate_factor(sch, t, gate, 0.5)
    for b in range(B):
        wb = 1.0 + g[b] * (w - 1.0)
        one = joint_loss(den, x0, y, sch, weight=wb, **kw)
        torch.testing.assert_close(gated.loss_f[b], one.loss_f[b])
    if gate == "time":  # t = 95 > 50: W = 1 there
        plain = joint_loss(den, x0, y, sch, **kw)
        torch.testing.assert_close(gated.loss_f[2], plain.loss_f[2])
        full = joint_loss(den, x0, y, sch, weight=w, **kw)
        torch.testing.assert_close(gated.loss_f[:2], full.loss_f[:2])


def test_radial_power_matches_the_evaluation_psd() -> None:
    from weather_sr.evaluation.spectra import radial_psd

    x = torch.randn(2, 3, 16, 24, generator=_gen(38), dtype=torch.float64)
    index, k = radial_bins(16, 24)
    assert k == 8
    power = radial_power(x, index, k)
    assert power.shape == (2, 3, 8)
    ref = radial_psd(x.numpy(), mean=False)
    np.testing.assert_allclose(power.numpy(), ref.power[..., 1:], rtol=1e-10)


def test_amplitude_loss_sees_amplitude_not_phase() -> None:
    x0 = torch.randn(2, 1, 16, 16, generator=_gen(39), dtype=torch.float64)
    assert torch.equal(amplitude_loss(x0, x0), torch.zeros(2, dtype=torch.float64))
    shifted = torch.roll(x0, shifts=(3, 5), dims=(-2, -1))  # same power spectrum, other phases
    torch.testing.assert_close(amplitude_loss(shifted, x0), torch.zeros(2, dtype=torch.float64),
                               atol=1e-20, rtol=0)
    # doubling the field multiplies every power by 4: (log 4)^2 (the floor is 1e-6 of the mean)
    torch.testing.assert_close(amplitude_loss(2 * x0, x0),
                               torch.full((2,), math.log(4.0) ** 2, dtype=torch.float64),
                               rtol=1e-4, atol=0)
    # a blurred estimate (high bins emptied) is penalised, and more than a mild one
    index, k = radial_bins(16, 16)
    c = real_fourier2(x0)
    high = (index >= k // 2).double()
    blur = inverse_real_fourier2(c * (1 - high))
    mild = inverse_real_fourier2(c * (1 - 0.5 * high))
    assert bool((amplitude_loss(blur, x0) > amplitude_loss(mild, x0)).all())
    # masked pixels do not count
    mask = torch.ones(2, 1, 16, 16, dtype=torch.float64)
    mask[..., :4, :] = 0
    other = torch.where(mask.bool(), x0, torch.randn_like(x0))
    torch.testing.assert_close(amplitude_loss(other, x0, mask), torch.zeros(2,
                               dtype=torch.float64), atol=1e-20, rtol=0)


def test_amplitude_term_on_the_fourier_branch(data) -> None:
    """loss = L_x + lam L_f + mu g(t) L_amp(x0_hat of the f branch, x0); one call on 2B."""
    from weather_sr.core.process import eps_to_x0, q_sample

    x0, y = data
    sch = make_schedule("linear", 100)
    den = TinyDenoiser()
    t = torch.tensor([2, 50, 99])
    eps_x = torch.randn(B, C, H, W, generator=_gen(40), dtype=torch.float64)
    eps_f = torch.randn(B, C, H, W, generator=_gen(41), dtype=torch.float64)
    kw = {"lam": 1.0, "t": t, "noise_x": eps_x, "noise_f": eps_f}
    plain = joint_loss(den, x0, y, sch, **kw)
    den.calls.clear()
    out = joint_loss(den, x0, y, sch, amp_mu=0.3, gate="snr", **kw)
    assert den.calls == [2 * B]
    x_t_f = q_sample(sch, x0, t, inverse_real_fourier2(eps_f))
    x0_hat = eps_to_x0(sch, x_t_f, t, den(x_t_f, y, t))
    expected = amplitude_loss(x0_hat, x0) * sch.alpha_bars[t]
    torch.testing.assert_close(out.loss_amp, expected)
    torch.testing.assert_close(out.loss, plain.loss + 0.3 * expected)
    assert torch.equal(out.loss_f, plain.loss_f)
    ungated = joint_loss(den, x0, y, sch, amp_mu=0.3, **kw)
    torch.testing.assert_close(ungated.loss_amp, amplitude_loss(x0_hat, x0))
    # the gradient reaches the network through the amplitude term
    den.zero_grad()
    (out.loss - plain.loss.detach()).sum().backward()
    assert sum(float(p.grad.abs().sum()) for p in den.parameters()) > 0
    with pytest.raises(ValueError, match="needs lam > 0"):
        joint_loss(den, x0, y, sch, lam=0.0, amp_mu=0.1)
    with pytest.raises(ValueError, match="amp_mu >= 0"):
        joint_loss(den, x0, y, sch, lam=1.0, amp_mu=-0.1)
    with pytest.raises(ValueError, match="expected a gate"):
        joint_loss(den, x0, y, sch, lam=1.0, gate="always")


def test_config_keys_and_the_trainer_weight() -> None:
    """diffusion.weight / weight_normalise / gate / gate_t / amp_mu / loss_divide: validated by
    the config, turned into W by Trainer._weight (band: the data's scale factor)."""
    from types import SimpleNamespace

    from weather_sr.config import config_from_dict
    from weather_sr.training.trainer import Trainer

    def cfg(**diffusion):  # lam = 1 unless given: the Fourier branch the options act on
        return config_from_dict({"data": {"variables": ["x"], "scale_factor": 4},
                                 "diffusion": {"lam": 1.0, **diffusion}})

    defaults = cfg().diffusion
    assert (defaults.weight, defaults.weight_normalise, defaults.gate, defaults.amp_mu,
            defaults.loss_divide) == ("none", False, "none", 0.0, False)
    for bad, match in (({"gate_t": 0.0}, "gate_t"), ({"amp_mu": -1.0}, "amp_mu"),
                       ({"lam": 0.0, "amp_mu": 0.5}, "needs diffusion.lam > 0"),
                       ({"gate": "time"}, "diffusion.gate = time"),
                       ({"lam": 0.0, "weight": "radial", "gate": "snr"}, "diffusion.gate"),
                       ({"weight": "bands"}, "did you mean 'band'")):
        with pytest.raises(UserError, match=match):
            cfg(**bad)
    cfg(weight="band", gate="time", gate_t=0.25, amp_mu=0.1, loss_divide=True)

    def weight(**diffusion):
        fake = SimpleNamespace(cfg=cfg(**diffusion), bundle=SimpleNamespace(scale_factor=4),
                               info=SimpleNamespace(device=torch.device("cpu")), _weights={})
        return Trainer._weight(fake, 16, 24)  # type: ignore[arg-type]

    assert weight() is None
    assert torch.equal(weight(weight="radial", gamma=2.0, power=1.0),
                       radial_weight(16, 24, 2.0, 1.0))
    assert torch.equal(weight(weight="band", gamma=2.0, weight_normalise=True),
                       band_weight(16, 24, 2.0, 4, normalise=True))
