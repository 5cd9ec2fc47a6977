"""Train/val/test splits by contiguous blocks of time.

The distinct times (sorted) are cut into three consecutive blocks, train first, then val, then
test, with ``gap`` time steps dropped between consecutive blocks (to reduce the correlation of
neighbouring times across splits). Block sizes are ``round(fraction * (n_times - gaps))`` with
the remainder given to train. All samples (ensemble members) of one time go to the same split.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from weather_sr.errors import UserError


def split_times(
    n_times: int, fractions: Sequence[float] = (0.7, 0.15, 0.15), gap: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices of the distinct times in train, val and test (each increasing, disjoint)."""
    fr = [float(f) for f in fractions]
    if len(fr) != 3 or any(f < 0 for f in fr) or not 0.999 <= sum(fr) <= 1.001:
        raise UserError(f"data.split={tuple(fractions)}: give three fractions >= 0 summing to 1")
    if gap < 0:
        raise UserError(f"data.gap={gap}: give a number of time steps >= 0")
    n_gaps = gap * (sum(f > 0 for f in fr) - 1)
    usable = n_times - n_gaps
    sizes = [round(f * usable) for f in fr]
    sizes[0] = usable - sizes[1] - sizes[2]
    if usable <= 0 or any(n <= 0 for n, f in zip(sizes, fr, strict=True) if f > 0):
        raise UserError(
            f"data.split={tuple(fractions)} with data.gap={gap}: {n_times} time steps are too few "
            "for a non-empty train/val/test block each: use more data, a smaller gap or fractions"
        )
    out, start = [], 0
    for n, f in zip(sizes, fr, strict=True):
        out.append(np.arange(start, start + n))
        if f > 0:
            start += n + gap
    return out[0], out[1], out[2]


def time_index(times: np.ndarray) -> tuple[np.ndarray, int]:
    """Per-sample index of its time among the sorted distinct times, and the number of times."""
    uniq, inverse = np.unique(np.asarray(times), return_inverse=True)
    return inverse.reshape(-1), len(uniq)


def split_samples(
    times: np.ndarray, fractions: Sequence[float] = (0.7, 0.15, 0.15), gap: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sample indices of train, val, test, given each sample's time [N] (members share a time)."""
    tidx, n_times = time_index(times)
    blocks = split_times(n_times, fractions, gap)
    return tuple(np.flatnonzero(np.isin(tidx, b)) for b in blocks)  # type: ignore[return-value]
