"""Calibration of ensembles beyond spread/skill, as sums that add over chunks of fields.

Conventions as :mod:`weather_sr.evaluation.metrics`: truth ``y [N, C, H, W]``, ensemble
``x [N, M, C, H, W]``, weights ``w [N or 1, 1 or C, H, W]`` (mask × cos-latitude, unnormalised,
e.g. from ``metrics.prepare_chunk``); pixels with w = 0 are left out and their values ignored.
Every function returns weighted sums over fields and pixels, so the sums of chunks of fields
add up to those of the whole split; ratios (histogram frequencies, scores) come last.

- PIT histogram (``pit_counts``): the randomised PIT of the truth among M members,
  PIT = (r + U) / (M + 1), r = the number of members below the truth plus a uniform share of
  the members equal to it, U ~ U(0, 1). For an ensemble exchangeable with the truth it is
  exactly U(0, 1) (ties included), so every histogram bin expects weight 1 / bins.
- Reliability diagram for threshold exceedance (``reliability_sums``, ``reliability_curve``,
  ``brier_scores``): forecast probability p_k = k / M with k the number of members above the
  threshold; per (channel, threshold, k) the weight and the weight of observed exceedances.
- Energy score across channels (``energy_score_sums``): the multivariate CRPS of the vector
  of the C channels at every pixel, standardised by per-channel scales.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from weather_sr.errors import UserError
from weather_sr.evaluation.metrics import to_numpy


def _prepare(truth: Any, ensemble: Any, w: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """float64 ``(y [N, C, H, W], x [N, M, C, H, W], w [N, C, H, W])``, invalid pixels 0."""
    y = to_numpy(truth, "truth")
    x = to_numpy(ensemble, "ensemble")
    wt = to_numpy(w, "w")
    if y.ndim != 4:
        raise UserError(f"truth: expected [N, C, H, W], got shape {y.shape}")
    if x.ndim != 5 or (x.shape[0], *x.shape[2:]) != y.shape:
        raise UserError(f"ensemble: expected [N, M, C, H, W] for truth {y.shape}, got {x.shape}")
    n, c, h, wd = y.shape
    ok = wt.ndim == 4 and wt.shape[0] in (1, n) and wt.shape[1] in (1, c)
    if not (ok and wt.shape[2:] == (h, wd)):
        raise UserError(f"w: shape {wt.shape} is not [N|1, 1|C, H, W] for truth {y.shape}")
    if not np.all(np.isfinite(wt)) or np.any(wt < 0):
        raise UserError("w: weights must be finite and >= 0 (mask × cos-latitude)")
    wt = np.broadcast_to(wt, y.shape).copy()
    valid = wt > 0
    if not (np.all(np.isfinite(y)[valid]) and np.all(np.isfinite(x).all(axis=1)[valid])):
        raise UserError("truth, ensemble: NaN or inf at pixels with weight > 0; fold NaN truth "
                        "into the weights (metrics.prepare_chunk) and check the model output")
    y = np.where(valid, y, 0.0)
    x = np.where(valid[:, None], x, 0.0)
    return y, x, wt


def _channel_bincount(idx: np.ndarray, weights: np.ndarray, size: int) -> np.ndarray:
    """Weighted counts ``[C, size]`` of bin indices ``idx [N, C, H, W]`` in 0 .. size-1."""
    c = idx.shape[1]
    flat = (idx + size * np.arange(c).reshape(1, c, 1, 1)).ravel()
    return np.bincount(flat, weights=weights.ravel(), minlength=c * size).reshape(c, size)


# --- PIT histogram -----------------------------------------------------------------------------


def pit_values(truth: Any, ensemble: Any, rng: np.random.Generator) -> np.ndarray:
    """Randomised PIT ``[N, C, H, W]`` in [0, 1) of truth ``[N, C, H, W]`` among the members
    of ``ensemble [N, M, C, H, W]``.

    PIT = (b + (t + 1) U) / (M + 1) with b members below the truth, t members equal to it and
    one U ~ U(0, 1) per pixel from ``rng`` (drawn for every pixel, in C order, so that chunks of
    fields given in order draw what one pass would). This is (r + U') / (M + 1) with
    r = b + floor((t + 1) U) uniform on b .. b + t (the tie share) and U' = frac((t + 1) U)
    uniform and independent of it; floor((M + 1) PIT) is the tie-broken rank of
    ``metrics.rank_counts`` for the same U.
    """
    y = to_numpy(truth, "truth")
    x = to_numpy(ensemble, "ensemble")
    if x.ndim != 5 or (x.shape[0], *x.shape[2:]) != y.shape:
        raise UserError(f"ensemble: expected [N, M, C, H, W] for truth {y.shape}, got {x.shape}")
    if not isinstance(rng, np.random.Generator):
        raise UserError("rng: expected a numpy Generator, e.g. np.random.default_rng(seed)")
    m = x.shape[1]
    below = (x < y[:, None]).sum(axis=1)
    ties = (x == y[:, None]).sum(axis=1)
    u = rng.random(y.shape)
    return (below + (ties + 1) * u) / (m + 1)


def pit_counts(
    truth: Any, ensemble: Any, w: Any, bins: int, rng: np.random.Generator
) -> np.ndarray:
    """Weighted PIT histogram ``[C, bins]``: Σ w over pixels whose ``pit_values`` falls in each
    of ``bins`` equal bins [j / bins, (j + 1) / bins) of [0, 1].

    Divide by the row sums for frequencies (1 / bins each for a calibrated ensemble). With
    ``bins = M + 1`` bin j holds exactly the pixels of tie-broken rank j (the weighted rank
    histogram). ``scores.probability.Pit`` instead takes the PIT of an ensemble as uniform on
    [F(y-), F(y)] of the members' empirical CDF F: without ties the point r / M, not spread over
    [r / (M + 1), (r + 1) / (M + 1)); its histogram of M + 1 bins (right-closed) equals this
    one's, other bin counts differ.
    """
    if isinstance(bins, bool) or not isinstance(bins, (int, np.integer)) or bins < 1:
        raise UserError(f"bins: must be a positive number of histogram bins, got {bins}")
    y, x, wt = _prepare(truth, ensemble, w)
    pit = pit_values(y, x, rng)
    idx = np.minimum((pit * bins).astype(np.int64), bins - 1)
    return _channel_bincount(idx, wt, int(bins))


# --- reliability diagram and Brier score -------------------------------------------------------


def quantile_thresholds(truth: Any, w: Any, levels: Any) -> np.ndarray:
    """Thresholds ``[C, K]``: the quantiles at ``levels [K]`` (e.g. 0.9, 0.99) of the truth
    ``[N, C, H, W]`` over pixels with weight ``w > 0`` (unweighted, ``np.quantile`` linear)."""
    y = to_numpy(truth, "truth")
    q = np.atleast_1d(to_numpy(levels, "levels"))
    if q.ndim != 1 or np.any((q <= 0) | (q >= 1)):
        raise UserError(f"levels: expected quantile levels in (0, 1), got {q.tolist()}")
    _, _, wt = _prepare(y, y[:, None], w)
    out = []
    for c in range(y.shape[1]):
        values = y[:, c][wt[:, c] > 0]
        if values.size == 0:
            raise UserError(f"w: channel {c} has no pixel with weight > 0 for its thresholds")
        out.append(np.quantile(values, q))
    return np.stack(out)


def reliability_sums(
    truth: Any, ensemble: Any, w: Any, thresholds: Any
) -> dict[str, np.ndarray]:
    """Sums ``[C, K, M+1]`` of a reliability diagram for the events truth > threshold.

    Args:
        truth: ``[N, C, H, W]``. ensemble: ``[N, M, C, H, W]``. w: ``[N|1, 1|C, H, W]``.
        thresholds: ``[C, K]``, K thresholds per channel (e.g. ``quantile_thresholds``).

    Returns:
        ``{"weight": Σ w, "observed": Σ w · 1[truth > threshold]}``, both ``[C, K, M+1]``, over
        the pixels where k of the M members exceed the threshold (forecast probability k / M).
    """
    y, x, wt = _prepare(truth, ensemble, w)
    c, m = y.shape[1], x.shape[1]
    thr = to_numpy(thresholds, "thresholds")
    if thr.ndim != 2 or thr.shape[0] != c or not np.all(np.isfinite(thr)):
        raise UserError(f"thresholds: expected finite [C, K] with C = {c}, got shape {thr.shape}")
    weight = np.zeros((c, thr.shape[1], m + 1))
    observed = np.zeros_like(weight)
    for j in range(thr.shape[1]):
        t = thr[:, j].reshape(1, c, 1, 1)
        k = (x > t[:, None]).sum(axis=1)  # [N, C, H, W] members above the threshold
        weight[:, j] = _channel_bincount(k, wt, m + 1)
        observed[:, j] = _channel_bincount(k, wt * (y > t), m + 1)
    return {"weight": weight, "observed": observed}


def reliability_curve(sums: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Forecast probabilities ``[M+1]`` (k / M) and observed frequencies ``[C, K, M+1]``
    (observed / weight, NaN where no weight) of ``reliability_sums`` (summed over chunks)."""
    weight, observed = _check_reliability(sums)
    m = weight.shape[-1] - 1
    freq = np.divide(observed, weight, out=np.full(weight.shape, np.nan), where=weight > 0)
    return np.arange(m + 1) / m, freq


def _check_reliability(sums: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    weight = np.asarray(sums["weight"], dtype=np.float64)
    observed = np.asarray(sums["observed"], dtype=np.float64)
    if weight.ndim != 3 or weight.shape != observed.shape or weight.shape[-1] < 2:
        raise UserError(f"reliability sums: expected weight and observed [C, K, M+1] with M >= 1,"
                        f" got {weight.shape} and {observed.shape}")
    return weight, observed


def brier_scores(sums: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Brier score and its Murphy (1973) decomposition ``[C, K]`` from ``reliability_sums``.

    With W_k, O_k the sums of bin k, W = Σ_k W_k, p_k = k / M, o_k = O_k / W_k, o = Σ_k O_k / W
    (the events are 0/1):

    - ``brier`` = Σ_k (p_k² W_k - 2 p_k O_k + O_k) / W, the weighted mean of (p - 1[event])²;
    - ``reliability`` = Σ_k W_k (p_k - o_k)² / W; ``resolution`` = Σ_k W_k (o_k - o)² / W;
      ``uncertainty`` = o (1 - o); exactly brier = reliability - resolution + uncertainty, since
      the forecast takes only the values p_k;
    - ``brier_fair`` = brier - Σ_k W_k k (M - k) / (M² (M - 1)) / W (Ferro 2014), unbiased for
      the Brier score of the distribution the members are drawn from (NaN for M = 1).

    NaN where a channel and threshold have no weight.
    """
    weight, observed = _check_reliability(sums)
    m = weight.shape[-1] - 1
    p = np.arange(m + 1) / m
    with np.errstate(divide="ignore", invalid="ignore"):
        total = weight.sum(axis=-1)
        o_bar = observed.sum(axis=-1) / total
        brier = (p**2 * weight - 2 * p * observed + observed).sum(axis=-1) / total
        o_k = np.divide(observed, weight, out=np.zeros(weight.shape), where=weight > 0)
        reliability = (weight * (p - o_k) ** 2).sum(axis=-1) / total
        resolution = (weight * (o_k - o_bar[..., None]) ** 2).sum(axis=-1) / total
        k = np.arange(m + 1)
        spread = (weight * k * (m - k)).sum(axis=-1) / total
        correction = spread / (m**2 * (m - 1)) if m > 1 else np.full(total.shape, np.nan)
    return {
        "brier": brier,
        "brier_fair": brier - correction,
        "reliability": reliability,
        "resolution": resolution,
        "uncertainty": o_bar * (1 - o_bar),
    }


# --- energy score ------------------------------------------------------------------------------


def energy_score_sums(
    truth: Any, ensemble: Any, w: Any, scales: Any
) -> tuple[np.ndarray, np.ndarray]:
    """Weighted sums per field of the fair energy score across channels (Gneiting & Raftery
    2007; fair form as Ferro 2014's CRPS): ``(num [N], den [N])``, score = Σ num / Σ den.

    At every pixel the vector over the C channels, divided by ``scales [C]`` (e.g. the truth's
    standard deviation per channel) so that the channels are commensurate, scores

        ES = (1/M) Σ_m ‖x_m - y‖ - 1/(2 M (M-1)) Σ_{m ≠ m'} ‖x_m - x_m'‖   (Euclidean norms),

    unbiased for the energy score of the distribution the M >= 2 members are drawn from. For
    C = 1 it is the fair CRPS divided by the scale. A pixel's weight is the smallest of its
    channels' weights ``w`` (0 if any channel is invalid; the cos-latitude weight otherwise).
    num[n] = Σ_pixels w ES and den[n] = Σ_pixels w of field n: sums over times for
    ``bootstrap.bootstrap_interval`` (take num and den as ``[N, 1]``).
    """
    y, x, wt = _prepare(truth, ensemble, w)
    c, m = y.shape[1], x.shape[1]
    if m < 2:
        raise UserError(f"energy score: the fair energy score needs at least 2 members, got {m}")
    s = to_numpy(scales, "scales")
    if s.shape != (c,) or not np.all(np.isfinite(s)) or np.any(s <= 0):
        raise UserError(f"scales: expected {c} positive finite scales [C], got {s.tolist()}")
    s = s.reshape(1, c, 1, 1)
    zy = y / s
    zx = x / s[:, None]
    skill = np.sqrt(((zx - zy[:, None]) ** 2).sum(axis=2)).mean(axis=1)  # [N, H, W]
    pairs = np.zeros_like(skill)  # Σ_{m < m'} ‖x_m - x_m'‖
    for i in range(m - 1):
        pairs += np.sqrt(((zx[:, i + 1 :] - zx[:, i : i + 1]) ** 2).sum(axis=2)).sum(axis=1)
    es = skill - pairs / (m * (m - 1))  # 2 Σ_{m < m'} / (2 M (M - 1))
    wp = wt.min(axis=1)  # [N, H, W]
    return (wp * es).sum(axis=(1, 2)), wp.sum(axis=(1, 2))
