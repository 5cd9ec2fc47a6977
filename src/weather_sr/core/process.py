"""The forward process q and its posterior (docs/method.md §3), with the founding derivation's
typos corrected.

    q(x_t | x_0)           = N(sqrt(ab_t) x_0, (1 - ab_t) I)                  (ab = alpha_bar)
    q(x_{t-1} | x_t, x_0)  = N(mu~_t, beta~_t I),
    mu~_t = sqrt(ab_{t-1}) beta_t / (1 - ab_t) x_0 + sqrt(alpha_t) (1 - ab_{t-1}) / (1 - ab_t) x_t

Coefficients are formed in float64 from the schedule and cast to the data's dtype when applied.
``t`` is an int64 tensor ``[B]`` in 1..T (a Python int is broadcast to the batch).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

import torch
from torch import Tensor

from weather_sr.core.schedule import NoiseSchedule, gather
from weather_sr.core.spectral import CoefficientSchedule

__all__ = [
    "Denoiser",
    "Generators",
    "eps_to_x0",
    "posterior_mean_variance",
    "project_x0",
    "q_sample",
    "randint_batch",
    "randn_like_batch",
    "x0_to_eps",
]



class Denoiser(Protocol):
    """``denoiser(x_t [B, C, H, W], y [B, Cy, H, W], t int64 [B]) -> eps [B, C, H, W]``.

    The keyword ``wrap_x`` (default True) is False for an input narrower than a periodic x axis
    (a training patch, an inference tile): a network on a global grid must not pad it
    circularly. Samplers pass whole fields and never set it; the tiler and the trainer do.
    """

    def __call__(self, x_t: Tensor, y: Tensor, t: Tensor, /, *, wrap_x: bool = True
                 ) -> Tensor: ...
# One generator, one per batch row, or None (the global CPU generator).
Generators = torch.Generator | Sequence[torch.Generator] | None


def _draw(
    shape: tuple[int, ...],
    generator: Generators,
    device: torch.device | str,
    draw: Callable[[tuple[int, ...], torch.Generator | None, torch.device], Tensor],
    name: str,
) -> Tensor:
    """The one noise source: ``draw(size, generator, generator_device)`` for the whole batch from
    one generator (None: the global CPU generator), or row b alone from ``generator[b]``; drawn
    on the generator's device, then moved to ``device``."""
    if generator is None or isinstance(generator, torch.Generator):
        gen_device = generator.device if generator is not None else torch.device("cpu")
        return draw(shape, generator, gen_device).to(device)
    gens = list(generator)
    if len(gens) != shape[0]:
        raise ValueError(f"{name}: {len(gens)} generators for a batch of {shape[0]}")
    return torch.stack([draw(shape[1:], g, g.device).to(device) for g in gens])


def randn_like_batch(
    shape: Sequence[int], generator: Generators, device: torch.device | str, dtype: torch.dtype
) -> Tensor:
    """Standard normal ``[*shape]`` drawn on the generator's device, then moved to ``device``.

    With a sequence of ``shape[0]`` generators, row b is ``randn(shape[1:])`` from
    ``generator[b]`` alone (a row's noise does not depend on the batch it is in); with one
    generator (or None: the global CPU generator) it is one ``randn(shape)``.
    """

    def randn(size: tuple[int, ...], g: torch.Generator | None, dev: torch.device) -> Tensor:
        return torch.randn(size, generator=g, device=dev, dtype=dtype)

    return _draw(tuple(int(s) for s in shape), generator, device, randn, "randn_like_batch")


def randint_batch(
    low: int, high: int, n: int, generator: Generators, device: torch.device | str
) -> Tensor:
    """int64 ``[n]`` uniform in ``low..high - 1``, drawn like :func:`randn_like_batch`: one
    ``randint((n,))`` from one generator, or entry b alone from ``generator[b]`` (a list of n)."""

    def randint(size: tuple[int, ...], g: torch.Generator | None, dev: torch.device) -> Tensor:
        return torch.randint(low, high, size, generator=g, device=dev)

    return _draw((int(n),), generator, device, randint, "randint_batch")


def _timesteps(t: Tensor | int, x: Tensor) -> Tensor:
    if isinstance(t, int):
        return torch.full((x.shape[0],), t, dtype=torch.long, device=x.device)
    return t


def q_sample(schedule: NoiseSchedule | CoefficientSchedule, x0: Tensor, t: Tensor | int,
             noise: Tensor) -> Tensor:
    """x_t = sqrt(ab_t) x_0 + sqrt(1 - ab_t) noise.  ``x0``, ``noise``: [B, ...] -> [B, ...].

    With a per-coefficient schedule, the same per F_R coefficient (docs/method.md §9)."""
    t = _timesteps(t, x0)
    if isinstance(schedule, CoefficientSchedule):
        return schedule.q_sample(x0, t, noise)
    abar = schedule.alpha_bars
    return gather(abar.sqrt(), t, x0) * x0 + gather((1.0 - abar).sqrt(), t, x0) * noise


def posterior_mean_variance(
    schedule: NoiseSchedule, x0: Tensor, x_t: Tensor, t: Tensor | int
) -> tuple[Tensor, Tensor]:
    """Mean and variance of q(x_{t-1} | x_t, x_0).

    Args:
        x0, x_t: ``[B, ...]``; t: int64 ``[B]`` in 1..T.
    Returns:
        ``(mean [B, ...], variance [B, 1, ..., 1])``; the variance is beta~_t (0 at t = 1).
    """
    t = _timesteps(t, x_t)
    abar, abar_prev = schedule.alpha_bars[1:], schedule.alpha_bars[:-1]
    betas, alphas = schedule.betas[1:], schedule.alphas[1:]
    # Tables of length T + 1 indexed by t; entry 0 (t = 0) is never used.
    coef_x0 = torch.cat([abar.new_zeros(1), abar_prev.sqrt() * betas / (1.0 - abar)])
    coef_xt = torch.cat([abar.new_zeros(1), alphas.sqrt() * (1.0 - abar_prev) / (1.0 - abar)])
    mean = gather(coef_x0, t, x_t) * x0 + gather(coef_xt, t, x_t) * x_t
    return mean, gather(schedule.posterior_variances, t, x_t)


def eps_to_x0(schedule: NoiseSchedule | CoefficientSchedule, x_t: Tensor, t: Tensor | int,
              eps: Tensor) -> Tensor:
    """x_0 = (x_t - sqrt(1 - ab_t) eps) / sqrt(ab_t).  ``[B, ...]`` -> ``[B, ...]`` (per F_R
    coefficient with a per-coefficient schedule)."""
    t = _timesteps(t, x_t)
    if isinstance(schedule, CoefficientSchedule):
        return schedule.eps_to_x0(x_t, t, eps)
    abar = schedule.alpha_bars
    return gather(abar.rsqrt(), t, x_t) * x_t - gather(((1.0 - abar) / abar).sqrt(), t, x_t) * eps


def x0_to_eps(schedule: NoiseSchedule, x_t: Tensor, t: Tensor | int, x0: Tensor) -> Tensor:
    """eps = (x_t - sqrt(ab_t) x_0) / sqrt(1 - ab_t), for t >= 1.  ``[B, ...]`` -> ``[B, ...]``."""
    t = _timesteps(t, x_t)
    abar = schedule.alpha_bars
    inv_sigma = torch.cat([abar.new_zeros(1), (1.0 - abar[1:]).rsqrt()])
    return gather(inv_sigma, t, x_t) * x_t - gather(inv_sigma * abar.sqrt(), t, x_t) * x0


def project_x0(denoiser: Denoiser, schedule: NoiseSchedule,
               project: Callable[[Tensor], Tensor]) -> Denoiser:
    """The denoiser whose x0 estimate is ``project(x0_hat)``: a denoiser of the same contract.

    With x0_hat = (x_t - sqrt(1 - ab_t) eps) / sqrt(ab_t) (:func:`eps_to_x0`) and
    x0' = ``project(x0_hat)`` (``[B, C, H, W]`` -> ``[B, C, H, W]``, float64 but on MPS), it
    returns eps' = eps + sqrt(ab_t / (1 - ab_t)) (x0_hat - x0'), whose x0 estimate is x0'. Every
    sampler forms its update from (x_t, eps) alone, i.e. from (x_t, x0_hat), so each of them then
    steps with the projected estimate; the samplers stay as they are. A ``project`` that returns
    its input unchanged gives eps back (up to the float64 round trip of the cast). Shared
    schedules only (a per-coefficient one forms x0_hat per F_R coefficient).
    """
    abar = schedule.alpha_bars
    gain = torch.cat([abar.new_zeros(1), (abar[1:] / (1.0 - abar[1:])).sqrt()])

    def eps_projected(x_t: Tensor, y: Tensor, t: Tensor, /, **kw: bool) -> Tensor:
        eps = denoiser(x_t, y, t, **kw)
        wide = torch.float32 if x_t.device.type == "mps" else torch.float64  # MPS: no float64
        x0 = eps_to_x0(schedule, x_t.to(wide), t, eps.to(wide))
        return (eps.to(wide) + gather(gain, t, x0) * (x0 - project(x0).to(x0))).to(eps.dtype)

    return eps_projected
