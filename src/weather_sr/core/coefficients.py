"""Schedule coefficients for the samplers: Python floats from a shared schedule, or float64
tensors per F_R coefficient from a per-coefficient one (docs/method.md §9).

A sampler's update is one formula in alpha_bar_t (and lambda_t); with a ``NoiseSchedule`` every
coefficient is a float and the arithmetic is today's, bit for bit; with a
``CoefficientSchedule`` it is a tensor ``[C|1, H, W]`` and the same formula acts on each F_R
coefficient of the sampler's state. :func:`mul` and :func:`div` cast a tensor coefficient to the
data's dtype only when it is applied.
"""

from __future__ import annotations

import math

from torch import Tensor

from weather_sr.core.schedule import NoiseSchedule
from weather_sr.core.spectral import CoefficientSchedule

__all__ = ["AnySchedule", "Coef", "abar", "ancestral_coefs", "div", "expm1", "log_snr", "mul",
           "relu", "sqrt"]

Coef = float | Tensor
AnySchedule = NoiseSchedule | CoefficientSchedule


def abar(schedule: AnySchedule, t: int) -> Coef:
    """alpha_bar_t."""
    if isinstance(schedule, CoefficientSchedule):
        return schedule.alpha_bar(t)
    return float(schedule.alpha_bars[t])


def log_snr(schedule: AnySchedule, t: int) -> Coef:
    """lambda_t = log(sqrt(ab_t) / sqrt(1 - ab_t))."""
    if isinstance(schedule, CoefficientSchedule):
        return schedule.log_snr(t)
    return float(schedule.log_snr()[t])


def sqrt(v: Coef) -> Coef:
    return v.sqrt() if isinstance(v, Tensor) else math.sqrt(v)


def relu(v: Coef) -> Coef:
    return v.clamp(min=0.0) if isinstance(v, Tensor) else max(v, 0.0)


def expm1(v: Coef) -> Coef:
    return v.expm1() if isinstance(v, Tensor) else math.expm1(v)


def mul(c: Coef, x: Tensor) -> Tensor:
    """c x, a tensor c cast to x's dtype and device."""
    return c.to(x) * x if isinstance(c, Tensor) else c * x


def div(x: Tensor, c: Coef) -> Tensor:
    """x / c, a tensor c cast to x's dtype and device."""
    return x / c.to(x) if isinstance(c, Tensor) else x / c


def ancestral_coefs(schedule: AnySchedule, t: int, variance: str
                    ) -> tuple[Coef, Coef, Coef, Coef]:
    """(alpha_t, beta_t, ab_t, sigma_t^2) of the ancestral step t (``variance``: ``"beta"`` or
    ``"beta_tilde"``); per coefficient alpha_t = ab_t / ab_{t-1}."""
    if isinstance(schedule, NoiseSchedule):
        var = schedule.betas if variance == "beta" else schedule.posterior_variances
        return (float(schedule.alphas[t]), float(schedule.betas[t]),
                float(schedule.alpha_bars[t]), float(var[t]))
    ab, ab_prev = schedule.alpha_bar(t), schedule.alpha_bar(t - 1)
    alpha = ab / ab_prev
    beta = 1.0 - alpha
    var = beta if variance == "beta" else (1.0 - ab_prev) / (1.0 - ab) * beta
    return alpha, beta, ab, var
