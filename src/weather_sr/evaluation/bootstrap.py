"""Uncertainty of scores over time: circular block bootstrap of ratios of per-time sums.

Every weighted-mean score of :mod:`weather_sr.evaluation.metrics` is a ratio of sums over the
fields (times) t of a split: for channel c, a numerator ``num[t, c]`` (e.g. Σ_pixels w (x - y)²)
and a denominator ``den[t, c]`` (Σ_pixels w), and the score is g(Σ_t num / Σ_t den) with g the
identity (MSE, MAE, bias, CRPS) or the square root (RMSE). The times, not the pixels, are the
experimental units: pixels of a field are averaged first, as WeatherBench-X does, so spatial
correlation needs no model. Successive times are dependent (weather persists), so times are
resampled in blocks.

Definition choices:

- Circular block bootstrap (Politis & Romano 1992): a replicate joins ceil(T / L) blocks of L
  consecutive times, each starting at a time drawn uniformly from 0 .. T-1 and wrapping from the
  last time to the first, and keeps the first T times. Unlike the moving-block bootstrap it
  selects every time equally often on average, so the resampled sums are unbiased for the sums.
  (WeatherBench-X uses the stationary bootstrap, whose block lengths are random with mean L.)
- Default block length L = round(T^(1/3)) (``default_block_length``): the order of the optimal
  length for variance estimation (Hall, Horowitz & Jing 1995). Choose L longer than the time
  over which the per-time scores stay correlated (e.g. several days for daily fields).
- ``num`` and ``den`` are resampled together (the weights are treated as random, as in
  WeatherBench-X), and the score of a replicate is g(Σ num* / Σ den*).
- Percentile intervals: the (1 - level)/2 and (1 + level)/2 quantiles (``np.nanquantile``,
  linear interpolation) of the replicates' scores.
- Paired comparison: the same blocks for both methods, so that the weather both forecast
  cancels in the difference. Two-sided p-value from the B replicates d* of the difference,
  p = min(1, 2 (1 + min(#{d* <= 0}, #{d* >= 0})) / (B + 1)): the Monte Carlo p-value
  (1 + count) / (B + 1) of Davison & Hinkley (1997, ch. 4) of the smaller tail, doubled; ties at
  0 count in both tails, so a method against itself has p = 1. Replicates that drew no weight
  (NaN) are left out of B. It inverts the percentile interval (as WeatherBench-X's p-value does):
  up to about 1/B, p < 1 - level iff the interval excludes 0. ``significant`` is that the
  interval excludes 0.

Replicates of the same seed and sizes are reproducible: ``block_bootstrap_indices`` and
``bootstrap_sums`` draw the same block starts from equal Generators.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from weather_sr.errors import UserError

TRANSFORMS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "identity": lambda r: r,
    "sqrt": np.sqrt,
}
_CHUNK = 1 << 20  # gathered values per chunk of replicates: bounds the memory for long series


def default_block_length(n: int) -> int:
    """Rule-of-thumb block length round(n^(1/3)) for n times, within 1 .. n."""
    if n < 1:
        raise UserError(f"bootstrap: need at least one time, got {n}")
    return min(n, max(1, round(n ** (1.0 / 3.0))))


def _check_sizes(n: int, block: int | None, n_boot: int) -> int:
    """Validate the series length, block length and replicate count; return the block length."""
    if n < 2:
        raise UserError(f"bootstrap: need at least 2 times (fields) to resample, got {n}")
    if block is None:
        block = default_block_length(n)
    if isinstance(block, bool) or not isinstance(block, (int, np.integer)) or not 1 <= block <= n:
        raise UserError(f"block: must be an integer block length from 1 to {n} times, got {block}")
    if isinstance(n_boot, bool) or not isinstance(n_boot, (int, np.integer)) or n_boot < 1:
        raise UserError(f"n_boot: must be a positive number of replicates, got {n_boot}")
    return int(block)


def _check_rng(rng: object) -> np.random.Generator:
    if not isinstance(rng, np.random.Generator):
        raise UserError("rng: expected a numpy Generator, e.g. np.random.default_rng(seed)")
    return rng


def _starts(
    n: int, block: int, n_boot: int, rng: np.random.Generator, width: int
) -> Iterator[np.ndarray]:
    """Block starts ``[b, ceil(n / block)]`` in 0 .. n-1, in chunks of b replicates.

    Drawn row after row from ``rng``: the chunking (``width`` values gathered per start) does not
    change the starts.
    """
    n_blocks = math.ceil(n / block)
    rows = max(1, _CHUNK // (n_blocks * max(1, width)))
    for first in range(0, n_boot, rows):
        yield rng.integers(0, n, size=(min(rows, n_boot - first), n_blocks))


def block_bootstrap_indices(
    n: int, block: int | None = None, n_boot: int = 1000, *, rng: np.random.Generator
) -> np.ndarray:
    """Time indices ``[n_boot, n]`` of circular block bootstrap replicates of n times.

    Row b is blocks ``(s + 0, s + 1, ..., s + block - 1) mod n`` for starts s drawn uniformly
    from 0 .. n-1, joined and cut to n indices (the last block may be shorter). ``block``
    defaults to ``default_block_length(n)``.
    """
    block = _check_sizes(n, block, n_boot)
    rng = _check_rng(rng)
    starts = np.concatenate(list(_starts(n, block, n_boot, rng, width=1)))
    idx = (starts[:, :, None] + np.arange(block)) % n  # [n_boot, n_blocks, block]
    return idx.reshape(n_boot, -1)[:, :n]


def bootstrap_sums(
    x: np.ndarray, block: int | None = None, n_boot: int = 1000, *, rng: np.random.Generator
) -> np.ndarray:
    """Sums over times ``[n_boot, K]`` of circular block bootstrap replicates of ``x [T, K]``.

    Equal to ``x[block_bootstrap_indices(T, block, n_boot, rng=rng)].sum(axis=1)`` for an equal
    ``rng``, computed from the sums of all T circular blocks (O(T·L·K) + O(n_boot·T/L·K) work,
    in chunks of replicates) rather than by gathering every index.
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise UserError(f"bootstrap: expected per-time sums [T, K], got shape {x.shape}")
    n = x.shape[0]
    block = _check_sizes(n, block, n_boot)
    rng = _check_rng(rng)
    last = n - (math.ceil(n / block) - 1) * block  # the length of the last (cut) block
    ext = np.concatenate([x, x[:block]])  # wraps around: block s covers ext[s : s + block]
    full = sliding_window_view(ext, block, axis=0)[:n].sum(axis=-1)  # [T, K]
    tail = sliding_window_view(ext, last, axis=0)[:n].sum(axis=-1)  # [T, K]
    out = []
    for starts in _starts(n, block, n_boot, rng, width=x.shape[1]):
        out.append(full[starts[:, :-1]].sum(axis=1) + tail[starts[:, -1]])
    return np.concatenate(out)


def _check_sums(num: np.ndarray, den: np.ndarray, name: str = "num") -> None:
    """Validate per-time sums ``num, den [T, C]``: same shape, finite, den >= 0, Σ_t den > 0."""
    if num.ndim != 2 or num.shape != den.shape:
        raise UserError(
            f"{name}: expected per-time sums [T, C] like den {den.shape}, got shape {num.shape}"
        )
    if not (np.all(np.isfinite(num)) and np.all(np.isfinite(den))):
        raise UserError(f"{name}, den: per-time sums must be finite; check the masks")
    if np.any(den < 0) or np.any(den.sum(axis=0) <= 0):
        raise UserError("den: weight sums must be >= 0 with a positive total for every channel")


def _score_fn(transform: str, *nums: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    if transform not in TRANSFORMS:
        raise UserError(f"transform: expected one of {sorted(TRANSFORMS)}, got {transform!r}")
    if transform == "sqrt" and any(np.any(v < 0) for v in nums):
        raise UserError("transform: 'sqrt' (RMSE) needs num >= 0 (sums of squared errors)")
    return TRANSFORMS[transform]


def _check_level(level: float) -> float:
    if not 0.0 < level < 1.0:
        raise UserError(f"level: must be a confidence level in (0, 1), e.g. 0.95, got {level}")
    return float(level)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den, NaN where den is 0 (a replicate that drew no weight for a channel)."""
    return np.divide(num, den, out=np.full(np.broadcast(num, den).shape, np.nan), where=den > 0)


def percentile_interval(values: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval ``([C], [C])`` of replicates ``values [B, C]`` (NaNs skipped)."""
    lo, hi = np.nanquantile(values, [(1.0 - level) / 2.0, (1.0 + level) / 2.0], axis=0)
    return lo, hi


def bootstrap_interval(
    num: np.ndarray,
    den: np.ndarray,
    *,
    transform: str = "identity",
    block: int | None = None,
    n_boot: int = 1000,
    level: float = 0.95,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval ``(lo [C], hi [C])`` of the score g(Σ_t num / Σ_t den) per channel.

    Args:
        num: per-time numerator sums ``[T, C]``, e.g. Σ_pixels w (x - y)² of each field.
        den: per-time weight sums ``[T, C]`` (Σ_pixels w).
        transform: g, ``"identity"`` or ``"sqrt"`` (RMSE from squared errors).
        block: block length in times (default ``default_block_length(T)``); 1 is the iid
            bootstrap.
        n_boot: number of replicates. level: the interval's confidence level.
        rng: the Generator that draws the blocks.
    """
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    _check_sums(num, den)
    g = _score_fn(transform, num)
    level = _check_level(level)
    c = num.shape[1]
    sums = bootstrap_sums(np.concatenate([num, den], axis=1), block, n_boot, rng=rng)
    return percentile_interval(g(_ratio(sums[:, :c], sums[:, c:])), level)


def paired_difference(
    num_a: np.ndarray,
    num_b: np.ndarray,
    den: np.ndarray,
    *,
    transform: str = "identity",
    block: int | None = None,
    n_boot: int = 1000,
    level: float = 0.95,
    rng: np.random.Generator,
) -> dict[str, np.ndarray]:
    """Score(a) - score(b) per channel with a paired block bootstrap interval and p-value.

    Both methods are scored on the same fields and pixels (one ``den``) and resampled with the
    same blocks. See the module docstring for the p-value.

    Args:
        num_a, num_b: per-time numerator sums ``[T, C]`` of methods a and b.
        den: per-time weight sums ``[T, C]``.
        transform, block, n_boot, level, rng: as ``bootstrap_interval``.

    Returns:
        ``{"diff": [C] g(A/D) - g(B/D) of all times, "lo", "hi": [C] percentile interval of the
        difference, "p_value": [C] two-sided, "significant": [C] bool, the interval excludes 0}``.
    """
    num_a = np.asarray(num_a, dtype=np.float64)
    num_b = np.asarray(num_b, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    _check_sums(num_a, den, "num_a")
    _check_sums(num_b, den, "num_b")
    g = _score_fn(transform, num_a, num_b)
    _check_level(level)  # before the resampling (difference_summary uses it)
    c = den.shape[1]
    sums = bootstrap_sums(np.concatenate([num_a, num_b, den], axis=1), block, n_boot, rng=rng)
    d_sum = sums[:, 2 * c :]
    reps = g(_ratio(sums[:, :c], d_sum)) - g(_ratio(sums[:, c : 2 * c], d_sum))  # [B, C]
    total = den.sum(axis=0)
    diff = g(num_a.sum(axis=0) / total) - g(num_b.sum(axis=0) / total)
    return difference_summary(reps, diff, level)


def difference_summary(reps: np.ndarray, diff: np.ndarray, level: float = 0.95
                       ) -> dict[str, np.ndarray]:
    """``paired_difference``'s dict from the replicates ``[B, C]`` of a paired difference and
    its value ``[C]`` on all times: percentile interval, two-sided p-value (module docstring),
    significance."""
    lo, hi = percentile_interval(reps, _check_level(level))
    finite = np.isfinite(reps)
    n_finite = finite.sum(axis=0)
    below = ((reps <= 0) & finite).sum(axis=0)
    above = ((reps >= 0) & finite).sum(axis=0)
    p_value = np.minimum(1.0, 2.0 * (1.0 + np.minimum(below, above)) / (n_finite + 1.0))
    return {
        "diff": diff,
        "lo": lo,
        "hi": hi,
        "p_value": p_value,
        "significant": (lo > 0) | (hi < 0),
    }
