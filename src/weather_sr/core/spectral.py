"""Forward processes diagonal in the F_R basis: shaped noise and per-coefficient schedules
(docs/method.md §9).

For the 2-D F_R coefficient k of channel c (radial frequency nu_k, cycles per grid spacing) of
the diffused variable z0, the forward marginal is

    F_R z_t = sqrt(ab_t(nu)) F_R z0 + sqrt(1 - ab_t(nu)) s(nu) eps,     eps ~ N(0, I)

- ``s`` is the **noise shape** (``diffusion.noise``): Sigma^1/2 = F_R^-1 diag(s) F_R, with mean
  s^2 = 1 over the training patch's coefficients (the total noise power of white noise);
  ``white``: s = 1; ``power:P``: s = c (nu + nu0)^-P, nu0 the training patch's lowest non-zero
  frequency; ``equal_snr``: s = the smoothed radial RMS amplitude of z0's coefficients on the
  training split (:class:`RadialSpectrum`), floored at :data:`AMPLITUDE_FLOOR` of its peak.
- ``ab_t(nu)`` is the **spectral schedule** (``diffusion.spectral_schedule``): the reference
  schedule's log-SNR lambda_t = log(sqrt(ab_t) / sqrt(1 - ab_t)) shifted per coefficient,
  lambda_t(nu) = lambda_t + f(t) Delta(nu) with Delta <= 0 (so every coefficient is at least as
  noisy as the reference at t = T): ``none``: Delta = 0; ``equal_snr``: Delta = log(a_min / a(nu))
  with a the amplitude of the diffused (whitened) variable, f = 1, so that every frequency's SNR
  is equal at every t and falls at the same rate; ``blur:K``: Delta = -K (nu / nu_max)^2 with
  nu_max = sqrt(1/2), f = t / T (small scales are destroyed first, as in blurring diffusion).

s and Delta are functions of nu, stored as such in the checkpoint, so the same process applies on
a grid of any size (a tile, a whole domain). Everything is diagonal in the F_R basis, so in the
whitened variable u = Sigma^-1/2 z every coefficient follows an ordinary VP process with its own
ab_t(nu); with one shared schedule it is ordinary diffusion of u, and the samplers run unchanged
(:mod:`weather_sr.core.spectral_sampling`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

import numpy as np
import torch
from torch import Tensor

from weather_sr.core.fourier import inverse_real_fourier2, radial_frequency, real_fourier2
from weather_sr.core.schedule import NoiseSchedule
from weather_sr.core.spectral_options import (
    COLOUR_KINDS,
    NOISE_KINDS,
    SCHEDULE_KINDS,
    parse_spectral,
)

__all__ = [
    "AMPLITUDE_FLOOR",
    "CoefficientSchedule",
    "GridProcess",
    "NoiseShape",
    "RadialSpectrum",
    "SpectralProcess",
    "SpectralShift",
    "colour_gains",
    "make_process",
]

AMPLITUDE_FLOOR = 1e-2  # measured amplitudes below this fraction of their peak are raised to it
NU_MAX = math.sqrt(0.5)  # the largest radial frequency of any grid, cycles per grid spacing


def _lowest(h: int, w: int) -> float:
    """The lowest non-zero radial frequency of an h x w grid."""
    return 1.0 / max(h, w)


def _interp(nu: Sequence[float], values: Sequence[Sequence[float]], points: Tensor) -> Tensor:
    """A radial table (nu [K], values [C][K]) at the frequencies ``points`` (any shape): float64
    ``[C, *points.shape]``, linear in nu, constant beyond the table's ends."""
    at = points.numpy()
    out = np.stack([np.interp(at, np.asarray(nu), np.asarray(v)) for v in values])
    return torch.from_numpy(out)


class RadialSpectrum:
    """Radial RMS amplitude of F_R coefficients, accumulated over fields of one grid size.

    Bin k holds the coefficients with round(nu max(H, W)) = k; :meth:`table` gives the bins'
    mean nu and, per channel, the RMS amplitude, smoothed by a 3-bin running mean of its log and
    floored at :data:`AMPLITUDE_FLOOR` of its peak.
    """

    def __init__(self, channels: int, h: int, w: int) -> None:
        nu = radial_frequency(h, w)
        self.shape = (h, w)
        self.index = torch.round(nu * max(h, w)).long().flatten()
        bins = int(self.index.max()) + 1
        self.count = torch.zeros(bins, dtype=torch.float64).index_add_(
            0, self.index, torch.ones_like(nu.flatten()))
        self.nu = torch.zeros(bins, dtype=torch.float64).index_add_(
            0, self.index, nu.flatten()) / self.count.clamp(min=1.0)
        self.sums = torch.zeros(channels, bins, dtype=torch.float64)
        self.fields = 0

    def add(self, x: Tensor) -> None:
        """x ``[B, C, H, W]``: add the squared coefficients of every field."""
        if tuple(x.shape[-2:]) != self.shape:
            raise ValueError(f"RadialSpectrum: fields {tuple(x.shape[-2:])} on a {self.shape} "
                             "accumulator")
        sq = real_fourier2(x.detach().double().cpu()).square().sum(0).flatten(1)  # [C, H W]
        self.sums.index_add_(1, self.index, sq)
        self.fields += x.shape[0]

    def table(self) -> tuple[tuple[float, ...], tuple[tuple[float, ...], ...]]:
        """``(nu [K], amplitude [C][K])`` (see class doc)."""
        if self.fields == 0:
            raise ValueError("RadialSpectrum: no fields added")
        used = self.count > 0  # bins up to nu = 0.5 hold an axis wavenumber; beyond, maybe none
        nu, count, sums = self.nu[used], self.count[used], self.sums[:, used]
        log_amp = 0.5 * torch.log((sums / (self.fields * count)).clamp(min=1e-300))
        padded = torch.nn.functional.pad(log_amp[:, None], (1, 1), mode="replicate")[:, 0]
        smooth = (padded[:, :-2] + padded[:, 1:-1] + padded[:, 2:]) / 3.0
        amp = smooth.exp()
        amp = torch.maximum(amp, AMPLITUDE_FLOOR * amp.max(1, keepdim=True).values)
        return tuple(nu.tolist()), tuple(tuple(a) for a in amp.tolist())


def _normalised(values: Tensor, patch: tuple[int, int], nu: Sequence[float]) -> Tensor:
    """values [C, K] scaled per channel so that mean s^2 = 1 on the patch's F_R coefficients."""
    on_patch = _interp(nu, values.tolist(), radial_frequency(*patch))
    return values / on_patch.square().mean((1, 2)).sqrt()[:, None]


@dataclass(frozen=True)
class NoiseShape:
    """s(nu) of Sigma^1/2 = F_R^-1 diag(s) F_R (module doc); ``white`` is s = 1.

    ``power``: s = norm (nu + nu0)^-exponent. ``equal_snr``: the table (nu [K],
    amplitude [C][K]), already normalised.
    """

    kind: str = "white"
    exponent: float = 0.0
    nu0: float = 0.0
    norm: float = 1.0
    nu: tuple[float, ...] = ()
    amplitude: tuple[tuple[float, ...], ...] = ()

    @property
    def white(self) -> bool:
        return self.kind == "white"

    def on_grid(self, h: int, w: int) -> Tensor | None:
        """s on the h x w F_R layout, float64 ``[C or 1, h, w]``; None for white noise."""
        return None if self.kind == "white" else self.at(radial_frequency(h, w))

    def at(self, nu: Tensor) -> Tensor:
        """s at the radial frequencies ``nu`` (float64, any shape): ``[C or 1, *nu.shape]``."""
        if self.kind == "white":
            return torch.ones(1, *nu.shape, dtype=torch.float64)
        if self.kind == "power":
            return (self.norm * (nu + self.nu0) ** -self.exponent)[None]
        return _interp(self.nu, self.amplitude, nu)


@dataclass(frozen=True)
class SpectralShift:
    """The log-SNR shift f(t) Delta(nu) of a spectral schedule (module doc); ``none``: 0."""

    kind: str = "none"
    strength: float = 0.0
    nu: tuple[float, ...] = ()
    delta: tuple[tuple[float, ...], ...] = ()

    @property
    def none(self) -> bool:
        return self.kind == "none"

    def on_grid(self, h: int, w: int) -> Tensor | None:
        """Delta on the h x w F_R layout, float64 ``[C or 1, h, w]`` (<= 0); None for none."""
        if self.kind == "none":
            return None
        if self.kind == "blur":
            return (-self.strength * (radial_frequency(h, w) / NU_MAX) ** 2)[None]
        return _interp(self.nu, self.delta, radial_frequency(h, w))


@dataclass(frozen=True)
class SpectralProcess:
    """A noise shape and a spectral schedule; serialised in the checkpoint (``spectral``)."""

    noise: NoiseShape = NoiseShape()
    shift: SpectralShift = SpectralShift()

    @property
    def trivial(self) -> bool:
        """White noise and no spectral schedule: today's process, bit for bit."""
        return self.noise.white and self.shift.none

    def on_grid(self, schedule: NoiseSchedule, h: int, w: int) -> GridProcess:
        return GridProcess(schedule, self.noise.on_grid(h, w), self.shift.on_grid(h, w),
                           self.shift.kind == "blur")

    def to_dict(self) -> dict[str, Any]:
        n, s = self.noise, self.shift
        return {
            "noise": {"kind": n.kind, "exponent": n.exponent, "nu0": n.nu0, "norm": n.norm,
                      "nu": list(n.nu), "amplitude": [list(a) for a in n.amplitude]},
            "schedule": {"kind": s.kind, "strength": s.strength, "nu": list(s.nu),
                         "delta": [list(d) for d in s.delta]},
        }

    @classmethod
    def from_dict(cls, value: Mapping[str, Any], channels: int) -> SpectralProcess:
        """Inverse of :meth:`to_dict`; ValueError naming the first bad entry."""
        try:
            n, s = value["noise"], value["schedule"]
            noise = NoiseShape(str(n["kind"]), float(n["exponent"]), float(n["nu0"]),
                               float(n["norm"]), _floats(n["nu"]),
                               tuple(_floats(a) for a in n["amplitude"]))
            shift = SpectralShift(str(s["kind"]), float(s["strength"]), _floats(s["nu"]),
                                  tuple(_floats(d) for d in s["delta"]))
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"is incomplete ({type(error).__name__}: {error})") from None
        _check_table(noise.kind, NOISE_KINDS, "noise", noise.nu, noise.amplitude, channels,
                     table_kind="equal_snr", positive=True)
        _check_table(shift.kind, SCHEDULE_KINDS, "schedule", shift.nu, shift.delta, channels,
                     table_kind="equal_snr", positive=False)
        if noise.kind == "power" and not (noise.exponent > 0 and noise.nu0 > 0 and noise.norm > 0):
            raise ValueError("noise: power needs exponent, nu0 and norm > 0")
        if shift.kind == "blur" and not shift.strength > 0:
            raise ValueError("schedule: blur needs strength > 0")
        return cls(noise, shift)


def _floats(values: Any) -> tuple[float, ...]:
    out = tuple(float(v) for v in values)
    if not all(math.isfinite(v) for v in out):
        raise ValueError("a value is not finite")
    return out


def _check_table(kind: str, kinds: Mapping[str, bool], name: str, nu: tuple[float, ...],
                 table: tuple[tuple[float, ...], ...], channels: int, *, table_kind: str,
                 positive: bool) -> None:
    if kind not in kinds:
        raise ValueError(f"{name}: kind {kind!r} is not one of {', '.join(kinds)}")
    if kind != table_kind:
        return
    if len(table) != channels or not nu or any(len(row) != len(nu) for row in table):
        raise ValueError(f"{name}: expected a table of {channels} rows of {len(nu)} values")
    if any(b <= a for a, b in pairwise(nu)):
        raise ValueError(f"{name}: its frequencies are not increasing")
    bad = [v for row in table for v in row if (v <= 0 if positive else v > 0)]
    if bad:
        raise ValueError(f"{name}: value {bad[0]} is {'not positive' if positive else '> 0'}")


def make_process(noise: str, schedule: str, channels: int, patch: tuple[int, int],
                 spectrum: RadialSpectrum | None = None) -> SpectralProcess:
    """The process of ``diffusion.noise`` / ``diffusion.spectral_schedule`` for a run whose
    training patches are ``patch`` (h, w); ``spectrum``: of z0 on the training split, needed by
    the ``equal_snr`` options."""
    n_kind, exponent = parse_spectral(noise, NOISE_KINDS, "diffusion.noise")
    s_kind, strength = parse_spectral(schedule, SCHEDULE_KINDS, "diffusion.spectral_schedule")
    table = None
    if "equal_snr" in (n_kind, s_kind):
        if spectrum is None:
            raise ValueError("equal_snr needs the training split's spectrum")
        nu, amp = spectrum.table()
        table = (nu, torch.tensor(amp, dtype=torch.float64))
    shape = NoiseShape()
    if n_kind == "power":
        assert exponent is not None
        nu0 = _lowest(*patch)
        raw = (radial_frequency(*patch) + nu0) ** -exponent
        shape = NoiseShape("power", exponent, nu0, float(raw.square().mean().rsqrt()))
    elif n_kind == "equal_snr":
        assert table is not None
        amp = _normalised(table[1], patch, table[0])
        shape = NoiseShape("equal_snr", nu=table[0], amplitude=tuple(map(tuple, amp.tolist())))
    shift = SpectralShift()
    if s_kind == "blur":
        shift = SpectralShift("blur", float(strength or 0.0))
    elif s_kind == "equal_snr":
        assert table is not None
        nu, amp = table
        amp = amp / shape.at(torch.tensor(nu, dtype=torch.float64))  # the whitened variable's
        delta = torch.log(amp.min(1, keepdim=True).values / amp)
        shift = SpectralShift("equal_snr", nu=nu, delta=tuple(map(tuple, delta.tolist())))
    return SpectralProcess(shape, shift)


@dataclass(frozen=True, eq=False)
class CoefficientSchedule:
    """Per-coefficient schedule ab_t(nu) on one grid: the reference schedule's log-SNR shifted by
    f(t) Delta(nu) (module doc). Samplers given one run on F_R coefficients
    (:func:`weather_sr.core.spectral_sampling.sample_process` arranges it).

    Attributes:
        reference: the shared schedule (its integer grid and T).
        delta: Delta float64 ``[C or 1, h, w]`` (<= 0).
        time_scaled: f(t) = t / T (blur), else f = 1.
    """

    reference: NoiseSchedule
    delta: Tensor
    time_scaled: bool = False

    @property
    def T(self) -> int:  # noqa: N802 (the schedules' name for the number of steps)
        return self.reference.T

    def log_snr(self, t: int | Tensor) -> Tensor:
        """lambda_t(nu): float64 ``[C|1, h, w]`` for an int t, ``[B, C|1, h, w]`` for t ``[B]``."""
        tt = torch.as_tensor(t, dtype=torch.long)
        lam = self.reference.log_snr()[tt].view(*tt.shape, 1, 1, 1)
        factor = tt.double().view(*tt.shape, 1, 1, 1) / self.T if self.time_scaled else 1.0
        return lam + factor * self.delta

    def alpha_bar(self, t: int | Tensor) -> Tensor:
        """ab_t(nu) = sigmoid(2 lambda_t(nu)), shaped as :meth:`log_snr` (1 at t = 0)."""
        return torch.sigmoid(2.0 * self.log_snr(t))

    def q_sample(self, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """x0, noise ``[B, C, h, w]`` (pixel space), t int64 ``[B]`` -> x_t (pixel space)."""
        lam = self.log_snr(t.cpu())
        a = torch.sigmoid(2.0 * lam).sqrt().to(x0)
        s = torch.sigmoid(-2.0 * lam).sqrt().to(x0)
        return inverse_real_fourier2(a * real_fourier2(x0) + s * real_fourier2(noise))

    def eps_to_x0(self, x_t: Tensor, t: Tensor, eps: Tensor) -> Tensor:
        """x0 = F_R^-1 ((F_R x_t - sqrt(1 - ab) F_R eps) / sqrt(ab)), pixel space."""
        lam = self.log_snr(t.cpu())
        inv_a = torch.sigmoid(2.0 * lam).rsqrt().to(x_t)
        ratio = torch.exp(-lam).to(x_t)  # sqrt(1 - ab) / sqrt(ab)
        return inverse_real_fourier2(inv_a * real_fourier2(x_t) - ratio * real_fourier2(eps))


@dataclass(frozen=True, eq=False)
class GridProcess:
    """A :class:`SpectralProcess` on one h x w grid: s and Delta as float64 ``[C|1, h, w]``."""

    schedule: NoiseSchedule
    s: Tensor | None
    delta: Tensor | None
    time_scaled: bool = False

    def colour(self, u: Tensor) -> Tensor:
        """Sigma^1/2 u = F_R^-1 (s F_R u), ``[B, C, h, w]`` (u itself for white noise)."""
        if self.s is None:
            return u
        return inverse_real_fourier2(self.s.to(u) * real_fourier2(u))

    def whiten(self, x: Tensor) -> Tensor:
        """Sigma^-1/2 x = F_R^-1 (F_R x / s), ``[B, C, h, w]``."""
        if self.s is None:
            return x
        return inverse_real_fourier2(real_fourier2(x) / self.s.to(x))

    @property
    def coefficients(self) -> CoefficientSchedule | None:
        """The per-coefficient schedule, or None for the shared one."""
        if self.delta is None:
            return None
        return CoefficientSchedule(self.schedule, self.delta, self.time_scaled)


def colour_gains(spec: str, schedule: NoiseSchedule, h: int, w: int
                 ) -> Callable[[int], Tensor] | None:
    """Gains of coloured-noise sampling (``--noise-colour``): ``gain(t)`` -> g_t(nu), float64
    ``[h, w]`` for a step t >= 1, computed when asked (a sampler uses few of the T steps); None
    for ``white``.

    ``power:Q`` assumes a data power spectrum P(nu) proportional to (nu + nu0)^-2Q with mean 1
    over the coefficients (nu0 the grid's lowest non-zero frequency). The fraction of a
    coefficient's variance that is still unresolved at the reference schedule's SNR_t is
    f_t = 1 / (1 + SNR_t P); the noise injected towards step t gets g_t^2 = f_t / mean(f_t): the
    same total power as white noise, moved to the frequencies that are not yet resolved (white
    at t = T, where SNR ~ 0).
    """
    kind, q = parse_spectral(spec, COLOUR_KINDS, "--noise-colour")
    if kind == "white":
        return None
    assert q is not None
    nu = radial_frequency(h, w)
    power = (nu + _lowest(h, w)) ** (-2.0 * q)
    power = power / power.mean()

    def gain(t: int) -> Tensor:
        abar = float(schedule.alpha_bars[t])
        f = 1.0 / (1.0 + abar / (1.0 - abar) * power)
        return (f / f.mean()).sqrt()

    return gain
