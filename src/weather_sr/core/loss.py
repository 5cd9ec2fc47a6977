"""The joint pixel + real-Fourier diffusion loss (docs/method.md §4, the derivation's Algorithm 3).

For a pair (x_0, y), one t ~ U{1..T} per sample and two independent noises eps_x, eps_f:

    x_t^x = sqrt(ab_t) x_0 + sqrt(1 - ab_t) eps_x
    x_t^f = sqrt(ab_t) x_0 + sqrt(1 - ab_t) F_R^{-1}(eps_f)          (2-D F_R on H, W)
    L_x   = mean (eps_x - eps_theta(x_t^x, y, t))^2
    L_f   = mean (W * (eps_f - F_R(eps_theta(x_t^f, y, t))))^2
    L     = L_x + lam L_f

Because F_R is orthogonal, with W = 1 L_f is the ordinary noise-prediction loss on a second
noise draw (tests/test_loss.py checks the identity); a spectral effect needs W != 1
(:func:`radial_weight`).
Both branches go through the denoiser in one batched call of 2B samples.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from weather_sr.core.fourier import inverse_real_fourier2, radial_frequency, real_fourier2
from weather_sr.core.process import (
    Denoiser,
    Generators,
    q_sample,
    randint_batch,
    randn_like_batch,
)
from weather_sr.core.schedule import NoiseSchedule

__all__ = ["JointLoss", "joint_loss", "masked_mean", "radial_weight"]


class JointLoss(NamedTuple):
    """Per-sample losses, each ``[B]``: ``loss = loss_x + lam * loss_f``.

    ``loss_f`` is zeros when lam == 0 (the Fourier branch is then skipped, not evaluated).
    """

    loss: Tensor
    loss_x: Tensor
    loss_f: Tensor


def radial_weight(
    h: int,
    w: int,
    gamma: float,
    power: float,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> Tensor:
    """W(nu) = 1 + gamma (nu / nu_max)^power in the 2-D F_R coefficient layout.

    nu is :func:`weather_sr.core.fourier.radial_frequency` (cycles per grid spacing) and nu_max its
    largest value on this grid, so W runs from 1 (DC) to 1 + gamma. W multiplies the error
    before squaring: the squared error of a coefficient is weighted by W^2.

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
    return (1.0 + gamma * ratio**power).to(dtype=dtype, device=device)


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
    schedule: NoiseSchedule,
    *,
    lam: float,
    weight: Tensor | None = None,
    mask: Tensor | None = None,
    generator: Generators = None,
    t: Tensor | None = None,
    noise_x: Tensor | None = None,
    noise_f: Tensor | None = None,
) -> JointLoss:
    """The joint loss of docs/method.md §4 (the founding derivation's Algorithm 3), per sample.

    Args:
        denoiser: ``(x_t [N, C, H, W], y [N, Cy, H, W], t int64 [N]) -> eps [N, C, H, W]``.
        x0: targets ``[B, C, H, W]``; y: conditions ``[B, Cy, H, W]``.
        lam: weight of the Fourier term (>= 0); 0 skips the Fourier branch entirely.
        weight: W ``[H, W]`` (or broadcastable to x0) on F_R coefficients; None means W = 1.
        mask: ``{0, 1}`` broadcastable to x0, 1 = valid. L_x is the mean over valid elements;
            for L_f the mask multiplies the pixel-space error before F_R, so that with W = 1,
            L_f is the masked pixel loss. Both are normalised by the valid count per sample.
        generator: for t and the noises (drawn on its device, moved to x0's device).
        t: int64 ``[B]`` in 1..T (drawn uniformly when None).
        noise_x, noise_f: eps_x and eps_f ``[B, C, H, W]`` (drawn when None; for tests).
    Returns:
        :class:`JointLoss` of ``[B]`` tensors.
    """
    if lam < 0:
        raise ValueError(f"joint_loss: expected lam >= 0, got {lam}")
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
        return JointLoss(loss_x, loss_x, torch.zeros_like(loss_x))
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
    if weight is not None:
        err = err * weight.to(device=err.device, dtype=err.dtype)
    loss_f = masked_mean(err.square(), mask, apply_mask=False)
    return JointLoss(loss_x + lam * loss_f, loss_x, loss_f)
