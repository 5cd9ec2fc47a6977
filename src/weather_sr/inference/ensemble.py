"""Batched, tiled ensemble sampling of whole fields (the engine of ``weather-sr downscale``).

Seeds. Every (field, member) pair has its own ``torch.Generator`` seeded with
:func:`member_seed` (seed, global field index, member index). Its initial noise ``x_T`` and, for
stochastic samplers, every per-step noise come from that generator alone, drawn on the CPU and then
moved to the device. So a member is the same whatever ``batch_size``, tiling, the order of the
work or the device (up to floating-point differences of the network itself).

Stochastic samplers (ancestral; DDIM with eta > 0) draw fresh noise at every step: they get the
list of the chunk's generators (:mod:`weather_sr.core.sampling` draws row b's noise from
``generator[b]`` alone), so the network calls stay batched and the noise streams do not depend
on the batch.

Batching. Pairs are processed field-major in chunks of ``batch_size``; the tiled denoiser sends at
most ``batch_size`` tile-samples per network call, so peak model memory is bounded by
``batch_size x tile²`` whatever the domain.

Several processes. Under ``torchrun`` chunk k of the pairs runs on rank k mod world size and the
ranks then sum their zero-filled results (:func:`weather_sr.distributed.share_sum`): every rank
holds the same ensemble, and each chunk is the one a single process would have sampled.
"""

from __future__ import annotations

import operator
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor

from weather_sr import distributed
from weather_sr.core import sampling
from weather_sr.core.process import Denoiser, project_x0
from weather_sr.core.sampler_defaults import (
    COHERENCE,
    CONSTRAINTS,
    DEFAULT_COHERENCE,
    DEFAULT_CONSTRAINT,
    DEFAULT_PRECISION,
)
from weather_sr.core.spectral import SpectralProcess
from weather_sr.core.spectral_options import COLOUR_KINDS, DEFAULT_COLOUR, parse_spectral
from weather_sr.core.spectral_sampling import sample_process
from weather_sr.errors import UserError
from weather_sr.inference.coherence import NoiseChain, resolve_rho, time_stride
from weather_sr.inference.constraint import BlockConstraint, block_constraint, check_constraint
from weather_sr.inference.precision import check_precision, resolve_precision, with_precision
from weather_sr.inference.seeds import member_seed, pair_generators
from weather_sr.inference.tiling import TiledDenoiser

__all__ = ["SamplingOptions", "member_seed", "sample_ensemble"]

Progress = Callable[[int, int], None]
Wrap = Callable[[Denoiser, Sequence[int]], Denoiser]  # (denoiser, the chunk's fields) -> denoiser


class SampleModel(Protocol):
    """What sampling needs from a model (:class:`weather_sr.model.DownscalingModel` has it)."""

    channels: int
    schedule: Any
    spectral: SpectralProcess | None
    target: str
    regression: Any

    @property
    def denoiser(self) -> Denoiser: ...
    def base(self, cond: Tensor) -> Tensor: ...
    def condition(self, cond: Tensor, base: Tensor | None = None) -> Tensor: ...
    def unscale_target(self, z0: Tensor) -> Tensor: ...


@dataclass(frozen=True)
class SamplingOptions:
    """How to sample: sampler name, steps, eta, seed, ensemble size, batching, tiling, precision.

    The one validator of sampling options (the CLI's downscale and evaluate, the Python API, the
    demo): checked on creation, each a UserError naming the option as the CLI does, whether or
    not the chosen sampler uses it: ``sampler`` one of ``weather_sr.core.sampling.SAMPLER_NAMES``;
    ``steps`` an integer >= 1 (<= T is checked when sampling, where T is known; ancestral runs
    all T steps); ``eta`` in [0, 1] (used by ddim only); ``seed`` in 0 .. 2**63 - 1;
    ``members`` and ``batch_size`` >= 1; ``tile`` None, 0 (both: no tiling) or positive;
    ``overlap`` >= 0 (an overlap >= tile is clamped to tile - 1). What depends on the model
    (tile a multiple of the UNet's size multiple) is :func:`options_for`'s. ``precision``: one
    of ``core.sampler_defaults.PRECISIONS`` (``"auto"`` resolved per device by
    :func:`weather_sr.inference.precision.resolve_precision`). ``noise_colour``: ``white`` or
    ``power:Q`` (coloured-noise sampling, docs/method.md §9), only with a sampler that injects
    noise (ancestral; ddim with eta > 0). ``constrain``: one of
    ``core.sampler_defaults.CONSTRAINTS`` (the members' block means against the LR input,
    :mod:`weather_sr.inference.constraint`; what the model allows is :func:`options_for`'s).
    ``coherent``: ``off`` (independent fields) or ``noise`` (each member's initial noise an
    AR(1) over the times with correlation ``rho`` in [0, 1), None: the checkpoint's;
    :mod:`weather_sr.inference.coherence`).
    """

    sampler: str = sampling.DEFAULT_SAMPLER  # defaults: the one set in weather_sr.core.sampling
    steps: int = sampling.DEFAULT_STEPS
    eta: float = sampling.DEFAULT_ETA
    seed: int = 0
    members: int = 1
    batch_size: int = 8
    tile: int | None = None  # None: the whole field in one network call
    overlap: int = 32
    periodic_x: bool = False
    pad_multiple: int = 1  # network input sizes must be multiples of this (UNet levels)
    precision: str = DEFAULT_PRECISION
    noise_colour: str = DEFAULT_COLOUR
    constrain: str = DEFAULT_CONSTRAINT
    coherent: str = DEFAULT_COHERENCE
    rho: float | None = None  # None: the checkpoint's measured detail lag-1 (coherence)

    def __post_init__(self) -> None:
        from weather_sr.config import check_seed

        if self.sampler not in sampling.SAMPLER_NAMES:
            raise UserError(f"--sampler {self.sampler!r}: choose one of "
                            f"{', '.join(sampling.SAMPLER_NAMES)}")
        for option, value in (("--steps", self.steps), ("--members", self.members),
                              ("--batch-size", self.batch_size)):
            if not _is_int(value, 1):
                raise UserError(f"{option} {value!r}: give a positive integer")
        if isinstance(self.eta, bool) or not isinstance(self.eta, int | float) or not (
                0.0 <= self.eta <= 1.0):
            raise UserError(f"--eta {self.eta!r}: give a value between 0 and 1")
        try:
            check_seed(operator.index(self.seed))
        except TypeError:
            raise UserError(f"--seed {self.seed!r}: give an integer") from None
        if self.tile is not None and not _is_int(self.tile, 0):
            raise UserError(f"--tile {self.tile!r}: give a positive tile size in pixels")
        if not _is_int(self.overlap, 0):
            raise UserError(f"--overlap {self.overlap!r}: give a non-negative number of pixels")
        check_precision(self.precision)
        if self.constrain not in CONSTRAINTS:
            raise UserError(f"--constrain {self.constrain!r}: choose one of "
                            f"{', '.join(CONSTRAINTS)}")
        try:
            colour, _ = parse_spectral(self.noise_colour, COLOUR_KINDS, "--noise-colour")
        except ValueError as error:
            raise UserError(str(error)) from None
        if self.coherent not in COHERENCE:
            raise UserError(f"--coherent {self.coherent!r}: choose one of {', '.join(COHERENCE)}")
        if self.rho is not None:
            if isinstance(self.rho, bool) or not isinstance(self.rho, int | float) or not (
                    0.0 <= self.rho < 1.0):
                raise UserError(f"--rho {self.rho!r}: give a correlation in [0, 1)")
            if self.coherent != "noise":
                raise UserError(f"--rho {self.rho}: the correlation of --coherent noise; add "
                                "--coherent noise")
        if colour != DEFAULT_COLOUR and not sampling.uses_injected_noise(self.sampler, self.eta):
            raise UserError(f"--noise-colour {self.noise_colour}: shapes the noise that a "
                            "stochastic sampler injects; use --sampler ancestral, or ddim with "
                            f"--eta > 0 (--sampler {self.sampler} --eta {self.eta} injects none)")


def options_for(model: Any, options: SamplingOptions, *, periodic: bool) -> SamplingOptions:
    """``options`` with the UNet's size multiple and the grid's periodicity filled in, after
    checking ``tile``, ``overlap`` and ``constrain`` against the model (UserError naming the
    option)."""
    check_constraint(model, options.constrain)
    if options.coherent != DEFAULT_COHERENCE and is_mean(model):
        raise UserError(f"--coherent {options.coherent}: a regression model gives one "
                        "deterministic field per time, with no noise to correlate; leave it out")
    levels = int(getattr(getattr(model, "net", None), "levels", 1) or 1)
    multiple = 2 ** (levels - 1)
    if options.tile:
        if options.tile < multiple or options.tile % multiple:
            raise UserError(f"--tile {options.tile}: must be a multiple of {multiple} "
                            f"(2**(levels-1) for this {levels}-level UNet)")
        if not 0 <= options.overlap < options.tile:
            raise UserError(f"--overlap {options.overlap}: must lie in 0..{options.tile - 1}")
        if options.overlap < 2 * multiple:
            warnings.warn(f"--overlap {options.overlap} is small for a {levels}-level UNet; "
                          f"seams may show (use >= {4 * multiple})", stacklevel=2)
    return replace(options, pad_multiple=multiple, periodic_x=periodic)


def _is_int(value: Any, low: int) -> bool:
    """An integer (anything with ``__index__`` but a bool) >= low."""
    if isinstance(value, bool):
        return False
    try:
        return operator.index(value) >= low
    except TypeError:
        return False


def sample_pairs(
    denoiser: Denoiser, y: Tensor, schedule: Any, pairs: Sequence[tuple[int, int]], *,
    channels: int, options: SamplingOptions, progress: Progress | None = None,
    field_offset: int = 0, device: torch.device | str | None = None,
    process: SpectralProcess | None = None, wrap: Wrap | None = None,
    chain: NoiseChain | None = None,
) -> Tensor:
    """Sample x0 for each (field, member) pair.

    Args:
        denoiser: ``(x_t [B, C, H, W], y [B, Cy, H, W], t [B]) -> eps`` (already tiled if wanted).
        y: network conditions ``[N, Cy, H, W]`` (may stay on the CPU: each chunk is moved to
            ``device``, default ``y.device``, where the sampler then runs).
        pairs: (field, member) with field indexing ``y``; seeds use ``field + field_offset``.
        process: the model's forward process (None: white noise, shared schedule).
        wrap: ``wrap(denoiser, fields)`` is the denoiser of a chunk of pairs of those fields
            (indexing ``y``): the x0 constraint of ``lr-mean-x0``; None: the denoiser itself.
        chain: the members' initial noise correlated in time (:mod:`.coherence`; ``pairs``
            then field-major, the fields in time order); None: independent.

    Returns:
        ``[len(pairs), C, H, W]`` float32 on the CPU, in the order of ``pairs`` (on every rank of
        a process group, each chunk sampled by one rank).
    """
    name, steps = options.sampler, options.steps
    if sampling.uses_steps(name):
        steps = operator.index(steps)  # an int (checked by SamplingOptions)
        if steps > schedule.T:
            raise UserError(f"--steps {steps}: the {name} sampler takes 1..{schedule.T} steps "
                            "(T, the model's number of diffusion steps)")
    ts = sampling.sampler_timesteps(name, schedule, steps)
    fn = sampling.SAMPLERS[name]
    kwargs = sampling.sampler_kwargs(name, eta=options.eta)
    chunk = max(1, options.batch_size)
    h, w = y.shape[-2:]
    rank, world = distributed.current()
    out = torch.zeros((len(pairs), channels, h, w), dtype=torch.float32)
    for k, start in enumerate(range(0, len(pairs), chunk)):
        if k % world != rank and chain is None:  # a chain follows every chunk on every rank
            continue
        part = list(pairs[start : start + chunk])
        numbered = [(f + field_offset, m) for f, m in part]
        gens = pair_generators(options.seed, numbered)
        shape = (len(part), channels, h, w)
        if chain is not None:
            x_T = chain.initial_noise(numbered, sampling.randn_like_batch(shape, gens, "cpu",
                                                                          y.dtype))
            if k % world != rank:
                continue
        fields = [f for f, _ in part]
        y_chunk = y[fields].to(device or y.device)
        if chain is None:
            x_T = sampling.randn_like_batch(shape, gens, y_chunk.device, y_chunk.dtype)
        else:
            x_T = x_T.to(y_chunk.device, y_chunk.dtype)
        den = denoiser if wrap is None else wrap(denoiser, fields)
        # rank 0's bar stands for all ranks' work
        x0 = sample_process(fn, den, y_chunk, schedule, ts, process, x_T=x_T,
                            generator=gens, noise_colour=options.noise_colour,
                            progress=_scaled(progress if rank == 0 else None, len(part) * world),
                            **kwargs)
        out[start : start + len(part)] = x0.detach().float().cpu()
    return distributed.share_sum(out)


def _scaled(progress: Progress | None, n: int) -> Progress | None:
    """Forward ``progress(i, n_steps)`` once per pair in the chunk (a bar counts pair-steps)."""
    if progress is None:
        return None

    def call(i: int, n_steps: int) -> None:
        for _ in range(n):
            progress(i, n_steps)

    return call


def tiled(denoiser: Denoiser, options: SamplingOptions) -> Denoiser:
    """``denoiser`` tiled when ``options.tile`` is set (else padded/batched only)."""
    tile = options.tile or 1 << 30  # "no tiling": one tile bigger than any domain
    return TiledDenoiser(denoiser, tile, min(options.overlap, max(tile - 1, 0)),
                         periodic_x=options.periodic_x, max_batch=options.batch_size,
                         pad_multiple=options.pad_multiple)


def model_base(model: SampleModel, cond: Tensor, options: SamplingOptions) -> Tensor:
    """Base field ``[N, C, H, W]`` (what the diffusion target is added to), tiled for CorrDiff."""
    if model.target != "regression_residual" or model.regression is None:
        return model.base(cond)
    return regression_prediction(model.regression, cond, options)


def noise_chain(model: SampleModel, options: SamplingOptions, times: np.ndarray | None = None
                ) -> NoiseChain | None:
    """The :class:`NoiseChain` of ``options.coherent`` "noise" (None when off) for fields at
    ``times`` (all of the run's, in order: their members make the stride)."""
    if options.coherent != "noise" or is_mean(model):
        return None
    return NoiseChain(options.seed, resolve_rho(model, options.rho, model.channels),
                      time_stride(times))


def is_mean(model: Any) -> bool:
    """Mean mode: a regression model gives its one deterministic field (no ``member`` dim)."""
    return getattr(model, "kind", "diffusion") == "regression"


def regression_prediction(reg: Any, cond: Tensor, options: SamplingOptions) -> Tensor:
    """A regression model's prediction ``[N, C, H, W]`` (normalised) for ``cond``
    ``[N, Cy, H, W]``, tiled as ``options`` say, in float32 (as evaluate scores it)."""

    def predict(x: Tensor, y: Tensor, t: Tensor, *, wrap_x: bool = True) -> Tensor:
        del x, t
        return reg.predict(y, wrap_x=wrap_x)

    tiler = tiled(predict, options)
    dummy = cond.new_zeros((cond.shape[0], reg.channels, *cond.shape[-2:]))
    return tiler(dummy, cond, torch.zeros(cond.shape[0], dtype=torch.long, device=cond.device))


def x0_wrap(model: SampleModel, constraint: BlockConstraint, base: Tensor) -> Wrap:
    """``lr-mean-x0``: the denoiser of a chunk whose x0 estimate, as the full field base + s z0
    of the chunk's fields, is corrected to the LR block means (on the whole field, tiled or not)."""
    def wrap(denoiser: Denoiser, fields: Sequence[int]) -> Denoiser:
        def project(z0: Tensor) -> Tensor:
            return constraint.residual(z0, fields, base[list(fields)], model.target_scale)

        return project_x0(denoiser, model.schedule, project)

    return wrap


@torch.no_grad()
def sample_ensemble(
    model: SampleModel, cond: Tensor, options: SamplingOptions, *,
    device: torch.device | str = "cpu", progress: Progress | None = None, field_offset: int = 0,
    lr: np.ndarray | None = None, lat: np.ndarray | None = None,
    chain: NoiseChain | None = None,
) -> Tensor:
    """Ensemble of normalised HR fields for normalised conditions.

    Args:
        cond: ``[N, C, H, W]`` normalised LR interpolated onto the HR grid (CPU is fine).
        field_offset: global index of ``cond[0]`` (so a field's members do not depend on how the
            input was split into calls).
        lr, lat: for ``options.constrain``: the targets' LR ``[N, C, h, w]`` in physical units
            (NaN: missing) and the HR latitudes ``[H]`` when it is an area-weighted block mean
            (:func:`.constraint.block_constraint`).
        chain: with ``options.coherent`` "noise", the chain of the run
            (:func:`noise_chain`, kept from one call to the next); None: a new one.

    Returns:
        ``[N, M, C, H, W]`` float32 on the CPU (normalised; add nothing, denormalise only);
        for a regression model (mean mode) its one deterministic field, ``M = 1``, whatever
        ``options.members`` (the sampler's options unused; ``constrain`` applies).
    """
    constraint = None
    if options.constrain != CONSTRAINTS[0]:
        check_constraint(model, options.constrain)
        constraint = block_constraint(model, lr, options.periodic_x, lat)
    if is_mean(model):  # one field, no noise
        x0 = torch.cat([regression_prediction(model, cond[a : a + options.batch_size].to(device),
                                              options).float().cpu()
                        for a in range(0, cond.shape[0], max(1, options.batch_size))])[:, None]
        pairs = [(f, 0) for f in range(cond.shape[0])]
    else:
        if options.coherent == "noise" and chain is None:
            chain = noise_chain(model, options)
        x0, pairs = _sampled(model, cond, options, device, progress, field_offset, constraint,
                             chain)
    if constraint is None:
        return x0
    flat, step = x0.flatten(0, 1), max(1, options.batch_size)  # whole fields (after tiling)
    return torch.cat([constraint.normalised(flat[a : a + step], [f for f, _ in pairs[a : a + step]])
                      for a in range(0, len(pairs), step)]).view_as(x0)


def _sampled(
    model: SampleModel, cond: Tensor, options: SamplingOptions, device: torch.device | str,
    progress: Progress | None, field_offset: int, constraint: BlockConstraint | None,
    chain: NoiseChain | None,
) -> tuple[Tensor, list[tuple[int, int]]]:
    """A diffusion model's ensemble ``[N, M, C, H, W]`` (before the final constraint) and its
    (field, member) pairs in the order of its flattened rows."""
    n, m = cond.shape[0], options.members
    bases, conds = [], []
    for s in range(0, n, max(1, options.batch_size)):
        c = cond[s : s + options.batch_size].to(device)
        b = model_base(model, c, options)
        bases.append(b.float().cpu())
        conds.append(model.condition(c, b).cpu())
    base = torch.cat(bases)
    y = torch.cat(conds)
    pairs = [(f, k) for f in range(n) for k in range(m)]
    wrap = x0_wrap(model, constraint, base) if options.constrain == "lr-mean-x0" else None
    denoiser = with_precision(model.denoiser, resolve_precision(options.precision, device), device)
    z0 = sample_pairs(tiled(denoiser, options), y, model.schedule, pairs,
                      channels=model.channels, options=options, progress=progress,
                      field_offset=field_offset, device=device,
                      process=model.spectral, wrap=wrap, chain=chain)
    return model.unscale_target(z0).view(n, m, *z0.shape[1:]) + base[:, None], pairs
