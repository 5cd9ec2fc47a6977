"""Samplers of the conditional reverse process: pure functions of (denoiser, y, schedule, noise).

A denoiser is ``denoiser(x_t [B, C, H, W], y [B, Cy, H, W], t int64 [B]) -> eps [B, C, H, W]``
(docs/architecture.md). Every sampler

- starts from ``x_T`` when given (its shape is the output shape), else draws it with ``shape``;
- draws noise from ``generator`` on the generator's device (CPU by default), then moves it to
  ``y``'s device; ``generator`` may be one ``torch.Generator`` or a sequence of B generators, one
  per batch row (row b's noise then comes from ``generator[b]`` alone, so a sample does not depend
  on the batch it is computed in; see :func:`weather_sr.core.process.randn_like_batch`, re-exported
  here);
- keeps x in ``y``'s dtype (the output dtype), forms every coefficient in float64 from the
  schedule and casts it only when applied;
- calls ``progress(step_index, n_steps)`` after each network evaluation, ``step_index`` counting
  completed evaluations 1..n_steps;
- runs under ``torch.no_grad()``;
- takes a shared ``NoiseSchedule``, or a per-coefficient ``CoefficientSchedule`` whose state is
  F_R coefficients (the same formulas per coefficient; docs/method.md §9, run by
  :func:`weather_sr.core.spectral_sampling.sample_process`), and a ``noise_colour(z, step)``
  that shapes the noise it injects (None: white; DPM-Solver++(2M) injects none).

Every sampler takes its time grid as an argument, as k-diffusion's samplers take ``sigmas``:

    sampler(denoiser, y, schedule, ts, *, x_T=None, shape=None, generator=None, progress=None,
            **own_options) -> x_0

``ts`` is the strictly decreasing list of evaluation times t_0 > t_1 > ... >= 1 (one network
evaluation each; after the last the sampler jumps to t = 0). Callers pick a sampler by name from
:data:`SAMPLERS` (:data:`SAMPLER_NAMES` is the one list of names, which the CLI and the config
use), build its grid with :func:`sampler_timesteps` and its own keywords with
:func:`sampler_kwargs`; no caller needs to look at a sampler's signature:

- ``"ancestral"``: the founding derivation's Algorithm 2 on every step, ts = T, T-1, ..., 1
  (``steps`` is ignored); own option ``variance="beta" | "beta_tilde"``;
- ``"ddim"``: Song et al. 2021, ``steps`` <= T on the ``"trailing"`` grid; own option ``eta``
  in [0, 1];
- ``"dpmpp_2m"``: DPM-Solver++(2M), Lu et al. 2022, ``steps`` <= T on the ``"logsnr"`` grid
  (10-50 is its useful range); no own option (deterministic).

Grids of the few-step samplers (:func:`timesteps`, ``spacing``; docs/method.md §7);
t_0 = T > t_1 > ... > t_{steps-1} >= 1:

- ``"trailing"`` (DDIM's default): evenly spaced in t, t_i = round(T - i T / steps) (Lin et al.
  2024, "Common diffusion noise schedules and sample steps are flawed"); the last evaluation is
  at t ~ T / steps. With steps = T it is T, T-1, ..., 1.
- ``"logsnr"`` (DPM-Solver++'s default, Lu et al.'s recommendation): evenly spaced in
  lambda = log(sqrt(ab) / sqrt(1 - ab)) from max(lambda_T, :data:`LOGSNR_MIN`) towards lambda_1
  (steps + 1 points, the first replaced by t_0 = T and the last by the jump to t = 0), rounded to
  integers and kept strictly decreasing. The floor matters for the cosine schedule only: its
  alpha_bar_T ~ 2.4e-9 (lambda_T ~ -9.9) spends a third of the lambda range in its last few
  steps, so an unclipped grid put 8 of 20 evaluations at t >= 993 where the network sees almost
  pure noise. The linear schedule of :func:`~weather_sr.core.schedule.make_schedule` with
  T >= 1000 has lambda_T ~ -5.06 > LOGSNR_MIN, so its grid is the plain log-SNR grid (for a small
  T its betas are rescaled and lambda_T falls lower, e.g. -5.4 at T = 100: the floor applies).

Defaults (the one home; the library, the config's validation preview and the CLI all read them):
:data:`DEFAULT_SAMPLER` = ``"dpmpp_2m"``, :data:`DEFAULT_STEPS` = 20, :data:`DEFAULT_ETA` = 0,
each on its sampler's :data:`DEFAULT_SPACING` (dpmpp_2m: ``"logsnr"`` for every schedule).

Measured with the exact denoiser of Gaussian data (tests/test_sampling.py): first-order samplers
(DDIM) lose variance at few steps, and "trailing" loses most of the variance of components whose
variance is small compared with the noise left at t ~ T / steps (small scales of a field) — the
last jump to t = 0 replaces them by their posterior mean. DPM-Solver++(2M) with "logsnr" spacing
reproduces the variance within a few per cent from 20 steps.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from itertools import pairwise

import numpy as np
import torch
from torch import Tensor

from weather_sr.core import coefficients as coef
from weather_sr.core.coefficients import AnySchedule, Coef
from weather_sr.core.process import Denoiser, Generators, randn_like_batch
from weather_sr.core.sampler_defaults import (
    DEFAULT_ETA,
    DEFAULT_SAMPLER,
    DEFAULT_STEPS,
    SAMPLER_NAMES,
)
from weather_sr.core.schedule import NoiseSchedule

__all__ = [
    "DEFAULT_ETA",
    "DEFAULT_SAMPLER",
    "DEFAULT_SPACING",
    "DEFAULT_STEPS",
    "GENERATOR_LISTS",
    "LOGSNR_MIN",
    "SAMPLERS",
    "SAMPLER_NAMES",
    "SPACINGS",
    "Sampler",
    "network_evaluations",
    "randn_like_batch",
    "sample_ancestral",
    "sample_ddim",
    "sample_dpmpp_2m",
    "sampler_kwargs",
    "sampler_timesteps",
    "timesteps",
    "uses_injected_noise",
    "uses_steps",
]

Progress = Callable[[int, int], None]
# sampler(denoiser, y, schedule, ts, *, x_T, shape, generator, progress, **own_options) -> x_0
Sampler = Callable[..., Tensor]

GENERATOR_LISTS = True  # every sampler accepts one generator per batch row (see module doc)


SPACINGS = ("trailing", "logsnr")
# floor of the log-SNR grid (the value diffusers' DPMSolverMultistepScheduler recommends for the
# cosine schedule, ``lambda_min_clipped``); below the T = 1000 linear schedule's lambda_T ~ -5.06
LOGSNR_MIN = -5.1

# the one set of sampling defaults (module doc)


def timesteps(schedule: NoiseSchedule, steps: int, spacing: str = "trailing") -> list[int]:
    """The ``steps`` evaluation times T = t_0 > ... > t_{steps-1} >= 1 (see module doc)."""
    T = _check_steps(steps, schedule.T)
    if spacing == "trailing":
        return [round(T - i * T / steps) for i in range(steps)]
    if spacing != "logsnr":
        raise ValueError(f"timesteps: expected a spacing in {SPACINGS}, got {spacing!r}")
    lam = schedule.log_snr()[1:].flip(0).numpy()  # increasing: t = T, T-1, ..., 1
    targets = np.linspace(max(lam[0], LOGSNR_MIN), lam[-1], steps + 1)[:-1]
    ts = np.rint(np.interp(targets, lam, np.arange(T, 0, -1, dtype=np.float64)))
    out = [T]
    for i in range(1, steps):  # strictly decreasing, leaving room for the remaining steps
        out.append(max(min(int(ts[i]), out[-1] - 1), steps - i))
    return out


def _check_name(name: str) -> str:
    if name not in SAMPLERS:
        raise ValueError(f"sampler: expected one of {SAMPLER_NAMES}, got {name!r}")
    return name


def uses_steps(name: str) -> bool:
    """Whether sampler ``name`` runs on a grid of ``steps`` evaluations (ancestral: all T)."""
    return DEFAULT_SPACING[_check_name(name)] is not None


def sampler_timesteps(
    name: str, schedule: NoiseSchedule, steps: int | None = None, spacing: str | None = None
) -> list[int]:
    """The grid ``ts`` that sampler ``name`` runs on for (steps, spacing).

    ``"ancestral"``: every step T, T-1, ..., 1 (``steps`` and ``spacing`` are ignored). The others:
    :func:`timesteps` with ``steps`` (None: T) and ``spacing`` (None: the sampler's default,
    :data:`DEFAULT_SPACING`).
    """
    default = DEFAULT_SPACING[_check_name(name)]
    if default is None:
        return list(range(schedule.T, 0, -1))
    return timesteps(schedule, schedule.T if steps is None else steps, spacing or default)


def network_evaluations(name: str, schedule: NoiseSchedule, steps: int | None = None) -> int:
    """Number of denoiser calls of sampler ``name``: the length of its grid."""
    return len(sampler_timesteps(name, schedule, steps))


def sampler_kwargs(name: str, *, eta: float = 0.0) -> dict[str, float]:
    """The own keywords of sampler ``name`` from the common sampling settings.

    Only DDIM has ``eta``; the ancestral sampler's noise is set by its ``variance`` and
    DPM-Solver++(2M) is deterministic, so they get no ``eta`` (it does not apply to them).
    """
    return {"eta": eta} if _check_name(name) == "ddim" else {}


def uses_injected_noise(name: str, eta: float) -> bool:
    """Whether sampler ``name`` injects noise (ancestral; DDIM with eta > 0): what
    ``--noise-colour`` shapes (DPM-Solver++(2M) is deterministic)."""
    return _check_name(name) == "ancestral" or (name == "ddim" and eta > 0)


def _check_steps(steps: int, T: int) -> int:
    """Validate ``steps``; returns T."""
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= T:
        raise ValueError(f"timesteps: expected an integer steps in 1..{T} (T), got {steps!r}")
    return T


def _check_grid(ts: Sequence[int], T: int, name: str) -> list[int]:
    """``ts`` as a list of ints; ValueError unless it is non-empty, strictly decreasing, in 1..T."""
    grid = [operator.index(t) for t in ts]
    if not grid or grid[0] > T or grid[-1] < 1 or any(a <= b for a, b in pairwise(grid)):
        shown = grid if len(grid) <= 8 else [*grid[:4], "...", *grid[-2:]]
        raise ValueError(
            f"{name}: expected a strictly decreasing grid ts in 1..{T} (T), got {shown}"
        )
    return grid


def _start(
    y: Tensor, x_T: Tensor | None, shape: Sequence[int] | None, generator: Generators
) -> Tensor:
    """Initial x_T ``[B, C, H, W]`` in y's dtype and device (given or drawn)."""
    if x_T is not None:
        if shape is not None and tuple(shape) != tuple(x_T.shape):
            raise ValueError(f"sampling: shape {tuple(shape)} != x_T.shape {tuple(x_T.shape)}")
        x = x_T.to(device=y.device, dtype=y.dtype)
    elif shape is None:
        raise ValueError("sampling: give x_T or shape")
    else:
        x = randn_like_batch(shape, generator, y.device, y.dtype)
    if x.ndim != y.ndim or x.shape[0] != y.shape[0] or x.shape[2:] != y.shape[2:]:
        raise ValueError(f"sampling: x_T {tuple(x.shape)} does not match y {tuple(y.shape)}")
    return x


def _eps(denoiser: Denoiser, x: Tensor, y: Tensor, t: int) -> Tensor:
    tt = torch.full((x.shape[0],), t, dtype=torch.long, device=x.device)
    return denoiser(x, y, tt).to(x.dtype)


def _report(progress: Progress | None, i: int, n: int) -> None:
    if progress is not None:
        progress(i, n)


NoiseColour = Callable[[Tensor, int], Tensor]  # (z [B, C, H, W], destination step) -> z


def _noise(x: Tensor, y: Tensor, generator: Generators, colour: NoiseColour | None,
           step: int) -> Tensor:
    """The injected noise z ~ N(0, I) (coloured by ``colour`` towards ``step`` when given)."""
    z = randn_like_batch(x.shape, generator, y.device, y.dtype)
    return z if colour is None else colour(z, step)


@torch.no_grad()
def sample_ancestral(
    denoiser: Denoiser,
    y: Tensor,
    schedule: AnySchedule,
    ts: Sequence[int] | None = None,
    *,
    variance: str = "beta",
    noise_colour: NoiseColour | None = None,
    x_T: Tensor | None = None,
    shape: Sequence[int] | None = None,
    generator: Generators = None,
    progress: Progress | None = None,
) -> Tensor:
    """The founding derivation's Algorithm 2 (docs/method.md §3); one evaluation per step.

    x_{t-1} = (x_t - beta_t / sqrt(1 - ab_t) eps_theta(x_t, y, t)) / sqrt(alpha_t) + sigma_t z,
    z ~ N(0, I) for t > 1 and z = 0 at t = 1; sigma_t^2 = beta_t (``"beta"``) or beta~_t
    (``"beta_tilde"``).

    Args:
        y: condition ``[B, Cy, H, W]``; x_T / shape: ``[B, C, H, W]``.
        ts: consecutive steps t_0, t_0 - 1, ..., 1; None: the full grid T, ..., 1.
        schedule: a NoiseSchedule, or a CoefficientSchedule (x is then F_R coefficients and
            every coefficient above is per coefficient, alpha_t = ab_t / ab_{t-1}).
        noise_colour: ``(z, t - 1) -> z`` shapes the injected noise (coloured-noise sampling).
    Returns:
        x_0 ``[B, C, H, W]`` in y's dtype.
    """
    if variance not in ("beta", "beta_tilde"):
        raise ValueError(
            f"sample_ancestral: expected variance 'beta' or 'beta_tilde', got {variance!r}"
        )
    if ts is None:
        ts = range(schedule.T, 0, -1)
    grid = _check_grid(ts, schedule.T, "sample_ancestral")
    if grid != list(range(grid[0], 0, -1)):
        raise ValueError(f"sample_ancestral: expected consecutive steps down to 1, got {grid}")
    x = _start(y, x_T, shape, generator)
    n = len(grid)
    for i, t in enumerate(grid, start=1):
        eps = _eps(denoiser, x, y, t)
        alpha, beta, abar, var = coef.ancestral_coefs(schedule, t, variance)
        x = coef.div(x - coef.mul(beta / coef.sqrt(1.0 - abar), eps), coef.sqrt(alpha))
        if t > 1:
            x = x + coef.mul(coef.sqrt(var), _noise(x, y, generator, noise_colour, t - 1))
        _report(progress, i, n)
    return x


@torch.no_grad()
def sample_ddim(
    denoiser: Denoiser,
    y: Tensor,
    schedule: AnySchedule,
    ts: Sequence[int],
    *,
    eta: float = 0.0,
    noise_colour: NoiseColour | None = None,
    x_T: Tensor | None = None,
    shape: Sequence[int] | None = None,
    generator: Generators = None,
    progress: Progress | None = None,
) -> Tensor:
    """DDIM (Song et al. 2021) on the grid ``ts``; ``len(ts)`` evaluations.

    From t to s < t (s = 0 after the last evaluation), with x0_hat = eps_to_x0(x_t, eps):
    x_s = sqrt(ab_s) x0_hat + sqrt(1 - ab_s - sigma^2) eps + sigma z,
    sigma = eta sqrt((1 - ab_s) / (1 - ab_t)) sqrt(1 - ab_t / ab_s). eta = 0 is the deterministic
    sampler; eta = 1 is ancestral sampling with beta~ on the sub-sequence.

    Args:
        y: condition ``[B, Cy, H, W]``; x_T / shape: ``[B, C, H, W]``; eta: [0, 1];
        ts: the grid, e.g. ``timesteps(schedule, steps)`` (trailing, the DDIM default of
            :func:`sampler_timesteps`).
        schedule: a NoiseSchedule, or a CoefficientSchedule (x is then F_R coefficients and the
            update is the same formula per coefficient).
        noise_colour: ``(z, s) -> z`` shapes the injected noise (coloured-noise sampling).
    Returns:
        x_0 ``[B, C, H, W]`` in y's dtype.
    """
    if not 0.0 <= eta <= 1.0:
        raise ValueError(f"sample_ddim: expected 0 <= eta <= 1, got {eta}")
    taus = _check_grid(ts, schedule.T, "sample_ddim")
    x = _start(y, x_T, shape, generator)
    for i, t in enumerate(taus):
        s = taus[i + 1] if i + 1 < len(taus) else 0
        ab_t, ab_s = coef.abar(schedule, t), coef.abar(schedule, s)
        eps = _eps(denoiser, x, y, t)
        sigma = eta * coef.sqrt((1.0 - ab_s) / (1.0 - ab_t) * (1.0 - ab_t / ab_s))
        # x_s = a x_t + b eps (+ sigma z): x0_hat folded into float64 coefficients.
        a = coef.sqrt(ab_s / ab_t)
        b = coef.sqrt(coef.relu(1.0 - ab_s - sigma**2)) - coef.sqrt(ab_s * (1.0 - ab_t) / ab_t)
        x = coef.mul(a, x) + coef.mul(b, eps)
        if eta > 0.0 and s > 0:
            x = x + coef.mul(sigma, _noise(x, y, generator, noise_colour, s))
        _report(progress, i + 1, len(taus))
    return x


@torch.no_grad()
def sample_dpmpp_2m(
    denoiser: Denoiser,
    y: Tensor,
    schedule: AnySchedule,
    ts: Sequence[int],
    *,
    x_T: Tensor | None = None,
    shape: Sequence[int] | None = None,
    generator: Generators = None,
    progress: Progress | None = None,
    noise_colour: NoiseColour | None = None,
) -> Tensor:
    """DPM-Solver++(2M) (Lu et al. 2022, data prediction, multistep 2nd order); deterministic.

    With alpha_t = sqrt(ab_t), sigma_t = sqrt(1 - ab_t), lambda_t = log(alpha_t / sigma_t) and
    D_i = x0_hat(x_{t_i}) on the grid ``ts`` = t_0 > ... > t_{steps-1} (the default of
    :func:`sampler_timesteps`: logsnr spacing), step i to t_{i+1}:

        h_i = lambda_{t_{i+1}} - lambda_{t_i},  r_i = h_{i-1} / h_i
        D   = (1 + 1 / (2 r_i)) D_i - 1 / (2 r_i) D_{i-1}     (D = D_0 at the first step)
        x_{t_{i+1}} = (sigma_{t_{i+1}} / sigma_{t_i}) x_{t_i} - alpha_{t_{i+1}} expm1(-h_i) D

    The last step goes to t = 0 (lambda = +inf), where this gives x_0 = D_{steps-1} (first order,
    as in k-diffusion's ``sample_dpmpp_2m``). ``len(ts)`` network evaluations; useful with 10-50.

    Args:
        y: condition ``[B, Cy, H, W]``; x_T / shape: ``[B, C, H, W]``;
        ts: the grid, e.g. ``timesteps(schedule, steps, "logsnr")``.
        noise_colour: accepted as by the stochastic samplers, unused: this sampler injects no
            noise.
        schedule: a NoiseSchedule, or a CoefficientSchedule (x is then F_R coefficients, and
            h_i, r_i are per coefficient: every coordinate is its own exact 1-D problem).
    Returns:
        x_0 ``[B, C, H, W]`` in y's dtype.
    """
    del noise_colour
    taus = _check_grid(ts, schedule.T, "sample_dpmpp_2m")
    x = _start(y, x_T, shape, generator)
    d_prev: Tensor | None = None
    h_prev: Coef = 0.0
    for i, t in enumerate(taus):
        ab_t = coef.abar(schedule, t)
        eps = _eps(denoiser, x, y, t)
        d = coef.div(x - coef.mul(coef.sqrt(1.0 - ab_t), eps), coef.sqrt(ab_t))
        _report(progress, i + 1, len(taus))
        if i + 1 == len(taus):
            return d
        s = taus[i + 1]
        ab_s = coef.abar(schedule, s)
        h = coef.log_snr(schedule, s) - coef.log_snr(schedule, t)
        d_use = d
        if d_prev is not None:
            r = h_prev / h
            d_use = coef.mul(1.0 + 0.5 / r, d) - coef.mul(0.5 / r, d_prev)
        x = (coef.mul(coef.sqrt((1.0 - ab_s) / (1.0 - ab_t)), x)
             - coef.mul(coef.sqrt(ab_s) * coef.expm1(-h), d_use))
        d_prev, h_prev = d, h
    raise AssertionError("unreachable: steps >= 1")


SAMPLERS: dict[str, Sampler] = {
    "ancestral": sample_ancestral,
    "ddim": sample_ddim,
    "dpmpp_2m": sample_dpmpp_2m,
}
if tuple(SAMPLERS) != SAMPLER_NAMES:  # the one list of names (CLI, config, options)
    raise ImportError(f"SAMPLERS {tuple(SAMPLERS)} != SAMPLER_NAMES {SAMPLER_NAMES}")
# each sampler's default grid spacing; None: every step T..1 (``steps`` does not apply)
DEFAULT_SPACING: dict[str, str | None] = {
    "ancestral": None,
    "ddim": "trailing",
    "dpmpp_2m": "logsnr",
}
