"""``--constrain``: every member's block means made equal to the LR input (docs/method.md §8,
"The constraint").

C is the block mean that made the LR field (:func:`weather_sr.data.pairs.coarsen`: s x s
blocks, cos-latitude weighted when the checkpoint's ``data.area_weighted``), U the bilinear
upsampling of :func:`weather_sr.data.pairs.upsample` (a smooth spread over the HR grid, weights
>= 0 summing to 1) and R the piecewise-constant one (R(e) is e on every pixel of its block, so
C(R(e)) = e). For a field x ``[..., H, W]`` and its LR field ``[..., h, w]`` (NaN: missing):

- additive (:func:`additive`): d = LR - C(x); c = U(e) with C U e = d, the limit of
  c <- c + U(d - C(c)) from c = 0 (C U is separable: solved at once); finally
  c <- c + R(d - C(c)), so C(x + c) = LR to float64 rounding;
- multiplicative (:func:`multiplicative`, the channels the checkpoint transforms as
  non-negative: ``data.transforms``): g = 1, then g <- g U(LR / C(g x)), finally
  g <- g R(LR / C(g x)); g >= 0, so g x >= 0 wherever x >= 0. A block whose mean is 0 while its
  LR is not gets the LR added uniformly (the only way to reach it without negative values).

Blocks under a missing LR cell are left exactly as they were. The correction is made in
physical units (the block mean is linear there, not in a transformed or per-pixel normalised
space) and added to the normalised field as the difference of the normalised fields, so a
field that is already consistent comes back bit for bit. ``lr-mean`` applies it to every final
member (after tiling: to the whole field); ``lr-mean-x0`` also to the network's x0 estimate at
every sampler step (:func:`weather_sr.core.process.project_x0`, the full field base + residual).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from weather_sr.core.sampler_defaults import CONSTRAINTS
from weather_sr.data.normalise import Normalizer
from weather_sr.data.pairs import coarsen, upsample
from weather_sr.errors import UserError

ITERATIONS = 20  # multiplicative: smoothing iterations before the exact piecewise-constant step


def blocks(v: Tensor, s: int) -> Tensor:
    """R: ``[..., h, w]`` -> ``[..., h s, w s]``, each value on every pixel of its block."""
    return v.repeat_interleave(s, dim=-2).repeat_interleave(s, dim=-1)


def spread(d: Tensor, s: int, periodic: bool = False) -> Tensor:
    """U: ``[..., h, w]`` (finite) -> ``[..., h s, w s]``, bilinear (:func:`upsample`)."""
    *lead, h, w = d.shape
    return upsample(d.reshape(-1, 1, h, w), s, "bilinear", periodic).reshape(*lead, h * s, w * s)


def block_operator(n: int, s: int, lat: np.ndarray | None = None,
                   periodic: bool = False) -> Tensor:
    """C U along one axis of ``n`` LR cells as a matrix ``[n, n]`` float64: the block means of
    the bilinear spread of each unit vector (``lat``: the ``[n s]`` latitudes of a y axis whose
    block mean is cos-latitude weighted; ``periodic``: an x axis global in longitude)."""
    u = interpolation_matrix(n, s, "bilinear", periodic).T  # [n, n s]: row k spreads cell k
    if lat is None:
        return coarsen(u[:, None, :].expand(n, s, n * s), s)[:, 0, :].T
    return coarsen(u[:, :, None].expand(n, n * s, s), s, lat)[:, :, 0].T


def additive(x: Tensor, lr: Tensor, s: int, *, lat: np.ndarray | None = None,
             periodic: bool = False) -> Tensor:
    """x ``[..., H, W]`` (finite) plus the smooth correction with C(x + c) = ``lr`` ``[..., h, w]``
    wherever ``lr`` is finite (float64 rounding); blocks of a missing LR cell unchanged.

    c = U(e) with C U e = d = LR - C(x) (d = 0 under a missing cell): the limit of
    c <- c + U(d - C(c)) from c = 0, solved at once, as C U is one matrix per axis
    (:func:`block_operator`); c is then zeroed under the missing cells, which changes no other
    block's mean. The piecewise-constant R(d - C(c)) removes what rounding left."""
    ok = torch.isfinite(lr)
    d = torch.where(ok, lr - coarsen(x, s, lat), 0.0)
    h, w = d.shape[-2:]
    rows = torch.linalg.inv(block_operator(h, s, lat)).to(d)
    cols = torch.linalg.inv(block_operator(w, s, None, periodic)).to(d)
    e = torch.einsum("ik,...kl,jl->...ij", rows, d, cols)
    c = torch.where(blocks(ok, s), spread(e, s, periodic), 0.0)
    return x + (c + blocks(torch.where(ok, d - coarsen(c, s, lat), 0.0), s))


def multiplicative(x: Tensor, lr: Tensor, s: int, *, lat: np.ndarray | None = None,
                   periodic: bool = False, iterations: int = ITERATIONS) -> Tensor:
    """x ``[..., H, W]`` (finite, >= 0) times a smooth factor g >= 0 with C(g x) = max(``lr``, 0)
    wherever ``lr`` is finite; a block with C(x) = 0 gets max(lr, 0) added uniformly; blocks of
    a missing LR cell unchanged. Non-negative wherever x is."""
    ok = torch.isfinite(lr)
    keep = blocks(ok, s)
    want = torch.where(ok, lr.clamp_min(0.0), 0.0)

    def ratio(y: Tensor) -> Tensor:
        m = coarsen(y, s, lat)
        return torch.where(ok & (m > 0), want / torch.where(m > 0, m, 1.0), 1.0)

    g = torch.ones_like(x)
    for _ in range(iterations):
        g = g * torch.where(keep, spread(ratio(g * x), s, periodic), 1.0)
    y = g * x * blocks(ratio(g * x), s)
    empty = ok & ~(coarsen(y, s, lat) > 0) & (want > 0)  # nothing to scale: add the LR
    return y + blocks(torch.where(empty, want - coarsen(y, s, lat), 0.0), s)


def constrain_fields(x: Tensor, lr: Tensor, s: int, positive: Sequence[bool], *,
                     lat: np.ndarray | None = None, periodic: bool = False) -> Tensor:
    """x ``[B, C, H, W]`` physical with C(x) = ``lr`` ``[B, C, h, w]`` (float64): channel c
    multiplicatively where ``positive[c]``, else additively."""
    parts = [(multiplicative if pos else additive)(x[:, c], lr[:, c], s, lat=lat,
                                                   periodic=periodic)
             for c, pos in enumerate(positive)]
    return torch.stack(parts, dim=1)


def target_index(spec: Any) -> list[int] | None:
    """Which of the model's inputs are the targets' LR fields on the LR blocks: all of them, in
    order (mode "own"), the same-named predictors (mode "coarsen"); None when there are none
    (predictors regridded from another grid, or a target without a same-named one)."""
    if spec.mode == "own":
        return list(range(len(spec.targets)))
    return None if spec.mode == "regrid" else spec.base_index


def target_lr(lr: np.ndarray, spec: Any) -> np.ndarray | None:
    """The targets' LR ``[N, C, h, w]`` among the model's inputs ``lr`` ``[N, Ci, h, w]``
    (:func:`target_index`), or None."""
    index = target_index(spec)
    return None if index is None else lr[:, index]


def check_constraint(model: Any, constrain: str) -> None:
    """UserError naming ``--constrain`` unless ``model`` can be constrained that way."""
    if constrain == CONSTRAINTS[0]:
        return
    meta = getattr(model, "meta", None)
    if meta is None:
        raise UserError(f"--constrain {constrain}: the model has no checkpoint metadata (its "
                        "normaliser and scale factor): load it with load_model")
    if target_index(meta.condition_spec()) is None:
        raise UserError(f"--constrain {constrain}: this model's inputs are not the targets' LR "
                        "fields on the blocks of the output grid (predictors regridded from "
                        "another grid, or without a same-named one): use --constrain none")
    if constrain == "lr-mean-x0" and getattr(model, "kind", "diffusion") == "regression":
        raise UserError("--constrain lr-mean-x0: a regression checkpoint has no sampler steps "
                        "to correct: use --constrain lr-mean")
    spectral = getattr(model, "spectral", None)
    if constrain == "lr-mean-x0" and spectral is not None and not spectral.shift.none:
        raise UserError("--constrain lr-mean-x0: this model's schedule is set per F_R "
                        "coefficient (diffusion.spectral_schedule), where there is no one x0 "
                        "estimate per step to correct: use --constrain lr-mean")


@dataclass(frozen=True)
class BlockConstraint:
    """The LR of one sampling call and what the correction needs.

    ``lr``: ``[N, C, h, w]`` float64 physical (NaN: missing), one row per field of the call;
    ``normalizer``: the targets' (its transforms mark the non-negative channels); ``lat``: the
    HR latitudes ``[H]`` when the LR is an area-weighted block mean, else None.
    """

    lr: Tensor
    scale_factor: int
    normalizer: Normalizer
    lat: np.ndarray | None = None
    periodic: bool = False

    @property
    def positive(self) -> list[bool]:
        return [name in self.normalizer.transforms for name in self.normalizer.channels]

    def normalised(self, x: Tensor, fields: Sequence[int]) -> Tensor:
        """Normalised fields ``[B, C, H, W]`` (row b of field ``fields[b]``) corrected in
        physical units, in float64 (on the CPU for MPS, which has none); in x's dtype and
        device."""
        xw = x.to(device="cpu" if x.device.type == "mps" else x.device, dtype=torch.float64)
        phys = self.normalizer.denormalise(xw)
        lr = self.lr[list(fields)].to(xw.device)
        fixed = constrain_fields(phys, lr, self.scale_factor, self.positive, lat=self.lat,
                                 periodic=self.periodic)
        norm = self.normalizer.normalise
        return (xw + (norm(fixed) - norm(phys))).to(device=x.device, dtype=x.dtype)

    def residual(self, z0: Tensor, fields: Sequence[int], base: Tensor, scale: Tensor
                 ) -> Tensor:
        """The same correction of the full field base + s z0 for an estimate z0 ``[B, C, H, W]``
        of the scaled target (``base`` ``[B, C, H, W]`` normalised, ``scale`` s ``[C]``),
        returned as the corrected z0."""
        s = scale.to(z0).view(1, -1, 1, 1)
        full = base.to(z0) + s * z0
        return z0 + (self.normalised(full, fields) - full) / s


def interpolation_matrix(n: int, s: int, interpolation: str, periodic: bool = False) -> Tensor:
    """The 1-D interpolation of :func:`upsample` along an axis of ``n`` LR cells as a matrix
    ``[n s, n]`` float64 (the x axis when ``periodic``); column k is the interpolated k-th unit
    vector (upsample is separable and reproduces constants)."""
    eye = torch.eye(n, dtype=torch.float64)
    if periodic:
        return upsample(eye[:, None, None, :], s, interpolation, True)[:, 0, 0, :].T
    return upsample(eye[:, None, :, None], s, interpolation)[:, 0, :, 0].T


def block_constraint(model: Any, lr: np.ndarray | None, periodic: bool,
                     lat: np.ndarray | None = None) -> BlockConstraint:
    """The constraint of one call for ``model`` (checked by :func:`check_constraint`):
    ``lr`` the targets' LR ``[N, C, h, w]`` in physical units with ``lat`` (the HR latitudes
    when ``data.area_weighted``), as ``downscale``, the Python API and ``evaluate`` give them."""
    if lr is None:
        raise UserError("--constrain: this call has no LR field to constrain the members to")
    meta = model.meta
    values = torch.as_tensor(np.asarray(lr, dtype=np.float64))
    return BlockConstraint(values, int(meta.scale_factor), meta.make_normalizer(), lat, periodic)


__all__ = ["BlockConstraint", "additive", "block_constraint", "blocks", "check_constraint",
           "constrain_fields", "interpolation_matrix", "multiplicative", "spread",
           "target_index", "target_lr"]
