"""Consistency with the input: every member averaged back onto the LR grid against the LR field
it was conditioned on (docs/method.md §8).

A downscaled field should reproduce its input at the input's resolution. Each member (or a
deterministic prediction) is coarsened by the block mean that made the LR field of the split
(``data.pairs.coarsen``: NaN-aware, cos-latitude weighted where the data are, the one home of
that rule), and compared with the LR field per channel over every LR cell, member and field
where both are finite:

- ``rmse``: sqrt(mean (coarsened - LR)^2);
- ``max_abs``: the largest |coarsened - LR|.

Accumulated chunk by chunk of fields, so the result equals one pass over the split.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from weather_sr.data.pairs import coarsen
from weather_sr.errors import UserError
from weather_sr.inference.lr_consistency import ConsistencyTally

__all__ = ["ConsistencyAccumulator"]


class ConsistencyAccumulator:
    """Departures of the coarsened members from the LR input, accumulated over chunks.

    Args:
        scale_factor: the HR/LR ratio s.
        lat: the HR latitudes ``[H]`` in degrees when the LR was made with area weights
            (``FieldSource.lat_weights``), else None.
    """

    def __init__(self, scale_factor: int, lat: np.ndarray | None = None) -> None:
        self._s = int(scale_factor)
        self._lat = None if lat is None else np.asarray(lat, dtype=np.float64)
        self._tally: ConsistencyTally | None = None  # the running sums (downscale's, reused)

    def update(self, lr: Any, prediction_or_ensemble: Any, mask: Any = None) -> None:
        """lr ``[n, C, h, w]``; prediction ``[n, C, H, W]`` or ensemble ``[n, M, C, H, W]``
        with H = s h, W = s w; mask ``[n, 1, H, W]`` (1 valid): an LR cell whose block has an
        invalid pixel is left out (its mean would not be the block mean)."""
        x = np.asarray(prediction_or_ensemble, dtype=np.float64)
        if x.ndim == 4:
            x = x[:, None]
        ref = np.asarray(lr, dtype=np.float64)
        n, _, c, h, w = x.shape
        if ref.shape != (n, c, h // self._s, w // self._s):
            raise UserError(f"consistency: LR {ref.shape} does not match the prediction "
                            f"{x.shape} at scale factor {self._s}")
        if self._tally is None:
            self._tally = ConsistencyTally([str(k) for k in range(c)], self._s,
                                           area_weighted=self._lat is not None)
        elif len(self._tally.channels) != c:
            raise UserError(f"consistency: this chunk has {c} channels, the earlier ones "
                            f"{len(self._tally.channels)}")
        if mask is not None:  # an LR cell whose block is not whole is left out
            whole = coarsen(torch.from_numpy(np.asarray(mask, np.float64)), self._s).numpy()
            ref = np.where(whole == 1.0, ref, np.nan)
        self._tally.update(ref, x, self._lat)

    def result(self, channels: Sequence[str]) -> dict[str, dict[str, float | None]]:
        """``{channel: {"rmse": float, "max_abs": float}}`` (None, as the other scores in
        metrics.json, for a channel without a finite cell)."""
        t = self._tally
        if t is None:
            raise UserError("consistency: no fields given")
        rmse = t.rmse()
        return {name: {"rmse": float(rmse[i]), "max_abs": float(t.max[i])}
                if t.count[i] > 0 else {"rmse": None, "max_abs": None}
                for i, name in enumerate(channels)}
