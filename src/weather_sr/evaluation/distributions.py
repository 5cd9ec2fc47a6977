"""Distribution scores of downscaled series, after the CORDEX-ML-Bench evaluation.

Definitions follow WCRP-CORDEX/ml-benchmark, ``evaluation/diagnostics.py`` and
``evaluation/indices.py`` (main branch; Perkins and log-histogram distance: branch
``feature/pss-lhd``, commit 9be15db), with area weights added. Conventions (numpy arrays, torch
tensors or xarray DataArrays in this order; all computations in float64 numpy):

- truth ``[T, P]`` (T times, P grid points; NaN or inf = missing, ignored), deterministic
  prediction ``[T, P]``, ensemble ``[T, M, P]`` (M members; scored with ``ensemble_summary``);
  ``correlation_bias`` takes ``[T, C, P]`` (C variables);
- weights ``[P]``: point weights >= 0 (e.g. cos-latitude area weights), None = uniform;
- the prediction is scored where the truth is valid only, and must be finite there.

"Pointwise" scores are computed per grid point over time (every valid time weighs the same) and
summarised by their weighted mean over points (``*_mean``); "pooled" scores treat all valid
(time, point) values as one sample in which a value at point p has weight ``weights[p]``.

Weighted quantile (used throughout): the inverse of the weighted empirical CDF,
Q(q) = min{x : F(x) >= q} with F(x) = Σ_{v_i <= x} w_i / Σ w_i (Hyndman & Fan 1996 type 1; numpy's
``method="inverted_cdf"`` for equal weights; with integer weights, the quantile of the sample in
which every value is repeated w_i times). The benchmark's ``quantile`` index interpolates linearly
between order statistics (type 7) instead; the two differ by less than one spacing between order
statistics.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from weather_sr.errors import UserError
from weather_sr.evaluation.metrics import to_numpy

DEFAULT_QUANTILES = (0.01, 0.05, 0.5, 0.95, 0.99)
DEFAULT_BINS = 50
LHD_MIN_COUNT = 10  # ml-benchmark's lhd default


def _point_weights(weights: Any, p: int) -> np.ndarray:
    """Point weights ``[P]`` (ones when None), checked finite and >= 0."""
    if weights is None:
        return np.ones(p)
    w = to_numpy(weights, "weights")
    if w.shape != (p,) or not np.all(np.isfinite(w)) or np.any(w < 0):
        raise UserError(f"weights: expected {p} finite values >= 0 (one per point), got {w.shape}")
    return w


def _series(
    truth: Any, pred: Any, weights: Any, dims: str = "[T, P]"
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Validate and convert: ``(truth, pred, valid, weights [P])``, truth and pred NaN where the
    truth is missing (``valid`` False), both of the truth's shape ``dims``."""
    y = to_numpy(truth, "truth")
    x = to_numpy(pred, "prediction")
    if y.ndim != dims.count(",") + 1 or y.shape[0] < 1:
        raise UserError(f"truth: expected {dims}, got shape {y.shape}")
    if x.shape != y.shape:
        raise UserError(f"prediction: expected shape {y.shape} like the truth, got {x.shape}")
    valid = np.isfinite(y)
    if not np.all(np.isfinite(x[valid])):
        raise UserError("prediction: NaN or inf where the truth is valid; check the model output")
    w = _point_weights(weights, y.shape[-1])
    if not np.any(valid & (w > 0)):
        raise UserError("truth: no valid value at a point of positive weight; check NaNs, weights")
    return np.where(valid, y, np.nan), np.where(valid, x, np.nan), valid, w


def _point_mean(field: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Weighted mean over points (last axis) of ``field [..., P]``, skipping NaN points."""
    ok = np.isfinite(field) & (w > 0)
    wf = np.where(ok, w, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (np.where(ok, field, 0.0) * wf).sum(axis=-1) / wf.sum(axis=-1)


def _pooled(
    y: np.ndarray, x: np.ndarray, valid: np.ndarray, w: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Valid values of truth and prediction ``[N]`` with their weights ``[N]`` (pooled sample)."""
    ww = np.broadcast_to(w, y.shape)[valid]
    return y[valid], x[valid], ww


def weighted_quantile(values: Any, quantiles: Sequence[float], weights: Any = None) -> np.ndarray:
    """Weighted quantiles ``[Q]`` of ``values [N]`` with ``weights [N]`` (None = equal).

    Q(q) = min{x : F(x) >= q}, F the weighted empirical CDF (module docstring). Non-finite values
    and zero weights are left out.
    """
    v = to_numpy(values, "values").ravel()
    w = np.ones_like(v) if weights is None else to_numpy(weights, "weights").ravel()
    q = _quantiles(quantiles)
    if w.shape != v.shape or np.any(w < 0) or not np.all(np.isfinite(w)):
        raise UserError(f"weights: expected {v.size} finite values >= 0, got shape {w.shape}")
    keep = np.isfinite(v) & (w > 0)
    if not keep.any():
        return np.full(q.shape, np.nan)
    order = np.argsort(v[keep], kind="stable")
    vs, cw = v[keep][order], np.cumsum(w[keep][order])
    idx = np.searchsorted(cw, q * cw[-1], side="left")  # first i with cw[i] >= q W
    return vs[np.minimum(idx, vs.size - 1)]


def _quantiles(quantiles: Sequence[float]) -> np.ndarray:
    q = np.atleast_1d(np.asarray(quantiles, dtype=np.float64))
    if q.ndim != 1 or q.size == 0 or np.any(~np.isfinite(q)) or np.any((q < 0) | (q > 1)):
        raise UserError(f"quantiles: expected probabilities in [0, 1], got {quantiles!r}")
    return q


def pointwise_quantiles(series: np.ndarray, quantiles: np.ndarray) -> np.ndarray:
    """Quantiles ``[Q, P]`` over time of each point of ``series [T, P]`` (NaN = missing; NaN
    where a point has none): the inverted-CDF (type 1) quantile, the value of order
    ceil(q n) among the n valid ones (the first for q = 0). Equal to ``np.nanquantile(...,
    method="inverted_cdf")``, vectorised over points."""
    ordered = np.sort(series, axis=0)  # NaN last
    n = np.isfinite(series).sum(axis=0)  # [P]
    k = np.clip(np.ceil(quantiles[:, None] * n[None, :]).astype(np.int64) - 1, 0, None)
    k = np.minimum(k, np.maximum(n - 1, 0)[None, :])
    out = np.take_along_axis(ordered, k, axis=0)
    return np.where(n[None, :] > 0, out, np.nan)


def quantile_bias(
    truth: Any,
    pred: Any,
    *,
    quantiles: Sequence[float] = DEFAULT_QUANTILES,
    weights: Any = None,
) -> dict[str, np.ndarray]:
    """Quantile biases (prediction minus truth) of series ``[T, P]``.

    Returns ``quantiles [Q]``; ``pointwise [Q, P]``: q_pred(p) - q_truth(p), the quantiles over
    the valid times of each point (NaN at points with none); ``pointwise_mean [Q]``: its weighted
    mean over points; ``pooled [Q]``: weighted quantile of all valid (time, point) values of the
    prediction minus that of the truth. Quantile convention: module docstring. (The benchmark's
    ``bias_index`` with its ``quantile`` index is the pointwise field.)
    """
    y, x, valid, w = _series(truth, pred, weights)
    q = _quantiles(quantiles)
    pointwise = pointwise_quantiles(x, q) - pointwise_quantiles(y, q)
    return {"quantiles": q, "pointwise": pointwise, "pointwise_mean": _point_mean(pointwise, w),
            "pooled": _pooled_quantile_bias(y, x, valid, w, q)}


def pooled_quantile_bias(truth: Any, pred: Any, *,
                         quantiles: Sequence[float] = DEFAULT_QUANTILES,
                         weights: Any = None) -> np.ndarray:
    """``quantile_bias``'s ``pooled [Q]`` alone (no per-point quantiles to sort)."""
    y, x, valid, w = _series(truth, pred, weights)
    return _pooled_quantile_bias(y, x, valid, w, _quantiles(quantiles))


def _pooled_quantile_bias(y: np.ndarray, x: np.ndarray, valid: np.ndarray, w: np.ndarray,
                          q: np.ndarray) -> np.ndarray:
    py, px, pw = _pooled(y, x, valid, w)
    return weighted_quantile(px, q, pw) - weighted_quantile(py, q, pw)


def weighted_wasserstein1(
    u: Any, v: Any, u_weights: Any = None, v_weights: Any = None
) -> float:
    """1-Wasserstein distance of two weighted samples: ∫ |F_u(x) - F_v(x)| dx.

    The same quantity as ``scipy.stats.wasserstein_distance(u, v, u_weights, v_weights)``,
    computed from the two weighted empirical CDFs on the merged sorted values.
    """
    a, b = to_numpy(u, "u").ravel(), to_numpy(v, "v").ravel()
    wa = np.ones_like(a) if u_weights is None else to_numpy(u_weights, "u_weights").ravel()
    wb = np.ones_like(b) if v_weights is None else to_numpy(v_weights, "v_weights").ravel()
    if wa.shape != a.shape or wb.shape != b.shape or min(wa.sum(), wb.sum()) <= 0:
        raise UserError("Wasserstein: weights must match the values and have a positive sum")
    merged = np.sort(np.concatenate([a, b]))
    cdfs = []
    for vals, ws in ((a, wa), (b, wb)):
        order = np.argsort(vals, kind="stable")
        cum = np.concatenate([[0.0], np.cumsum(ws[order])])
        cdfs.append(cum[np.searchsorted(vals[order], merged[:-1], side="right")] / cum[-1])
    return float(np.sum(np.abs(cdfs[0] - cdfs[1]) * np.diff(merged)))


def wasserstein1(truth: Any, pred: Any, *, weights: Any = None) -> dict[str, Any]:
    """Wasserstein-1 distance of prediction and truth series ``[T, P]`` (benchmark:
    ``wasserstein_distance``, ``spatial=False`` / ``True``).

    Returns ``pooled`` (float): between the weighted samples of all valid (time, point) values;
    ``pointwise [P]``: over time at each point (truth and prediction share the valid times, so it
    is the mean absolute difference of the sorted values); ``pointwise_mean`` (float).
    """
    y, x, valid, w = _series(truth, pred, weights)
    pointwise = pointwise_wasserstein1(x, y)
    return {"pooled": _pooled_wasserstein1(y, x, valid, w), "pointwise": pointwise,
            "pointwise_mean": float(_point_mean(pointwise, w))}


def pooled_wasserstein1(truth: Any, pred: Any, *, weights: Any = None) -> float:
    """``wasserstein1``'s ``pooled`` alone (no per-point sorting)."""
    y, x, valid, w = _series(truth, pred, weights)
    return _pooled_wasserstein1(y, x, valid, w)


def _pooled_wasserstein1(y: np.ndarray, x: np.ndarray, valid: np.ndarray, w: np.ndarray
                         ) -> float:
    py, px, pw = _pooled(y, x, valid, w)
    return weighted_wasserstein1(py, px, pw, pw)


def pointwise_wasserstein1(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per-point W1 ``[P]`` of ``x, y [T, P]`` missing at the same times (NaN last after
    sorting): the mean absolute difference of the sorted values; NaN at empty points."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(np.abs(np.sort(x, axis=0) - np.sort(y, axis=0)), axis=0)


def histogram_edges(values: Sequence[np.ndarray], bins: int | Any = DEFAULT_BINS) -> np.ndarray:
    """Bin edges ``[B+1]``: ``bins`` equal bins over the common range of the finite values of
    all arrays in ``values`` (a constant sample gets the range value ± 0.5), or ``bins`` itself
    when it is an increasing sequence of at least 2 edges."""
    if np.ndim(bins) == 0:
        if int(bins) != bins or int(bins) < 1:
            raise UserError(f"bins: expected a number of bins >= 1 or bin edges, got {bins!r}")
        finite = np.concatenate([np.asarray(v)[np.isfinite(v)].ravel() for v in values])
        lo, hi = float(finite.min()), float(finite.max())
        if lo == hi:
            lo, hi = lo - 0.5, hi + 0.5
        return np.linspace(lo, hi, int(bins) + 1)
    edges = to_numpy(bins, "bins")
    if edges.ndim != 1 or edges.size < 2 or np.any(np.diff(edges) <= 0):
        raise UserError("bins: edges must be a strictly increasing vector of at least 2 values")
    return edges


def _histograms(
    truth: Any, pred: Any, bins: int | Any, weights: Any
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Normalised weighted frequencies and raw counts ``[B]`` of truth and prediction on common
    edges (pooled valid values; values outside given edges are left out, the frequencies are
    normalised over the bins, as the benchmark does)."""
    y, x, valid, w = _series(truth, pred, weights)
    py, px, pw = _pooled(y, x, valid, w)
    edges = histogram_edges([py, px], bins)
    out = []
    for vals in (py, px):
        h = np.histogram(vals, bins=edges, weights=pw)[0]
        out.append(h / h.sum() if h.sum() > 0 else h)
    counts = [np.histogram(vals, bins=edges)[0].astype(np.float64) for vals in (py, px)]
    return out[0], out[1], counts[0], counts[1]


def perkins_skill_score(
    truth: Any, pred: Any, *, bins: int | Any = DEFAULT_BINS, weights: Any = None
) -> float:
    """Perkins skill score (Perkins et al. 2007, J. Climate 20:4356): Σ_bins min(f_truth,
    f_pred) of the normalised (weighted) histograms of all valid values; 1 = identical, 0 = no
    overlap. Bins: ``histogram_edges`` (the benchmark's default is 100 bins)."""
    fy, fx, _, _ = _histograms(truth, pred, bins, weights)
    return float(np.minimum(fy, fx).sum())


def log_histogram_distance(
    truth: Any,
    pred: Any,
    *,
    bins: int | Any = DEFAULT_BINS,
    weights: Any = None,
    min_count: int = LHD_MIN_COUNT,
) -> float:
    """Logarithmic histogram distance as CORDEX-ML-Bench's ``lhd`` (ml-benchmark, branch
    ``feature/pss-lhd``, ``evaluation/diagnostics.py``): over the bins where both raw counts
    exceed ``min_count``, LHD = sqrt(mean(10 · log10(f_truth / f_pred)²)); 0 = identical, NaN
    when no bin qualifies.

    As in the benchmark's code, the square applies to log10 only (Python precedence), so LHD =
    sqrt(10) · RMS(log10 ratio), not the RMS of the ratio in dB. The benchmark takes ratios of
    counts; here of the normalised weighted frequencies, which equal the count ratios for uniform
    weights (truth and prediction share the valid values).
    """
    fy, fx, cy, cx = _histograms(truth, pred, bins, weights)
    ok = (cy > min_count) & (cx > min_count) & (fy > 0) & (fx > 0)
    if not ok.any():
        return float("nan")
    return float(np.sqrt(np.mean(10.0 * np.log10(fy[ok] / fx[ok]) ** 2)))


def _pearson(a: np.ndarray, b: np.ndarray, w: np.ndarray, axis: Any) -> np.ndarray:
    """Weighted Pearson correlation of ``a, b`` over ``axis``; ``w`` (same shape) is 0 where a
    pair is missing. NaN with fewer than 2 pairs or a zero variance."""
    n = (w > 0).sum(axis=axis)
    a, b = np.where(w > 0, a, 0.0), np.where(w > 0, b, 0.0)
    sw = w.sum(axis=axis, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        da = np.where(w > 0, a - (w * a).sum(axis=axis, keepdims=True) / sw, 0.0)
        db = np.where(w > 0, b - (w * b).sum(axis=axis, keepdims=True) / sw, 0.0)
        r = (w * da * db).sum(axis=axis) / np.sqrt(
            (w * da**2).sum(axis=axis) * (w * db**2).sum(axis=axis))
    return np.where(n >= 2, r, np.nan)


def lag1_autocorrelation(series: Any) -> np.ndarray:
    """Lag-1 autocorrelation ``[...]`` of ``series [T, ...]`` at every point: Pearson
    correlation of x[t] and x[t+1] over the pairs where both are finite (as the benchmark's
    ``lag1_corr``: ``xr.corr(x, x.shift(time=1))``); NaN with < 2 pairs or a constant series."""
    s = to_numpy(series, "series")
    if s.ndim < 1 or s.shape[0] < 3:
        raise UserError(f"series: expected [T, ...] with at least 3 times, got shape {s.shape}")
    a, b = s[:-1], s[1:]
    return _pearson(a, b, (np.isfinite(a) & np.isfinite(b)).astype(np.float64), axis=0)


def lag1_autocorrelation_bias(truth: Any, pred: Any, *, weights: Any = None) -> dict[str, Any]:
    """Lag-1 autocorrelations ``truth``, ``pred`` ``[P]`` of series ``[T, P]`` (the prediction
    masked where the truth is missing), ``bias = pred - truth [P]`` and its weighted mean
    ``bias_mean`` (float)."""
    y, x, _, w = _series(truth, pred, weights)
    ry, rx = lag1_autocorrelation(y), lag1_autocorrelation(x)
    return {"truth": ry, "pred": rx, "bias": rx - ry, "bias_mean": float(_point_mean(rx - ry, w))}


def _years(years: Any, t: int) -> np.ndarray:
    yr = np.asarray(getattr(years, "values", years))
    if np.issubdtype(yr.dtype, np.datetime64):
        yr = yr.astype("datetime64[Y]").astype(np.int64) + 1970
    if yr.shape != (t,):
        raise UserError(f"years: expected one year per time ({t}), got shape {yr.shape}")
    return yr


def interannual_variability(series: Any, years: Any, *, ddof: int = 0) -> np.ndarray:
    """Interannual variability ``[...]`` of ``series [T, ...]``: the standard deviation across
    years of the annual means at every point (the benchmark's ``interannual_var``:
    ``groupby("time.year").mean().std("year")``, hence ``ddof=0``).

    ``years [T]``: the year of each time (integers, or datetime64 times). Annual means skip
    missing values; NaN at points with fewer than 2 years of data.
    """
    s = to_numpy(series, "series")
    yr = _years(years, s.shape[0] if s.ndim else -1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # years without data give NaN
        means = np.stack([np.nanmean(s[yr == y], axis=0) for y in np.unique(yr)])
        std = np.nanstd(means, axis=0, ddof=ddof)
    return np.where(np.isfinite(means).sum(axis=0) >= 2, std, np.nan)


def interannual_variability_ratio(
    truth: Any, pred: Any, years: Any, *, weights: Any = None, ddof: int = 0
) -> dict[str, Any]:
    """Interannual variability ``truth``, ``pred`` ``[P]`` of series ``[T, P]`` (prediction
    masked like the truth), ``ratio = pred / truth [P]`` (the benchmark's ``ratio_index``; NaN
    where the truth's is 0 or undefined) and its weighted mean ``ratio_mean`` (float)."""
    y, x, _, w = _series(truth, pred, weights)
    sy = interannual_variability(y, years, ddof=ddof)
    sx = interannual_variability(x, years, ddof=ddof)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.where(sy > 0, sx / sy, np.nan)
    return {"truth": sy, "pred": sx, "ratio": ratio, "ratio_mean": float(_point_mean(ratio, w))}


def correlation_bias(truth: Any, pred: Any, *, weights: Any = None) -> dict[str, Any]:
    """Inter-variable correlation biases of series ``[T, C, P]`` (C >= 2 variables).

    For every pair i < j (``pairs``, a list of K tuples), over the (time, point) values where
    the truth of both is valid: ``truth [K]`` and ``pred [K]``, the weighted Pearson correlation
    of all those values (pooled), ``pooled [K] = pred - truth``; ``pointwise [K, P]``: the bias
    of the temporal correlation at each point (the benchmark's
    ``bias_multivariable_correlation``), and ``pointwise_mean [K]`` its weighted mean.
    """
    y, x, valid, w = _series(truth, pred, weights, dims="[T, C, P]")
    c = y.shape[1]
    if c < 2:
        raise UserError(f"correlation bias: needs at least 2 variables, got {c}")
    pairs = [(i, j) for i in range(c) for j in range(i + 1, c)]
    out: dict[str, list] = {"truth": [], "pred": [], "pointwise": []}
    for i, j in pairs:
        ok = (valid[:, i] & valid[:, j]).astype(np.float64)
        ry, rx = (_pearson(s[:, i], s[:, j], ok * w, axis=None) for s in (y, x))
        out["truth"].append(ry)
        out["pred"].append(rx)
        ty, tx = (_pearson(s[:, i], s[:, j], ok, axis=0) for s in (y, x))
        out["pointwise"].append(tx - ty)
    pointwise = np.array(out["pointwise"]).reshape(len(pairs), y.shape[2])
    ry, rx = np.array(out["truth"]), np.array(out["pred"])
    return {"pairs": pairs, "truth": ry, "pred": rx, "pooled": rx - ry, "pointwise": pointwise,
            "pointwise_mean": _point_mean(pointwise, w)}


def summarise_members(results: list[Any], spread: bool) -> Any:
    """Members' mean (or std, ddof=1) of float scores; dicts recursively; other values (labels
    such as ``pairs``) are those of the first member."""
    first = results[0]
    if isinstance(first, dict):
        return {k: summarise_members([r[k] for r in results], spread) for k in first}
    arr = np.asarray(results)
    if not np.issubdtype(arr.dtype, np.floating):
        return first
    value = arr.std(axis=0, ddof=1) if spread else arr.mean(axis=0)
    return float(value) if np.ndim(first) == 0 else value


def ensemble_summary(
    score: Callable[..., Any], truth: Any, ensemble: Any, *args: Any, **kwargs: Any
) -> dict[str, Any]:
    """Any score of this module for an ensemble: ``score(truth, member, *args, **kwargs)`` for
    each member of ``ensemble`` (the truth's shape with members on axis 1: ``[T, M, P]`` or
    ``[T, M, C, P]``), summarised over members.

    Returns ``{"members": M, "mean": ..., "spread": ...}``: mean and spread (std, ddof=1) over
    members, with the structure of the score's result (floats stay floats, arrays keep their
    shape; non-float entries such as ``pairs`` are passed through). M >= 2.
    """
    y = to_numpy(truth, "truth")
    e = to_numpy(ensemble, "ensemble")
    if e.ndim != y.ndim + 1 or (e.shape[0], *e.shape[2:]) != y.shape:
        raise UserError(f"ensemble: expected the truth's shape {y.shape} with members on axis 1, "
                        f"got {e.shape}")
    m = e.shape[1]
    if m < 2:
        raise UserError(f"ensemble summary: needs at least 2 members for a spread, got {m}")
    results = [score(y, e[:, k], *args, **kwargs) for k in range(m)]
    return {"members": m, "mean": summarise_members(results, False),
            "spread": summarise_members(results, True)}
