"""The joint pixel + real-Fourier diffusion loss (docs/method.md §4, the derivation's Algorithm 3).

For a pair (x_0, y), one t ~ U{1..T} per sample and two independent noises eps_x, eps_f:

    x_t^x = sqrt(ab_t) x_0 + sqrt(1 - ab_t) eps_x
    x_t^f = sqrt(ab_t) x_0 + sqrt(1 - ab_t) F_R^{-1}(eps_f)          (2-D F_R on H, W)
    L_x   = mean (eps_x - eps_theta(x_t^x, y, t))^2
    L_f   = mean (W * (eps_f - F_R(eps_theta(x_t^f, y, t))))^2
    L     = L_x + lam L_f

Because F_R is orthogonal, with W = 1 L_f is the ordinary noise-prediction loss on a second
noise draw (tests/test_loss.py checks the identity); a spectral effect needs W != 1
(:func:`radial_weight`, :func:`band_weight`) or a term that is not a weighted squared error.
Both branches go through the denoiser in one batched call of 2B samples.

Options of the Fourier branch (docs/method.md §4, "Spectral options"), all off by default, and
then the loss is bit for bit the plain one above:

- ``weight`` W: radial (:func:`radial_weight`) or band (:func:`band_weight`), optionally
  normalised so that mean(W^2) over the coefficients is 1 (:func:`normalise_weight`);
- ``gate``: a per-sample factor g(t) in [0, 1] (:func:`gate_factor`) that blends W towards 1,
  W_t = 1 + g(t) (W - 1), and scales the amplitude term;
- ``amp_mu``: mu * g(t) * L_amp, the binned radial log-power difference between the Fourier
  branch's x0 estimate and x0 (:func:`amplitude_loss`);
- ``divide``: the total divided by (1 + lam), so that lam does not scale the gradient.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import torch
from torch import Tensor

from weather_sr.core.fourier import inverse_real_fourier2, radial_frequency, real_fourier2
from weather_sr.core.process import (
    Denoiser,
    Generators,
    eps_to_x0,
    q_sample,
    randint_batch,
    randn_like_batch,
)
from weather_sr.core.schedule import NoiseSchedule
from weather_sr.core.spectral import CoefficientSchedule

__all__ = [
    "GATES",
    "JointLoss",
    "amplitude_loss",
    "band_weight",
    "gate_factor",
    "joint_loss",
    "lr_nyquist",
    "masked_mean",
    "normalise_weight",
    "radial_bins",
    "radial_power",
    "radial_weight",
]

Gate = Literal["none", "time", "snr"]
GATES: tuple[str, ...] = ("none", "time", "snr")
# The amplitude term's log floor, relative to the truth's mean binned power (per sample, channel).
AMP_FLOOR = 1e-6


class JointLoss(NamedTuple):
    """Per-sample losses, each ``[B]``:
    ``loss = (loss_x + lam * loss_f + amp_mu * loss_amp) / (1 + lam if divide else 1)``.

    ``loss_f`` is zeros when lam == 0 (the Fourier branch is then skipped, not evaluated);
    ``loss_amp`` (already multiplied by the gate g(t)) is zeros when amp_mu == 0.
    """

    loss: Tensor
    loss_x: Tensor
    loss_f: Tensor
    loss_amp: Tensor


def radial_weight(
    h: int,
    w: int,
    gamma: float,
    power: float,
    *,
    normalise: bool = False,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> Tensor:
    """W(nu) = 1 + gamma (nu / nu_max)^power in the 2-D F_R coefficient layout.

    nu is :func:`weather_sr.core.fourier.radial_frequency` (cycles per grid spacing) and nu_max its
    largest value on this grid, so W runs from 1 (DC) to 1 + gamma. W multiplies the error
    before squaring: the squared error of a coefficient is weighted by W^2. ``normalise``:
    divided by sqrt(mean W^2) (:func:`normalise_weight`).

    Returns:
        ``[h, w]`` in ``dtype`` on ``device``.
    """
    if gamma < 0:
        raise ValueError(f"radial_weight: expected gamma >= 0, got {gamma}")
    if power <= 0:
        raise ValueError(f"radial_weight: expected power > 0, got {power}")
    nu = radial_frequency(h, w)
    nu_max = float(nu.max())
    ratio = nu / nu_max if nu_max > 0 else torch.zeros_like(nu)
    weight = 1.0 + gamma * ratio**power
    if normalise:
        weight = normalise_weight(weight)
    return weight.to(dtype=dtype, device=device)


def lr_nyquist(scale_factor: int) -> float:
    """Nyquist frequency of the LR grid in cycles per HR grid spacing: 0.5 / scale_factor."""
    if scale_factor < 1:
        raise ValueError(f"lr_nyquist: expected scale_factor >= 1, got {scale_factor}")
    return 0.5 / scale_factor


def band_weight(
    h: int,
    w: int,
    gamma: float,
    scale_factor: int,
    *,
    normalise: bool = False,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> Tensor:
    """W = 1 where nu <= the LR Nyquist frequency, 1 + gamma above it, in the F_R layout.

    nu is :func:`weather_sr.core.fourier.radial_frequency` of the HR grid (patch) ``[h, w]`` in
    cycles per HR grid spacing; the LR grid's Nyquist frequency is the HR one (0.5) divided by
    ``scale_factor`` (:func:`lr_nyquist`): the coefficients with W = 1 + gamma are the scales the
    LR field does not resolve (radially; the corners beyond 0.5 count as above). ``normalise``:
    divided by sqrt(mean W^2) (:func:`normalise_weight`).

    Returns:
        ``[h, w]`` in ``dtype`` on ``device``.
    """
    if gamma < 0:
        raise ValueError(f"band_weight: expected gamma >= 0, got {gamma}")
    cut = lr_nyquist(scale_factor)
    nu = radial_frequency(h, w)
    weight = torch.where(nu > cut + 1e-12, 1.0 + gamma, 1.0).to(torch.float64)
    if normalise:
        weight = normalise_weight(weight)
    return weight.to(dtype=dtype, device=device)


def normalise_weight(weight: Tensor) -> Tensor:
    """``weight`` ``[h, w]`` divided by sqrt(mean weight^2): the weighted squared error of white
    noise has the same mean as the unweighted one, so lam and gradient clipping keep their
    meaning. Same shape and dtype."""
    rms = weight.double().square().mean().sqrt()
    if not bool(rms > 0):
        raise ValueError("normalise_weight: the weight is zero everywhere")
    return weight / rms.to(weight.dtype)


def gate_factor(schedule: NoiseSchedule, t: Tensor, gate: str, gate_t: float = 0.5) -> Tensor:
    """Per-sample noise-level gate g(t) in [0, 1], float64 ``[B]`` (float32 on MPS) on t's
    device for int64 ``t`` ``[B]``.

    ``none``: 1. ``time``: 1 where t <= gate_t * T, else 0 (the weight acts only at low noise
    levels). ``snr``: SNR_t / (1 + SNR_t) = alpha_bar_t with SNR_t = alpha_bar_t / (1 -
    alpha_bar_t): about 1 at low noise, about 0 at t = T.
    """
    if gate not in GATES:
        raise ValueError(f"gate_factor: expected a gate in {GATES}, got {gate!r}")
    steps = t.detach().cpu().long()
    if gate == "none":
        g = torch.ones(steps.shape, dtype=torch.float64)
    elif gate == "time":
        if not 0 < gate_t <= 1:
            raise ValueError(f"gate_factor: expected 0 < gate_t <= 1, got {gate_t}")
        g = (steps.double() <= gate_t * schedule.T).double()
    else:  # snr / (1 + snr) = alpha_bar_t
        g = schedule.alpha_bars[steps]
    # MPS has no float64: float32 there (the loss casts g to its own dtype anyway)
    return g.to(device=t.device, dtype=torch.float32 if t.device.type == "mps" else g.dtype)


def radial_bins(h: int, w: int, device: torch.device | str | None = None) -> tuple[Tensor, int]:
    """Radial bin of each 2-D F_R coefficient, as :mod:`weather_sr.evaluation.spectra` bins:
    k = round(nu * min(h, w)); bins 1..min(h, w)//2 are kept (DC and the corners beyond
    nu = 0.5 get -1).

    Returns:
        ``(index int64 [h, w] with values -1 or 0..K-1 for bins 1..K, K)``.
    """
    n = min(h, w)
    k = torch.round(radial_frequency(h, w) * n).long()
    top = n // 2
    index = torch.where((k >= 1) & (k <= top), k - 1, torch.full_like(k, -1))
    return index.to(device), top


def radial_power(x: Tensor, index: Tensor, n_bins: int) -> Tensor:
    """Mean squared F_R coefficient per radial bin: ``x`` ``[B, C, H, W]`` -> ``[B, C, K]``.

    ``index`` ``[H, W]`` and ``n_bins`` from :func:`radial_bins` (coefficients with -1 are left
    out). It equals the radial PSD of ``evaluation.spectra.radial_psd`` on bins 1..K.
    """
    power = real_fourier2(x).square().flatten(-2)  # [B, C, H*W]
    flat = index.flatten()
    keep = flat >= 0
    sums = power.new_zeros(*power.shape[:-1], n_bins)
    sums.index_add_(-1, flat[keep], power[..., keep])
    counts = torch.bincount(flat[keep], minlength=n_bins).to(power.dtype)
    return sums / counts


def amplitude_loss(x0_hat: Tensor, x0: Tensor, mask: Tensor | None = None) -> Tensor:
    """Binned radial log-power difference, per sample: ``[B, C, H, W]`` x 2 -> ``[B]``.

    L_amp = mean over channels c and bins k = 1..K of
    (log(P_k(x0_hat) + d) - log(P_k(x0) + d))^2, with P_k of :func:`radial_power` (float32 at
    least), the floor d = 1e-6 times the truth's mean binned power of that sample and channel.
    With a mask both fields are multiplied by it first (missing pixels are 0 in both). The
    amplitude only: phases are free (the squared-error terms constrain them).
    """
    if mask is not None:
        x0_hat, x0 = x0_hat * mask, x0 * mask
    dtype = torch.promote_types(x0.dtype, torch.float32)
    index, n_bins = radial_bins(*x0.shape[-2:], device=x0.device)
    p_hat = radial_power(x0_hat.to(dtype), index, n_bins)
    p_true = radial_power(x0.to(dtype), index, n_bins).detach()
    floor = AMP_FLOOR * p_true.mean(-1, keepdim=True).clamp(min=torch.finfo(dtype).tiny)
    diff = torch.log(p_hat + floor) - torch.log(p_true + floor)
    return diff.square().flatten(1).mean(1)


def masked_mean(values: Tensor, mask: Tensor | None, *, apply_mask: bool = True) -> Tensor:
    """Per-sample mean of ``values`` [B, ...] over the valid elements of ``mask`` -> [B].

    The one masked mean of the package (the joint loss, the regression loss). ``mask`` is
    ``{0, 1}`` broadcastable to ``values``, 1 = valid; None: the plain mean over all elements.
    The sum of ``values * mask`` is divided by the number of valid elements, clamped to 1 (a
    sample without valid elements gets 0). ``apply_mask=False``: ``values`` already carry the
    mask in another form (the squared F_R coefficients of a masked pixel error), so their plain
    sum is divided by the valid count.
    """
    if mask is None:
        return values.flatten(1).mean(1)
    count = mask.expand_as(values).flatten(1).sum(1).clamp(min=1.0)
    total = (values * mask if apply_mask else values).flatten(1).sum(1)
    return total / count


def joint_loss(
    denoiser: Denoiser,
    x0: Tensor,
    y: Tensor,
    schedule: NoiseSchedule | CoefficientSchedule,
    *,
    lam: float,
    weight: Tensor | None = None,
    mask: Tensor | None = None,
    generator: Generators = None,
    t: Tensor | None = None,
    noise_x: Tensor | None = None,
    noise_f: Tensor | None = None,
    gate: Gate = "none",
    gate_t: float = 0.5,
    amp_mu: float = 0.0,
    divide: bool = False,
) -> JointLoss:
    """The joint loss of docs/method.md §4 (the founding derivation's Algorithm 3), per sample.

    Args:
        denoiser: ``(x_t [N, C, H, W], y [N, Cy, H, W], t int64 [N]) -> eps [N, C, H, W]``.
        x0: targets ``[B, C, H, W]``; y: conditions ``[B, Cy, H, W]``.
        schedule: shared, or per F_R coefficient (docs/method.md §9; the gate then reads the
            reference schedule).
        lam: weight of the Fourier term (>= 0); 0 skips the Fourier branch entirely.
        weight: W ``[H, W]`` (or broadcastable to x0) on F_R coefficients; None means W = 1.
        mask: ``{0, 1}`` broadcastable to x0, 1 = valid. L_x is the mean over valid elements;
            for L_f the mask multiplies the pixel-space error before F_R, so that with W = 1,
            L_f is the masked pixel loss. Both are normalised by the valid count per sample.
        generator: for t and the noises (drawn on its device, moved to x0's device).
        t: int64 ``[B]`` in 1..T (drawn uniformly when None).
        noise_x, noise_f: eps_x and eps_f ``[B, C, H, W]`` (drawn when None; for tests).
        gate: ``none`` | ``time`` | ``snr``: the per-sample W is 1 + g(t) (W - 1) with g of
            :func:`gate_factor` (``gate_t``: the fraction of T for ``time``); g also scales the
            amplitude term.
        amp_mu: weight of the amplitude term :func:`amplitude_loss` of the Fourier branch's x0
            estimate (needs lam > 0: it lives on that branch).
        divide: divide the total by (1 + lam).
    Returns:
        :class:`JointLoss` of ``[B]`` tensors.
    """
    if lam < 0:
        raise ValueError(f"joint_loss: expected lam >= 0, got {lam}")
    if amp_mu < 0:
        raise ValueError(f"joint_loss: expected amp_mu >= 0, got {amp_mu}")
    if amp_mu > 0 and lam == 0:
        raise ValueError("joint_loss: amp_mu > 0 needs lam > 0 (the Fourier branch)")
    if gate not in GATES:
        raise ValueError(f"joint_loss: expected a gate in {GATES}, got {gate!r}")
    b = x0.shape[0]
    if t is None:  # t ~ U{1..T}, drawn before the noises
        t = randint_batch(1, schedule.T + 1, b, generator, x0.device)
    t = t.to(device=x0.device, dtype=torch.long)
    if noise_x is None:
        noise_x = randn_like_batch(x0.shape, generator, x0.device, x0.dtype)
    x_t = q_sample(schedule, x0, t, noise_x)
    if lam == 0:
        eps = denoiser(x_t, y, t)
        loss_x = masked_mean((noise_x - eps).square(), mask)
        zeros = torch.zeros_like(loss_x)
        return JointLoss(loss_x, loss_x, zeros, zeros)
    if noise_f is None:
        noise_f = randn_like_batch(x0.shape, generator, x0.device, x0.dtype)
    noise_f_pix = inverse_real_fourier2(noise_f)  # N(0, I) again: F_R is orthogonal
    x_t_f = q_sample(schedule, x0, t, noise_f_pix)
    eps = denoiser(torch.cat([x_t, x_t_f]), torch.cat([y, y]), torch.cat([t, t]))
    eps_x, eps_f = eps[:b], eps[b:]
    loss_x = masked_mean((noise_x - eps_x).square(), mask)
    # eps_f - F_R(eps_theta) = F_R(F_R^{-1} eps_f - eps_theta): mask the pixel error, then F_R.
    err_pix = noise_f_pix - eps_f
    if mask is not None:
        err_pix = err_pix * mask
    err = real_fourier2(err_pix)
    reference = schedule.reference if isinstance(schedule, CoefficientSchedule) else schedule
    g = gate_factor(reference, t, gate, gate_t) if gate != "none" else None
    if weight is not None:
        w = weight.to(device=err.device, dtype=err.dtype)
        if g is not None:  # W_t = 1 + g(t) (W - 1), [B, 1, H, W]
            w = 1.0 + g.to(err.dtype).view(-1, *([1] * (err.ndim - 1))) * (w - 1.0)
        err = err * w
    loss_f = masked_mean(err.square(), mask, apply_mask=False)
    loss = loss_x + lam * loss_f
    loss_amp = torch.zeros_like(loss_x)
    if amp_mu > 0:
        x0_hat = eps_to_x0(schedule, x_t_f, t, eps_f)
        loss_amp = amplitude_loss(x0_hat, x0, mask).to(loss.dtype)
        if g is not None:
            loss_amp = loss_amp * g.to(loss.dtype)
        loss = loss + amp_mu * loss_amp
    if divide:
        loss = loss / (1.0 + lam)
    return JointLoss(loss, loss_x, loss_f, loss_amp)
