"""Noise schedules of the discrete diffusion process (docs/method.md §3), in float64.

Convention (docs/architecture.md): t is an integer in 1..T and every schedule tensor has length
T + 1, entry 0 standing for t = 0 (``betas[0] = 0``, ``alpha_bars[0] = 1``), so ``alpha_bars[t]``
and ``alpha_bars[t - 1]`` index directly. Values are cast to the data's dtype only when applied
(:func:`gather`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = [
    "SCHEDULE_KINDS",
    "NoiseSchedule",
    "cosine_schedule",
    "gather",
    "linear_schedule",
    "make_schedule",
]

MAX_BETA = 0.999


@dataclass(frozen=True, eq=False)
class NoiseSchedule:
    """A discrete variance-preserving schedule; every tensor is float64 ``[T + 1]``.

    Attributes:
        T: number of diffusion steps.
        betas: beta_t (``betas[0] = 0``).
        alphas: alpha_t = 1 - beta_t.
        alpha_bars: prod_{s <= t} alpha_s (``alpha_bars[0] = 1``).
        posterior_variances: beta~_t = (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t) * beta_t, the
            variance of q(x_{t-1} | x_t, x_0). It is exactly 0 at t = 1 (x_0 is known there) and
            set to 0 at index 0; ancestral sampling adds no noise at t = 1 anyway.
    """

    T: int
    betas: Tensor
    alphas: Tensor
    alpha_bars: Tensor
    posterior_variances: Tensor

    def __post_init__(self) -> None:
        for name in ("betas", "alphas", "alpha_bars", "posterior_variances"):
            value = getattr(self, name)
            if value.dtype != torch.float64 or value.shape != (self.T + 1,):
                raise ValueError(
                    f"NoiseSchedule.{name}: expected float64 [{self.T + 1}], "
                    f"got {value.dtype} {tuple(value.shape)}"
                )

    @classmethod
    def from_betas(cls, betas: Tensor) -> NoiseSchedule:
        """Build every derived tensor from ``betas`` [T] (for t = 1..T), float64 on CPU."""
        betas = betas.detach().to(device="cpu", dtype=torch.float64)
        if betas.ndim != 1 or betas.numel() < 1:
            raise ValueError(f"betas must be a non-empty 1-D tensor, got {tuple(betas.shape)}")
        if not bool(((betas > 0) & (betas < 1)).all()):
            raise ValueError("betas must lie in (0, 1)")
        full = torch.cat([betas.new_zeros(1), betas])
        alphas = 1.0 - full
        alpha_bars = torch.cumprod(alphas, dim=0)
        post = torch.zeros_like(full)
        post[1:] = (1.0 - alpha_bars[:-1]) / (1.0 - alpha_bars[1:]) * full[1:]
        return cls(betas.numel(), full, alphas, alpha_bars, post)

    def log_snr(self) -> Tensor:
        """lambda_t = log(sqrt(alpha_bar_t) / sqrt(1 - alpha_bar_t)), float64 ``[T + 1]``.

        Entry 0 is +inf (no noise at t = 0).
        """
        return 0.5 * (torch.log(self.alpha_bars) - torch.log1p(-self.alpha_bars))


def linear_schedule(
    T: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02
) -> NoiseSchedule:
    """DDPM's linear schedule: beta_t evenly spaced from beta_start (t = 1) to beta_end (t = T)."""
    _check_steps(T)
    if not 0.0 < beta_start <= beta_end < 1.0:
        raise ValueError(
            "linear_schedule: expected 0 < beta_start <= beta_end < 1, "
            f"got beta_start={beta_start}, beta_end={beta_end}"
        )
    return NoiseSchedule.from_betas(torch.linspace(beta_start, beta_end, T, dtype=torch.float64))


def cosine_schedule(T: int = 1000, s: float = 0.008) -> NoiseSchedule:
    """Nichol & Dhariwal (2021): alpha_bar(t) = f(t) / f(0), f(t) = cos((t/T + s)/(1 + s) * pi/2)^2.

    beta_t = 1 - alpha_bar(t) / alpha_bar(t - 1), clipped at 0.999 (which only bites at the last
    steps); ``alpha_bars`` is then the cumulative product of the clipped 1 - beta_t.
    """
    _check_steps(T)
    if s <= 0:
        raise ValueError(f"cosine_schedule: expected an offset s > 0, got {s}")
    steps = torch.arange(T + 1, dtype=torch.float64)
    f = torch.cos((steps / T + s) / (1 + s) * math.pi / 2) ** 2
    abar = f / f[0]
    betas = (1.0 - abar[1:] / abar[:-1]).clamp(max=MAX_BETA)
    return NoiseSchedule.from_betas(betas)


SCHEDULE_KINDS = ("linear", "cosine")


def make_schedule(kind: str, T: int) -> NoiseSchedule:
    """Schedule by name, for configuration files and the CLI.

    ``"linear"`` uses DDPM's betas 1e-4..0.02 rescaled by 1000 / T (as in Nichol & Dhariwal's
    ``get_named_beta_schedule``) so that alpha_bar_T stays near 4e-5 for any T; betas are capped
    at 0.999 (only for T < 21). ``"cosine"`` is :func:`cosine_schedule` with s = 0.008.
    """
    _check_steps(T)
    if kind == "linear":
        scale = 1000.0 / T
        return linear_schedule(T, min(1e-4 * scale, MAX_BETA), min(0.02 * scale, MAX_BETA))
    if kind == "cosine":
        return cosine_schedule(T)
    raise ValueError(f"make_schedule: expected a kind in {SCHEDULE_KINDS}, got {kind!r}")


def gather(values: Tensor, t: Tensor, like: Tensor) -> Tensor:
    """``values[t]`` shaped to broadcast against ``like``, in ``like``'s dtype and device.

    Args:
        values: float64 schedule tensor ``[T + 1]``.
        t: int64 ``[B]`` timesteps in 0..T.
        like: the data ``[B, ...]``.
    Returns:
        ``[B, 1, ..., 1]`` (``like.ndim`` dims).
    """
    # Index where t lives (no host sync on CUDA); MPS has no float64, so index on the CPU there.
    picked = values[t.cpu()] if t.device.type == "mps" else values.to(t.device)[t]
    return picked.to(device=like.device, dtype=like.dtype).view(-1, *([1] * (like.ndim - 1)))


def _check_steps(T: int) -> None:
    if isinstance(T, bool) or not isinstance(T, int) or T < 1:
        raise ValueError(f"schedule: expected an integer T >= 1 (diffusion steps), got {T!r}")
