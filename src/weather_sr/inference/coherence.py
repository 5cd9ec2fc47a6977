"""Temporally coherent ensembles: by correlated noise (``--coherent noise``), or
autoregressively (``--coherent ar``, :class:`PreviousState`, below).

Each member's initial noise is an AR(1) process over the times:

    x_T(f, m) = rho x_T(f - stride, m) + sqrt(1 - rho²) eps(f, m),      x_T(f, m) = eps(f, m)
    for f < stride,

where ``eps(f, m)`` is exactly the noise an independent run gives pair (field f, member m)
(the first draw of its own generator, :func:`weather_sr.inference.seeds.member_seed`), f is
the field's global index in time order and ``stride`` the fields per time (the input's members
of one time are consecutive fields). So x_T stays standard normal at every time, consecutive
times of a member are correlated by ``rho`` (one per channel), and ``rho = 0`` is the
independent ensemble. A deterministic sampler (the default dpmpp_2m, ddim with eta 0) maps
correlated noise to correlated details; a stochastic one still injects independent noise at
every step, so its members are less coherent.

Chunks and resume. A :class:`NoiseChain` carries the last ``stride`` fields' x_T from one chunk
of fields to the next. A chain asked for a field whose predecessor it does not hold (a run
resumed at field f, a call starting at ``field_offset`` f) rebuilds it by drawing eps of every
earlier field of each member again (random numbers only, no network) with the same float32
operations in the same order, so a chunked or resumed run gives bit for bit the x_T of one
uninterrupted pass.

The default ``rho`` is the checkpoint's ``detail_lag1``: the lag-1 autocorrelation, over the
training split's consecutive times, of the truth's detail (the HR field minus its block-mean
LR interpolated back), per channel (:func:`weather_sr.data.temporal.detail_lag1`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from weather_sr.errors import UserError
from weather_sr.inference.seeds import member_seed


def resolve_rho(model: Any, rho: float | None, channels: int) -> Tensor:
    """float32 ``[C]``: ``rho`` for every channel, or the checkpoint's ``detail_lag1`` (None),
    clipped to [0, 0.999] (a detail anticorrelated in time gets independent noise); UserError
    when the checkpoint has none (trained before it was measured)."""
    if rho is not None:
        return torch.full((channels,), float(rho), dtype=torch.float32)
    meta = getattr(model, "meta", None)
    lag1 = getattr(meta, "detail_lag1", None)
    if lag1 is None:
        raise UserError("--coherent noise: this checkpoint has no measured lag-1 "
                        "autocorrelation of its training data (trained with an older "
                        "version): give --rho (e.g. 0.8)")
    return torch.tensor([min(max(float(v), 0.0), 0.999) for v in lag1], dtype=torch.float32)


def time_stride(times: np.ndarray | None) -> int:
    """Fields per time of fields in time order (their members consecutive): the count of the
    first time; 1 without times."""
    if times is None or len(times) == 0:
        return 1
    t = np.asarray(times)
    return int(np.sum(t == t[0]))


class NoiseChain:
    """The AR(1) initial noise of the module docstring for generator seed ``seed``,
    correlation ``rho`` [C] and ``stride`` fields per time."""

    def __init__(self, seed: int, rho: Tensor, stride: int = 1) -> None:
        if stride < 1:
            raise ValueError(f"stride {stride}: expected >= 1")
        self.seed, self.stride = int(seed), int(stride)
        self.rho = rho.to(torch.float32).view(-1, 1, 1)
        self.keep = torch.sqrt(1 - self.rho**2)
        self._held: dict[tuple[int, int], Tensor] = {}  # (field, member) -> x_T [C, H, W]

    def initial_noise(self, pairs: Sequence[tuple[int, int]], eps: Tensor) -> Tensor:
        """x_T ``[B, C, H, W]`` (float32, CPU) of (global field, member) ``pairs`` in
        field-major order, from their own draws ``eps`` [B, C, H, W]."""
        out = torch.empty_like(eps, dtype=torch.float32, device="cpu")
        for b, (f, m) in enumerate(pairs):
            out[b] = self._next(f, m, eps[b].to("cpu", torch.float32))
        newest = max((f for f, _ in pairs), default=0)
        self._held = {k: v for k, v in self._held.items() if k[0] > newest - 2 * self.stride}
        return out

    def _next(self, f: int, m: int, eps: Tensor) -> Tensor:
        before = f - self.stride
        if before < 0:
            x = eps
        else:
            prev = self._held.get((before, m))
            if prev is None:
                prev = self._rebuilt(before, m, eps.shape)
            x = self.rho * prev + self.keep * eps
        self._held[(f, m)] = x
        return x

    def _rebuilt(self, f: int, m: int, shape: torch.Size) -> Tensor:
        """x_T of (f, m) from the draws of fields f mod stride, ..., f - stride, f."""
        x = None
        for g in range(f % self.stride, f + 1, self.stride):
            gen = torch.Generator().manual_seed(member_seed(self.seed, g, m))
            eps = torch.randn(tuple(shape), generator=gen, dtype=torch.float32)
            x = eps if x is None else self.rho * x + self.keep * eps
        assert x is not None
        return x


class PreviousState:
    """The members' own previous fields for autoregressive sampling (``--coherent ar``, a model
    trained with ``data.previous``): field f's condition holds field f - ``stride``'s members.

    A field's state is its members as written: denormalised to float32 (NaN where the output is
    missing), then normalised again with NaN as 0 (:meth:`settle`), so that a run resumed from
    its output (:meth:`put` of the fields read back) continues exactly as an uninterrupted one.
    The first ``stride`` fields have none: their previous channels are zeros, as for a first
    time in training."""

    def __init__(self, normalizer: Any, stride: int = 1) -> None:
        self.normalizer, self.stride = normalizer, int(stride)
        self._held: dict[int, Tensor] = {}  # field -> [M, C, H, W] normalised

    def previous(self, f: int) -> Tensor | None:
        """Field ``f - stride``'s members ``[M, C, H, W]`` (None for a first field)."""
        if f < self.stride:
            return None
        if f - self.stride not in self._held:
            raise UserError(f"--coherent ar: field {f} needs the members of field "
                            f"{f - self.stride}, which this run has not sampled or read back")
        return self._held[f - self.stride]

    def put(self, f: int, fields: np.ndarray | Tensor) -> None:
        """Hold field ``f``'s members as written: physical float32 ``[M, C, H, W]``."""
        z = self.normalizer.normalise(torch.as_tensor(fields).double())
        self._held[f] = torch.nan_to_num(z, nan=0.0).float()
        self._held = {k: v for k, v in self._held.items() if k > f - 2 * self.stride}

    def settle(self, f: int, x: Tensor, missing: Tensor | None = None) -> None:
        """Hold field ``f``'s sampled members ``x`` (normalised ``[M, C, H, W]``) as written,
        NaN where ``missing`` (bool, broadcast to ``x``)."""
        fields = self.normalizer.denormalise(x.double()).float()
        if missing is not None:
            fields = torch.where(torch.as_tensor(missing), torch.nan, fields)
        self.put(f, fields)
