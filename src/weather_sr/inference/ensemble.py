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
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor

from weather_sr import distributed
from weather_sr.core import sampling
from weather_sr.core.process import Denoiser, project_x0
from weather_sr.core.sampler_defaults import CONSTRAINTS
from weather_sr.core.spectral import SpectralProcess
from weather_sr.core.spectral_sampling import sample_process
from weather_sr.errors import UserError
from weather_sr.inference.coherence import NoiseChain, PreviousState, resolve_rho, time_stride
from weather_sr.inference.constraint import BlockConstraint, block_constraint, check_constraint
from weather_sr.inference.options import (
    SamplingOptions,
    is_mean,
    options_for,
    previous_slice,
    resolve_coherence,
)
from weather_sr.inference.precision import resolve_precision, with_precision
from weather_sr.inference.seeds import member_seed, pair_generators
from weather_sr.inference.tiling import TiledDenoiser

__all__ = ["SamplingOptions", "is_mean", "member_seed", "options_for", "sample_ensemble"]

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


def sample_pairs(
    denoiser: Denoiser, y: Tensor, schedule: Any, pairs: Sequence[tuple[int, int]], *,
    channels: int, options: SamplingOptions, progress: Progress | None = None,
    field_offset: int = 0, device: torch.device | str | None = None,
    process: SpectralProcess | None = None, wrap: Wrap | None = None,
    chain: NoiseChain | None = None, rows: Sequence[int] | None = None,
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
        rows: the row of ``y`` of each pair (None: its field), when the members of a field
            have conditions of their own (autoregressive sampling).

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
        mine = k % world == rank
        if not mine and chain is None:  # a chain follows every chunk on every rank
            continue
        part = list(pairs[start : start + chunk])
        numbered = [(f + field_offset, m) for f, m in part]
        gens = pair_generators(options.seed, numbered)
        # drawn on the CPU generators (randn_like_batch draws there whatever the device)
        x_T = sampling.randn_like_batch((len(part), channels, h, w), gens, "cpu", y.dtype)
        if chain is not None:
            x_T = chain.initial_noise(numbered, x_T)
        if not mine:
            continue
        fields = [f for f, _ in part]
        y_chunk = y[fields if rows is None else list(rows[start : start + chunk])]
        y_chunk = y_chunk.to(device or y.device)
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


def previous_state(model: SampleModel, options: SamplingOptions,
                   times: np.ndarray | None = None) -> PreviousState | None:
    """The :class:`PreviousState` of autoregressive sampling (None unless ``options.coherent``
    resolves to "ar") for fields at ``times`` (their members make the stride)."""
    if is_mean(model) or resolve_coherence(model, options.coherent) != "ar":
        return None
    return PreviousState(model.meta.make_normalizer(), time_stride(times))


def noise_chain(model: SampleModel, options: SamplingOptions, times: np.ndarray | None = None
                ) -> NoiseChain | None:
    """The :class:`NoiseChain` of ``options.coherent`` "noise" (None when off) for fields at
    ``times`` (all of the run's, in order: their members make the stride)."""
    if is_mean(model) or resolve_coherence(model, options.coherent) != "noise":
        return None
    return NoiseChain(options.seed, resolve_rho(model, options.rho, model.channels),
                      time_stride(times))


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
    chain: NoiseChain | None = None, state: PreviousState | None = None,
    missing: np.ndarray | None = None,
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
        state, missing: with "ar", the members' previous fields (:func:`previous_state`, kept
            from one call to the next; None: a new one, for fields from the first) and where the
            output will be missing (bool ``[N, 1 or M, C, H, W]``, None: nowhere).

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
        coherent = resolve_coherence(model, options.coherent)
        if coherent == "ar":  # constrained as it goes
            state = state or previous_state(model, options)
            return _sampled_in_time(model, cond, options, device, progress, field_offset,
                                    constraint, state, missing)
        if coherent == "noise" and chain is None:
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
    base, y = _bases(model, cond, options, device)
    pairs = [(f, k) for f in range(n) for k in range(m)]
    wrap = x0_wrap(model, constraint, base) if options.constrain == "lr-mean-x0" else None
    z0 = sample_pairs(_denoiser(model, options, device), y, model.schedule, pairs,
                      channels=model.channels, options=options, progress=progress,
                      field_offset=field_offset, device=device,
                      process=model.spectral, wrap=wrap, chain=chain)
    return model.unscale_target(z0).view(n, m, *z0.shape[1:]) + base[:, None], pairs


def _bases(model: SampleModel, cond: Tensor, options: SamplingOptions,
           device: torch.device | str) -> tuple[Tensor, Tensor]:
    """The base fields ``[N, C, H, W]`` and the network conditions ``[N, Cy, H, W]``."""
    bases, conds = [], []
    for s in range(0, cond.shape[0], max(1, options.batch_size)):
        c = cond[s : s + options.batch_size].to(device)
        b = model_base(model, c, options)
        bases.append(b.float().cpu())
        conds.append(model.condition(c, b).cpu())
    return torch.cat(bases), torch.cat(conds)


def _denoiser(model: SampleModel, options: SamplingOptions, device: torch.device | str
              ) -> Denoiser:
    return tiled(with_precision(model.denoiser, resolve_precision(options.precision, device),
                                device), options)


def _sampled_in_time(
    model: SampleModel, cond: Tensor, options: SamplingOptions, device: torch.device | str,
    progress: Progress | None, field_offset: int, constraint: BlockConstraint | None,
    state: PreviousState, missing: np.ndarray | None,
) -> Tensor:
    """The ensemble ``[N, M, C, H, W]`` of an autoregressive model, field after field: each
    member's condition holds its own previous field (``state``), constrained as it goes."""
    n, m = cond.shape[0], options.members
    base, y = _bases(model, cond, options, device)
    channels = previous_slice(model)
    wrap = x0_wrap(model, constraint, base) if options.constrain == "lr-mean-x0" else None
    denoiser = _denoiser(model, options, device)
    out = torch.empty((n, m, model.channels, *cond.shape[-2:]), dtype=torch.float32)
    for f in range(n):
        y_f = y[f : f + 1].repeat(m, 1, 1, 1)
        before = state.previous(f + field_offset)
        if before is not None:
            y_f[:, channels] = before.to(y_f.dtype)
        z0 = sample_pairs(denoiser, y_f, model.schedule, [(f, k) for k in range(m)],
                          channels=model.channels, options=options, progress=progress,
                          field_offset=field_offset, device=device, process=model.spectral,
                          wrap=wrap, rows=range(m))
        x = model.unscale_target(z0) + base[f]
        if constraint is not None:
            x = constraint.normalised(x, [f] * m)
        out[f] = x
        state.settle(f + field_offset, x, None if missing is None else
                     torch.from_numpy(np.asarray(missing[f])))
    return out
