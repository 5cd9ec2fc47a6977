"""Consistency with the LR input in the provenance of ``downscale``'s output (docs/method.md §8).

Every member written is coarsened by the block mean that made the LR field
(:func:`weather_sr.data.pairs.coarsen`, cos-latitude weighted when the checkpoint's
``data.area_weighted``) and compared with the LR field the model was conditioned on, over every
LR cell, member and field where both are finite: per output variable, in its units,

- ``lr_consistency_rmse``: sqrt(mean (coarsened - LR)^2);
- ``lr_consistency_max_abs``: the largest |coarsened - LR|;

and the global attribute ``lr_consistency`` says how (or why not: a model whose predictors are
regridded from another grid has no LR field on the blocks of the output grid). These are the
scores of :class:`weather_sr.evaluation.consistency.ConsistencyAccumulator` (its ``rmse`` and
``max_abs``), which ``tests/test_constraint.py`` recomputes on written files.

:class:`ConsistencyTally` adds the sums field by field in the order of the fields, so any chunking
gives the same bits, and its :meth:`~ConsistencyTally.state` (JSON) is what a Zarr output's
partial store keeps with the fields done, so a resumed run ends with the attributes of an
uninterrupted one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from weather_sr.data.pairs import coarsen
from weather_sr.errors import UserError

RMSE, MAX_ABS, GLOBAL = "lr_consistency_rmse", "lr_consistency_max_abs", "lr_consistency"
NOT_MEASURED = ("not measured: the model's inputs are not the LR fields of the output variables "
                "on the blocks of the output grid (predictors regridded from another grid)")


def field_sums(lr: np.ndarray, ensemble: np.ndarray, s: int, lat: np.ndarray | None
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per field: (sum of squared departures, finite cells, largest |departure|), each ``[n, C]``,
    of the members ``ensemble`` ``[n, M, C, H, W]`` coarsened against ``lr`` ``[n, C, h, w]``
    (NaN on either side: left out). Each field's sums are reduced on its own, so they do not
    depend on the chunk it came in."""
    coarse = coarsen(torch.from_numpy(np.asarray(ensemble, np.float64)), s, lat).numpy()
    diff = coarse - np.asarray(lr, np.float64)[:, None]
    ok = np.isfinite(diff)
    d = np.where(ok, diff, 0.0)
    sq = np.stack([(f**2).sum(axis=(0, 2, 3)) for f in d])
    big = np.stack([np.abs(f).max(axis=(0, 2, 3), initial=0.0) for f in d])
    return sq, ok.sum(axis=(1, 3, 4)), big


class ConsistencyTally:
    """The departures of the written members from the LR input, summed over chunks of fields.

    Args:
        channels: the output variables, in order.
        scale_factor: the HR/LR ratio s; ``area_weighted``: the LR is a cos-latitude weighted
            block mean (``data.area_weighted``); ``measured``: False when the model has no LR
            field on the output's blocks (no attributes per variable then).
    """

    def __init__(self, channels: Sequence[str], scale_factor: int, *,
                 area_weighted: bool = False, measured: bool = True) -> None:
        self.channels, self.s = list(channels), int(scale_factor)
        self.area_weighted, self.measured = bool(area_weighted), bool(measured)
        c = len(self.channels)
        self.sq, self.count, self.max = np.zeros(c), np.zeros(c, np.int64), np.zeros(c)

    def update(self, lr: np.ndarray | None, ensemble: np.ndarray,
               lat: np.ndarray | None = None) -> None:
        """Add fields: ``lr`` ``[n, C, h, w]`` (None when not measured), ``ensemble``
        ``[n, M, C, H, W]`` as written (NaN where the output has no data), ``lat`` the HR
        latitudes ``[H]`` (used when ``area_weighted``)."""
        if not self.measured or lr is None:
            return
        sq, count, big = field_sums(lr, ensemble, self.s, lat if self.area_weighted else None)
        for i in range(sq.shape[0]):  # one field at a time, in order: chunking changes no bit
            self.sq = self.sq + sq[i]
            self.count = self.count + count[i]
            self.max = np.maximum(self.max, big[i])

    def state(self) -> dict[str, list[float] | list[int]]:
        """The running sums as JSON types (float64 values survive ``json`` exactly)."""
        return {"sq": self.sq.tolist(), "count": self.count.tolist(), "max": self.max.tolist()}

    def restore(self, state: Mapping[str, Any] | None, where: str) -> None:
        """Continue from :meth:`state` (a resumed run); UserError naming ``where`` (the file it
        was read from) unless it holds one number per variable for each sum."""
        c = len(self.channels)
        try:
            sums = [np.asarray((state or {})[k], dtype) for k, dtype in
                    (("sq", np.float64), ("count", np.int64), ("max", np.float64))]
        except (KeyError, TypeError, ValueError):
            sums = []
        if len(sums) != 3 or any(v.shape != (c,) or not np.isfinite(v).all() for v in sums):
            raise UserError(f"--resume: {where} does not hold the consistency sums of the "
                            f"{c} variables (edited or damaged): start again with --overwrite")
        self.sq, self.count, self.max = sums

    def variable_attrs(self) -> dict[str, dict[str, float]]:
        """``{variable: {RMSE: ..., MAX_ABS: ...}}`` (no entry for a variable without a finite
        LR cell, nor when not measured)."""
        if not self.measured:
            return {}
        rmse = self.rmse()
        return {name: {RMSE: float(rmse[i]), MAX_ABS: float(self.max[i])}
                for i, name in enumerate(self.channels) if self.count[i] > 0}

    def rmse(self) -> np.ndarray:
        """The RMSE ``[C]`` of the departures so far (0 for a variable without a cell)."""
        return np.sqrt(self.sq / np.maximum(self.count, 1))

    def global_attr(self) -> str:
        """How the consistency was measured (the global attribute :data:`GLOBAL`)."""
        if not self.measured:
            return NOT_MEASURED
        weights = "cos-latitude weighted " if self.area_weighted else ""
        return (f"every member coarsened by the {weights}{self.s}x{self.s} block mean that made "
                "the LR input and compared with the LR field the model was conditioned on, over "
                "every LR cell, member and field where both are finite: per variable, in its "
                f"units, {RMSE} = root mean square departure, {MAX_ABS} = largest absolute "
                "departure")

    def apply(self, ds: Any) -> Any:
        """``ds`` (an output Dataset) with these attributes set, in place; returned."""
        ds.attrs[GLOBAL] = self.global_attr()
        attrs = self.variable_attrs()
        for name in self.channels:
            for key in (RMSE, MAX_ABS):
                ds[name].attrs.pop(key, None)
            ds[name].attrs.update(attrs.get(name, {}))
        return ds
