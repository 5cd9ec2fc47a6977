"""The one home of scoring: every method's predictions on one split, chunk by chunk of fields.

``weather-sr evaluate`` samples its checkpoints and hands each chunk here; ``weather-sr score``
reads any tool's files (:mod:`weather_sr.evaluation.score_files`) and hands each chunk here too,
so both give the same numbers for the same fields. Per method:

- every field score of :class:`~weather_sr.evaluation.accumulate.ScoreAccumulator`, with the
  PIT histogram, the reliability diagram for the truth's ``LEVELS`` quantiles and the energy
  score of ensembles (thresholds and channel scales from :func:`truth_reference`);
- consistency with the input (:mod:`weather_sr.evaluation.consistency`) when the split has an LR
  field on the HR grid's blocks;
- 95 % block-bootstrap intervals over the fields of the headline scores and paired tests
  against every reference method (:func:`reference_methods`;
  :mod:`weather_sr.evaluation.significance`), when the fields make at least ``MIN_BLOCKS``
  bootstrap blocks;
- with a :class:`~weather_sr.evaluation.series.SeriesStore`, the scores of the series at every
  grid point (distributions, extremes, climate indices: :mod:`weather_sr.evaluation.series`)
  and their temporal coherence (CRPS of sums over ``sum_window``, temporal spectra:
  :mod:`weather_sr.evaluation.temporal`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from weather_sr.evaluation import significance
from weather_sr.evaluation.accumulate import ScoreAccumulator, to_plain
from weather_sr.evaluation.bootstrap import default_block_length
from weather_sr.evaluation.consistency import ConsistencyAccumulator
from weather_sr.evaluation.evalset import BASELINES, EvalSet, scorer
from weather_sr.evaluation.metrics import area_weights
from weather_sr.evaluation.series import SeriesLayout, SeriesStore, series_scores

__all__ = ["LEVELS", "Scoring", "TruthReference", "reference_methods", "truth_reference"]

LEVELS = (0.9, 0.99)  # quantile levels of the truth: the reliability diagram's thresholds
_PER_FIELD = 4096  # truth values per field and channel kept for the thresholds and scales
# Fewer blocks of fields than this and a block bootstrap cannot estimate a score's sampling
# distribution (with 2 blocks of 2 fields every difference looks significant): no intervals.
MIN_BLOCKS = 8


@dataclass(frozen=True)
class TruthReference:
    """The truth's quantiles at ``levels`` ``[C, K]`` and standard deviations ``[C]``."""

    levels: tuple[float, ...]
    thresholds: np.ndarray
    scales: np.ndarray


def truth_reference(truths: Iterable[np.ndarray], levels: tuple[float, ...] = LEVELS
                    ) -> TruthReference:
    """Quantiles and standard deviations per channel of the finite values of the truth,
    given as chunks ``[n, C, H, W]`` of the split. Each field contributes the same evenly
    strided pixels (at most ``_PER_FIELD``), so the result does not depend on the chunking and
    memory stays small."""
    kept: list[np.ndarray] = []
    for truth in truths:
        n, c = truth.shape[:2]
        flat = truth.reshape(n, c, -1)
        kept.append(flat[:, :, :: max(1, flat.shape[-1] // _PER_FIELD)])
    values = np.concatenate(kept).transpose(1, 0, 2).reshape(kept[0].shape[1], -1)
    thresholds, scales = [], []
    for row in values:
        row = row[np.isfinite(row)]
        thresholds.append(np.quantile(row, levels) if row.size else np.full(len(levels), np.nan))
        scales.append(row.std() if row.size > 1 else np.nan)
    scale = np.asarray(scales)
    return TruthReference(tuple(levels), np.asarray(thresholds),
                          np.where(np.isfinite(scale) & (scale > 0), scale, 1.0))


def reference_methods(results: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """The methods every other is compared with: bicubic and every trained (or scored)
    deterministic method that is not an interpolation baseline."""
    return [n for n, r in results.items() if r["kind"] == "deterministic"
            and (n == "bicubic" or n not in BASELINES)]


class Scoring:
    """Scores of several methods over one split, given chunk by chunk in the split's order.

    Args:
        seed: rank-histogram and PIT tie breaking, and the bootstrap's draws.
        reference: the truth's thresholds and scales (reliability diagram, energy score);
            None leaves those two out.
        block: bootstrap block length in fields (default ``default_block_length(N)``).
        n_boot: bootstrap replicates. level: the intervals' confidence level.
        store: where the fields go for the series scores (None: no series scores).
        sum_window: the window of the CRPS of sums over consecutive times, a number of times or
            a duration (None: ``temporal.DEFAULT_SUM_WINDOW`` where it applies;
            :func:`~weather_sr.evaluation.temporal.resolve_sum_window`).
    """

    def __init__(self, seed: int = 0, *, reference: TruthReference | None = None,
                 block: int | None = None, n_boot: int = 1000, level: float = 0.95,
                 store: SeriesStore | None = None, sum_window: int | str | None = None) -> None:
        self._seed = seed
        self._sum_window = sum_window
        self._store = store
        self._first: EvalSet | None = None
        self._reference = reference
        self._boot = {"block": block, "n_boot": n_boot, "level": level}
        self._scores: dict[str, ScoreAccumulator] = {}
        self._consistency: dict[str, ConsistencyAccumulator] = {}
        self._channels: list[str] = []

    @property
    def n_fields(self) -> int:
        """The fields given to ``update`` so far."""
        return next(iter(self._scores.values())).n_fields if self._scores else 0

    def _accumulator(self, data: EvalSet) -> ScoreAccumulator:
        ref = self._reference
        return scorer(data, self._seed, **({} if ref is None else {
            "thresholds": ref.thresholds, "threshold_levels": ref.levels,
            "scales": ref.scales}))

    def update(self, data: EvalSet, predictions: Mapping[str, np.ndarray]) -> None:
        """Add one chunk: ``data`` (its truth ``[n, C, H, W]``, mask, LR) and each method's
        prediction ``[n, C, H, W]`` or ensemble ``[n, M, C, H, W]`` on those fields."""
        truth = np.nan_to_num(data.truth)
        self._channels = list(data.channels)
        if self._store is not None:
            self._store.write(self.n_fields, np.where(data.mask > 0, data.truth, np.nan),
                              predictions, data.time_values)
        self._first = self._first or data.head()
        for label, pred in predictions.items():
            if label not in self._scores:
                self._scores[label] = self._accumulator(data)
            self._scores[label].update(truth, pred, mask=data.mask)
            if data.lr is not None and data.scale_factor is not None:
                self._consistency.setdefault(label, ConsistencyAccumulator(
                    data.scale_factor, data.coarsen_lat)).update(data.lr, pred, data.mask)

    def _series(self, results: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
        """The series scores of every method from the store."""
        data, store = self._first, self._store
        if data is None or store is None:
            return {}
        h, w = data.truth.shape[-2:]
        weights = area_weights(data.lat) if data.lat_is_degrees else np.ones(h)
        times = np.asarray(store.times) if store.times else np.arange(self.n_fields)
        layout = SeriesLayout(list(data.channels), list(data.units), times, weights, w,
                              {k: int(r["n_members"]) for k, r in results.items()})
        return series_scores(store.read_band, layout, height=h, sum_window=self._sum_window)

    def settings(self) -> dict[str, Any]:
        """How the intervals were computed: ``{"block", "n_boot", "level", "n_fields",
        "blocks", "tested"}``; ``tested`` is False (no intervals, no tests) when the fields
        make fewer than ``MIN_BLOCKS`` blocks."""
        n = self.n_fields
        block = self._boot["block"] or default_block_length(max(n, 1))
        blocks = n // block if block <= n else 0
        return {**self._boot, "block": block, "n_fields": n, "blocks": blocks,
                "tested": blocks >= MIN_BLOCKS}

    def results(self) -> dict[str, dict[str, Any]]:
        """``{method: metrics}`` as ``accumulate.ScoreAccumulator.result`` gives them, with
        ``lr_consistency`` (``{channel: {"rmse", "max_abs"}}``) where there was an LR field,
        ``intervals`` (``{score: {channel: [lo, hi]}}``) and ``paired`` (``{reference: {score:
        {channel: {"diff", "lo", "hi", "p_value", "significant"}}}}``) when ``settings()``
        says ``tested``."""
        results = {name: acc.result() for name, acc in self._scores.items()}
        for name, acc in self._consistency.items():
            results[name]["lr_consistency"] = acc.result(self._channels)
        if self._store is not None:
            for name, scores in self._series(results).items():
                results[name].update(scores)
        boot = self.settings()
        if not boot["tested"]:
            return results
        boot = {k: boot[k] for k in ("block", "n_boot", "level")}
        rng = np.random.default_rng(self._seed)
        series = {name: acc.series() for name, acc in self._scores.items()}
        first = next(iter(results.values()))
        freq = np.asarray(first["psd"]["freq"][first["channels"][0]], dtype=np.float64)
        channels = first["channels"]
        for name, s in series.items():
            found = significance.intervals(s, freq, rng=rng, **boot)
            results[name]["intervals"] = {
                k: ({"all": [to_plain(lo[0]), to_plain(hi[0])]} if k == "energy_score" else
                    {ch: [to_plain(lo[i]), to_plain(hi[i])] for i, ch in enumerate(channels)})
                for k, (lo, hi) in found.items()}
        for name in results:
            paired = {ref: significance.paired_tests(series[name], series[ref], freq, rng=rng,
                                                     **boot)
                      for ref in reference_methods(results) if ref != name}
            results[name]["paired"] = {
                ref: {score: {ch: {k: to_plain(v[i]) for k, v in test.items()}
                              for i, ch in enumerate(channels)}
                      for score, test in tests.items()}
                for ref, tests in paired.items()}
        return results
