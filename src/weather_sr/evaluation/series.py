"""Scores of the time series at every grid point, after the CORDEX-ML-Bench evaluation:
distributions and extremes (:mod:`~weather_sr.evaluation.distributions`), lag-1
autocorrelation, interannual variability, inter-variable correlation, and the CORDEX climate
indices (:mod:`~weather_sr.evaluation.indices`, computed with xclim).

These need every time of a grid point at once, so they are read in bands of rows over all
times (``read_band(y0, y1)``): memory grows with the rows of a band times the number of times,
and a band is as many rows as fit in ``BAND_BYTES`` (at least one). Per-point scores are exact;
pooled scores (over all times and points: pooled quantiles, Wasserstein-1, Perkins skill score,
log-histogram distance, pooled correlation) use every ``stride``-th grid point, with the stride
the smallest that keeps at most ``POOLED_VALUES`` values per channel (every point on the shipped
samples), the same points whatever the bands. Every score is area weighted (``weights``, one
per row). An ensemble's members are each scored as a prediction and summarised by the members'
mean (``series``) and spread (``series_spread``, std with ddof = 1). The fields are kept in
float32 (as models write them) between the two passes. The indices are annual, so a series
shorter than a year gets none (a note says so). The same pass scores the temporal coherence of
each method as a whole (``temporal``: the CRPS of sums over k consecutive times and the temporal
power spectra; :mod:`~weather_sr.evaluation.temporal`, where the layout is).
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from weather_sr.errors import UserError
from weather_sr.evaluation import distributions as dist
from weather_sr.evaluation.accumulate import to_plain
from weather_sr.evaluation.temporal import TemporalScores

__all__ = ["SeriesLayout", "series_scores"]

BAND_BYTES = 256 * 2**20
POOLED_VALUES = 1_000_000
MIN_TIMES = 3
MIN_YEAR_DAYS = 364  # the indices are annual: a series shorter than a year gets none
ReadBand = Callable[[int, int], tuple[np.ndarray, dict[str, np.ndarray]]]
"""``read_band(y0, y1)`` -> (truth ``[T, C, y1-y0, W]``, NaN where not scored; {method:
``[T, C, h, W]`` or ``[T, M, C, h, W]``}, finite where the truth is)."""


class SeriesStore:
    """Every method's fields of a split in a temporary Zarr store in ``folder``: written chunk
    by chunk of fields as they are scored, read back in bands of rows over all fields
    (``read_band``). Chunks of one field, so writes touch only their fields."""

    def __init__(self, folder: Any, n_fields: int) -> None:
        self._folder, self._n = Path(folder), n_fields
        self._arrays: dict[str, Any] = {}
        self.times: list[Any] = []

    def _array(self, name: str, chunk: np.ndarray) -> Any:
        import zarr

        if name not in self._arrays:
            self._arrays[name] = zarr.create_array(
                store=str(self._folder / f"{len(self._arrays)}.zarr"),
                shape=(self._n, *chunk.shape[1:]), chunks=(1, *chunk.shape[1:]),
                dtype="float32", fill_value=np.nan)
        return self._arrays[name]

    def write(self, start: int, truth: np.ndarray, predictions: Mapping[str, np.ndarray],
              times: Any = None) -> None:
        """Fields ``start : start + n``: truth ``[n, C, H, W]`` (NaN where not scored) and
        each method's ``[n, C, H, W]`` or ``[n, M, C, H, W]``."""
        stop = start + truth.shape[0]
        self._array("", truth)[start:stop] = truth.astype(np.float32)  # "": the truth
        for name, values in predictions.items():
            self._array(f"method {name}", values)[start:stop] = values.astype(np.float32)
        self.times.extend([] if times is None else list(times))

    def read_band(self, y0: int, y1: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """The :data:`ReadBand` of the stored fields."""
        rows = slice(y0, y1)
        truth = np.asarray(self._arrays[""][..., rows, :])
        return truth, {k.removeprefix("method "): np.asarray(a[..., rows, :])
                       for k, a in self._arrays.items() if k}


@dataclass
class SeriesLayout:
    """What the series are: ``channels`` with their ``units``, ``times`` [T], row ``weights``
    [H], the width ``W`` and each method's member count (1: deterministic)."""

    channels: list[str]
    units: list[str]
    times: np.ndarray
    weights: np.ndarray
    width: int
    members: dict[str, int]

    def band_rows(self) -> int:
        per_row = self.times.size * self.width * len(self.channels) * 8
        return max(1, BAND_BYTES // max(1, per_row * (1 + sum(self.members.values()))))


class _Mean:
    """Weighted means over points of per-point arrays, accumulated band by band."""

    def __init__(self) -> None:
        self.sums: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def add(self, key: str, values: np.ndarray, w: np.ndarray) -> None:
        v = np.asarray(values, dtype=np.float64)
        ok = np.isfinite(v)
        part = (np.where(ok, v, 0.0) * w).sum(axis=-1), (ok * w).sum(axis=-1)
        old = self.sums.get(key)
        self.sums[key] = part if old is None else (old[0] + part[0], old[1] + part[1])

    def result(self, key: str) -> Any:
        total, weight = self.sums[key]
        mean = np.divide(total, weight, out=np.full(np.shape(total), np.nan), where=weight > 0)
        return float(mean) if mean.ndim == 0 else mean


def _years(times: np.ndarray) -> np.ndarray | None:
    if not np.issubdtype(times.dtype, np.datetime64):
        return None
    years = times.astype("datetime64[Y]").astype(np.int64)
    return years if np.unique(years).size >= 2 else None


def _band_scores(acc: _Mean, y: np.ndarray, x: np.ndarray, w: np.ndarray,
                 years: np.ndarray | None) -> None:
    """Add a band's per-point scores of one member ``x [T, C, P]`` against ``y [T, C, P]``."""
    q = np.asarray(dist.DEFAULT_QUANTILES)
    x = np.where(np.isfinite(y), x, np.nan)  # missing where the truth is
    for c in range(y.shape[1]):
        yc, xc = y[:, c], x[:, c]
        acc.add(f"{c}/quantile_bias",
                dist.pointwise_quantiles(xc, q) - dist.pointwise_quantiles(yc, q), w)
        acc.add(f"{c}/wasserstein", dist.pointwise_wasserstein1(xc, yc), w)
        lag = dist.lag1_autocorrelation_bias(yc, xc)
        for k in ("truth", "pred", "bias"):
            acc.add(f"{c}/lag1_{k}", lag[k], w)
        if years is not None:
            acc.add(f"{c}/iav_ratio", dist.interannual_variability_ratio(yc, xc, years)["ratio"],
                    w)
    if y.shape[1] >= 2:
        acc.add("correlation", dist.correlation_bias(y, x)["pointwise"], w)


_LEVEL = re.compile(r".+_[0-9]+(\.[0-9]+)?$")  # data.reading's name of a level: t_850


def _indices(series: np.ndarray, layout: SeriesLayout, notes: dict[str, str]
             ) -> dict[int, dict[str, np.ndarray]]:
    """CORDEX indices ``{channel index: {index: [P]}}`` of series ``[T, C, P]``; a channel
    without indices gets a note instead (a level of a 3-D variable, a variable that is neither
    precipitation nor air temperature by name and units, or too short a series)."""
    import xarray as xr

    from weather_sr.evaluation.indices import cordex_indices, index_family

    out: dict[int, dict[str, np.ndarray]] = {}
    times = layout.times
    dated = np.issubdtype(times.dtype, np.datetime64)
    span = (times.max() - times.min()) / np.timedelta64(1, "D") if dated else 0.0
    for c, name in enumerate(layout.channels):
        family = None if _LEVEL.match(name) else index_family(name, layout.units[c])
        if family is None:
            notes.setdefault(name, "no CORDEX index: not precipitation or near-surface air "
                             "temperature by its name and units")
            continue
        if span < MIN_YEAR_DAYS:
            notes.setdefault(name, "no CORDEX index: the indices are annual and the series "
                             f"spans {span:.3g} days, less than a year")
            continue
        da = xr.DataArray(series[:, c], dims=("time", "point"), coords={"time": layout.times},
                          name=name, attrs={"units": layout.units[c]})
        try:
            found = {k: np.asarray(v.values) for k, v in cordex_indices(da, family).items()}
        except UserError as err:
            notes.setdefault(name, f"no CORDEX index: {err}")
            continue
        if found:
            out[c] = found
        else:
            notes.setdefault(name, "no CORDEX index: daily mean temperatures have none (txx, "
                             "tnn and su need daily maxima or minima)")
    return out


def _index_scores(acc: _Mean, truth: Mapping[int, Mapping[str, np.ndarray]],
                  pred: Mapping[int, Mapping[str, np.ndarray]], w: np.ndarray) -> None:
    """Add a band's index maps of one member against the truth's."""
    for c, indices in truth.items():
        for index, a in indices.items():
            b = pred[c][index]
            acc.add(f"{c}/index/{index}/truth", a, w)
            acc.add(f"{c}/index/{index}/prediction", b, w)
            acc.add(f"{c}/index/{index}/bias", b - a, w)
            acc.add(f"{c}/index/{index}/sq", (b - a) ** 2, w)


def _pooled(y: np.ndarray, x: np.ndarray, w: np.ndarray) -> dict[int | str, dict[str, Any]]:
    """Pooled scores of one member ``x [T, C, P]`` on the gathered points."""
    out: dict[int | str, dict[str, Any]] = {}
    for c in range(y.shape[1]):
        yc, xc = y[:, c], x[:, c]
        out[c] = {"quantile_bias": dist.pooled_quantile_bias(yc, xc, weights=w),
                  "wasserstein": dist.pooled_wasserstein1(yc, xc, weights=w),
                  "perkins": dist.perkins_skill_score(yc, xc, weights=w),
                  "log_histogram_distance": dist.log_histogram_distance(yc, xc, weights=w)}
    if y.shape[1] >= 2:
        out["correlation"] = {"pooled": dist.correlation_bias(y, x, weights=w)["pooled"]}
    return out


def _member_result(acc: _Mean, pooled: Mapping[int | str, Any], layout: SeriesLayout
                   ) -> dict[str, Any]:
    """One member's (or a deterministic method's) scores as plain nested dicts."""
    channels: dict[str, Any] = {}
    for c, name in enumerate(layout.channels):
        r = {"quantile_bias": {"pointwise_mean": acc.result(f"{c}/quantile_bias"),
                               "pooled": pooled[c]["quantile_bias"]},
             "wasserstein": {"pointwise_mean": acc.result(f"{c}/wasserstein"),
                             "pooled": pooled[c]["wasserstein"]},
             "perkins": pooled[c]["perkins"],
             "log_histogram_distance": pooled[c]["log_histogram_distance"],
             "lag1_autocorrelation": {k: acc.result(f"{c}/lag1_{key}") for k, key in
                                      (("truth", "truth"), ("prediction", "pred"),
                                       ("bias", "bias"))}}
        if f"{c}/iav_ratio" in acc.sums:
            r["interannual_variability_ratio"] = acc.result(f"{c}/iav_ratio")
        indices = sorted({k.split("/")[2] for k in acc.sums if k.startswith(f"{c}/index/")})
        if indices:
            r["indices"] = {}
            for index in indices:
                key = f"{c}/index/{index}"
                r["indices"][index] = {
                    "truth": acc.result(f"{key}/truth"),
                    "prediction": acc.result(f"{key}/prediction"),
                    "bias": acc.result(f"{key}/bias"),
                    "rmse": np.sqrt(acc.result(f"{key}/sq"))}
        channels[name] = r
    out: dict[str, Any] = {"channels": channels}
    if "correlation" in acc.sums:
        pairs = [f"{a}~{b}" for i, a in enumerate(layout.channels)
                 for b in layout.channels[i + 1:]]
        point, pool = acc.result("correlation"), pooled["correlation"]["pooled"]
        out["correlation_bias"] = {p: {"pointwise_mean": point[k], "pooled": pool[k]}
                                   for k, p in enumerate(pairs)}
    return out


def series_scores(read_band: ReadBand, layout: SeriesLayout, *, height: int,
                  sum_window: int | str | None = None) -> dict[str, dict[str, Any]]:
    """``{method: {"series": ..., "series_spread": ... (ensembles), "temporal": ...}}`` over
    the ``height`` rows read by ``read_band`` (see the module docstring); {} with fewer than
    ``MIN_TIMES`` times (a lag-1 autocorrelation needs 2 pairs). ``sum_window``: the window of
    the CRPS of sums (:func:`~weather_sr.evaluation.temporal.resolve_sum_window`)."""
    t, width = layout.times.size, layout.width
    if t < MIN_TIMES:
        return {}
    stride = max(1, math.ceil(t * height * width / POOLED_VALUES))
    years = _years(layout.times)
    accs = {label: [_Mean() for _ in range(m)] for label, m in layout.members.items()}
    gathered: dict[str, list[np.ndarray]] = {"truth": [], **{k: [] for k in accs}}
    notes: dict[str, str] = {}
    temporal = TemporalScores(layout.times, layout.channels, sum_window)
    rows = layout.band_rows()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN points give NaN scores
        for y0 in range(0, height, rows):
            y1 = min(height, y0 + rows)
            truth, preds = read_band(y0, y1)
            p = (y1 - y0) * width
            y = truth.reshape(t, truth.shape[1], p).astype(np.float64)
            w = np.repeat(layout.weights[y0:y1], width)
            pick = np.arange(y0 * width, y1 * width) % stride == 0
            gathered["truth"].append(y[..., pick])
            truth_indices = _indices(y, layout, notes)
            for label, x in preds.items():
                xs = np.asarray(x, np.float64).reshape(t, -1, y.shape[1], p)
                gathered[label].append(xs[..., pick])
                for m, acc in enumerate(accs[label]):
                    _band_scores(acc, y, xs[:, m], w, years)
                    if truth_indices:
                        _index_scores(acc, truth_indices, _indices(xs[:, m], layout, {}), w)
                temporal.add_band(label, y, xs, w)
        gy = np.concatenate(gathered["truth"], axis=-1)
        gw = np.repeat(layout.weights, width)[np.arange(height * width) % stride == 0]
        out: dict[str, dict[str, Any]] = {}
        for label, members in accs.items():
            gx = np.concatenate(gathered[label], axis=-1)
            results = [_member_result(acc, _pooled(gy, gx[:, m], gw), layout)
                       for m, acc in enumerate(members)]
            out[label] = {"series": to_plain(dist.summarise_members(results, False))}
            if len(results) > 1:
                out[label]["series_spread"] = to_plain(dist.summarise_members(results, True))
            out[label]["series"].update(quantiles=list(dist.DEFAULT_QUANTILES), notes=notes,
                                        pooled_stride=stride)
            out[label]["temporal"] = to_plain(temporal.result(label))
    return out
