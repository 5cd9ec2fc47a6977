"""Fields in time: which row is a row's previous time (:func:`previous_rows`, for
``data.previous``), and how the truth's small scales persist (:func:`detail_lag1`).

The detail of an HR field is what its LR field does not hold: the field minus its block-mean
LR interpolated back onto the HR grid (the split's own interpolation). Its lag-1
autocorrelation over consecutive times of the training split is the default correlation of
coherent ensembles' noise (:mod:`weather_sr.inference.coherence`).
"""

from __future__ import annotations

import numpy as np
import torch

from weather_sr.data.datasets import PairDataset
from weather_sr.data.pairs import coarsen, upsample

MAX_PAIRS = 64  # consecutive pairs read (the first of the split): enough for a correlation


def consecutive_pairs(times: np.ndarray, members: np.ndarray | None) -> list[tuple[int, int]]:
    """Rows (i, j) of a split in time order where j is the same member at the next time."""
    t = np.asarray(times)
    m = np.zeros(len(t), int) if members is None else np.asarray(members)
    order = np.unique(t)
    step = {a: b for a, b in zip(order[:-1].tolist(), order[1:].tolist(), strict=True)}
    where = {(tt, mm): i for i, (tt, mm) in enumerate(zip(t.tolist(), m.tolist(), strict=True))}
    return [(i, where[(step[tt], mm)]) for i, (tt, mm) in enumerate(zip(t.tolist(), m.tolist(),
                                                                       strict=True))
            if tt in step and (step[tt], mm) in where]


def previous_rows(times: np.ndarray, members: np.ndarray | None) -> np.ndarray:
    """int [N]: the row of the same member at the previous time of each row, -1 for a first."""
    out = np.full(len(times), -1, dtype=np.int64)
    for i, j in consecutive_pairs(times, members):
        out[j] = i
    return out


def detail_lag1(dataset: PairDataset, max_pairs: int = MAX_PAIRS) -> np.ndarray | None:
    """Per channel, float64 [C]: the lag-1 autocorrelation of the detail, pooled over the grid
    points valid at both times and the first ``max_pairs`` consecutive pairs of ``dataset``;
    None with fewer than 2 pairs or times."""
    if dataset.times is None:
        return None
    pairs = consecutive_pairs(dataset.times, dataset.members)[:max_pairs]
    if len(pairs) < 2:
        return None
    src = dataset.source
    s, (H, W) = src.scale_factor, src.shape

    def detail(row: int) -> np.ndarray:
        hr = torch.from_numpy(np.asarray(src.hr_window(int(dataset.samples[row]), slice(0, H),
                                                       slice(0, W)), np.float64))
        lr = coarsen(hr, s, src.lat_weights)
        mean = torch.nanmean(lr.flatten(1), 1)[:, None, None]
        filled = torch.where(torch.isfinite(lr), lr, mean)  # the interpolation needs no NaN
        return (hr - upsample(filled[None], s, dataset.interpolation, dataset.periodic)[0]
                ).numpy()

    num, last = np.zeros(0), (-1, np.zeros(0))
    for i, j in pairs:
        a = last[1] if last[0] == i else detail(i)  # pairs usually chain: (i, j), (j, k)
        b = detail(j)
        last = (j, b)
        ok = np.isfinite(a) & np.isfinite(b)
        a, b = np.where(ok, a, 0.0), np.where(ok, b, 0.0)
        terms = np.stack([(a * b).sum((1, 2)), (a * a).sum((1, 2)), (b * b).sum((1, 2))])
        num = terms if num.size == 0 else num + terms
    return num[0] / np.sqrt(num[1] * num[2])
