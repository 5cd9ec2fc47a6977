"""The joint loss: the orthogonality identity, radial weighting, batching, masks, gradients."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from weather_sr.core.fourier import inverse_real_fourier2, real_fourier2
from weather_sr.core.loss import joint_loss, masked_mean, radial_weight
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
