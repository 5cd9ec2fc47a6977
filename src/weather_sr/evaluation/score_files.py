"""`weather-sr score` and ``weather_sr.score``: any tool's output scored against the truth.

The predictions are lined up with the truth by :mod:`weather_sr.evaluation.align`, read chunk by
chunk of times and scored by :class:`~weather_sr.evaluation.scoring.Scoring`, the same code that
scores ``evaluate``'s samples, so the numbers agree for the same fields. With an LR input the
interpolation baselines (nearest, bilinear, bicubic of the LR field) are scored beside them, and
every method's consistency with that input.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr
from tqdm.auto import tqdm

from weather_sr.errors import UserError
from weather_sr.evaluation.align import ScoreSet, align
from weather_sr.evaluation.evalset import BASELINES, EvalSet, baseline_predictions
from weather_sr.evaluation.scoring import Scoring, truth_reference
from weather_sr.evaluation.series import SeriesStore
from weather_sr.evaluation.temporal import resolve_sum_window
from weather_sr.inference.stream import check_chunk_fields, chunks

__all__ = ["score", "score_files"]


def _run(scores: ScoreSet, *, baselines: bool, seed: int, chunk_fields: int,
         block: int | None = None, show_progress: bool = False, folder: Path | None = None,
         sum_window: int | str | None = None
         ) -> tuple[dict[str, dict[str, Any]], EvalSet, dict[str, np.ndarray], float, Scoring]:
    """(results, the first field's EvalSet, the first field of every method, the fraction of
    pixels scored, the Scoring) of ``scores``; the fields of the series scores go to a
    temporary folder in ``folder`` (default: the system's), removed at the end."""
    check_chunk_fields(chunk_fields)
    resolve_sum_window(sum_window, scores.times)  # a bad --sum-window fails before any reading
    clash = [k for k in scores.predictions if baselines and k in BASELINES]
    if clash and scores.lr is not None:
        raise UserError(f"prediction name {clash[0]!r} is a baseline's: give another name")
    parts = chunks(scores.n_fields, chunk_fields)
    reference = truth_reference(scores.truth_values(a, b) for a, b in parts)
    first, heads, valid = None, {}, 0.0
    with tempfile.TemporaryDirectory(prefix=".weather-sr-series-", dir=folder) as tmp:
        scoring = Scoring(seed, reference=reference, block=block,
                          store=SeriesStore(tmp, scores.n_fields), sum_window=sum_window)
        for a, b in tqdm(parts, desc="scoring", unit="chunk", leave=False,
                         disable=None if show_progress else True):
            data, predictions = scores.chunk(a, b)
            if baselines and data.lr is not None:
                predictions = {**baseline_predictions(data), **predictions}
            scoring.update(data, predictions)
            valid += float(data.mask.sum())
            if first is None:
                first, heads = data.head(), {k: v[:1] for k, v in predictions.items()}
        assert first is not None
        results = scoring.results()
    return results, first, heads, valid / (scores.n_fields * first.mask[0].size), scoring


def score(
    prediction: xr.Dataset | Mapping[str, xr.Dataset],
    truth: xr.Dataset,
    lr: xr.Dataset | None = None,
    *,
    rename: Mapping[str, str] | None = None,
    variables: Sequence[str] | None = None,
    member_dim: str | None = None,
    area_weighted: bool = False,
    baselines: bool = True,
    seed: int = 0,
    chunk_fields: int = 8,
    block: int | None = None,
    sum_window: int | str | None = None,
) -> dict[str, dict[str, Any]]:
    """Score a prediction (an ensemble with a member dim, or deterministic) against ``truth``.

    ``prediction``: one Dataset (labelled "prediction") or ``{label: Dataset}``; ``lr``: the LR
    input, for the consistency scores and the interpolation baselines (``baselines``);
    ``block``: the bootstrap's block length in times (``evaluation.scoring``); ``sum_window``:
    the window of the CRPS of sums over consecutive times, a number of times or a duration
    (``"24h"``; None: ``evaluation.temporal.DEFAULT_SUM_WINDOW`` where it applies).
    The rules of :mod:`weather_sr.evaluation.align` apply (names, times, grid, units).
    Returns ``{method: metrics}`` as ``metrics.json``'s "results" of ``evaluate``.

        import xarray as xr, weather_sr
        results = weather_sr.score(xr.open_dataset("hr_sample.nc"),
                                   xr.open_dataset("truth.nc"))
        results["prediction"]["mean"]["crps"]
    """
    preds = {"prediction": prediction} if isinstance(prediction, xr.Dataset) else dict(prediction)
    scores = align(preds, truth, lr, rename=rename, variables=variables, member_dim=member_dim,
                   area_weighted=area_weighted)
    return _run(scores, baselines=baselines, seed=seed, chunk_fields=chunk_fields,
                block=block, sum_window=sum_window)[0]


def _labels(paths: Sequence[str | os.PathLike[str]], names: Sequence[str] | None) -> list[str]:
    if names:
        if len(names) != len(paths):
            raise UserError(f"--name: {len(names)} names for {len(paths)} --prediction files: "
                            "give one per prediction, in order")
        if len(set(names)) != len(names):
            raise UserError("--name: the names must differ")
        return list(names)
    labels: list[str] = []
    for p in paths:
        stem = Path(p).name.removesuffix(".zarr").rsplit(".", 1)[0] or "prediction"
        label, k = stem, 2
        while label in labels or label in BASELINES:
            label, k = f"{stem}-{k}", k + 1
        labels.append(label)
    return labels


def score_files(
    predictions: Sequence[str | os.PathLike[str]],
    truth: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    lr: str | os.PathLike[str] | None = None,
    names: Sequence[str] | None = None,
    overwrite: bool = False,
    show_progress: bool = True,
    rename: Mapping[str, str] | None = None,
    variables: Sequence[str] | None = None,
    member_dim: str | None = None,
    area_weighted: bool = False,
    baselines: bool = True,
    seed: int = 0,
    chunk_fields: int = 8,
    block: int | None = None,
    sum_window: int | str | None = None,
) -> tuple[Path, dict[str, dict[str, Any]]]:
    """The whole ``weather-sr score``: read the files, score, write the report folder ``out``
    (report.md, metrics.json, figures) atomically; the other options are :func:`score`'s.
    Returns (path of report.md, results)."""
    from weather_sr.atomic import atomic_output, check_output_path
    from weather_sr.data.files import check_zarr_chunks, detect_engine, open_dataset
    from weather_sr.evaluation.report import write_report
    from weather_sr.lock import lock_output
    from weather_sr.targets import Source, check_target

    if not predictions:
        raise UserError("give at least one --prediction")
    labels = _labels(predictions, names)
    sources = [Source("--prediction", p, data=True) for p in predictions]
    sources += [Source("--truth", truth, data=True), Source("--lr", lr, data=True)]
    check_target(out, "report folder", "--out", sources, folder=True)
    with lock_output(out, "report folder"), ExitStack() as files:
        check_output_path(out, overwrite, what="report folder", marker="report", option="--out")

        def opened(path: str | os.PathLike[str]) -> xr.Dataset:
            ds, paths = open_dataset(path)
            files.enter_context(ds)
            if detect_engine(paths[0]) == "zarr":  # a store with missing chunks would read NaN
                check_zarr_chunks(paths[0], list(ds.data_vars))
            return ds

        where = {label: f"--prediction {p}" for label, p in zip(labels, predictions, strict=True)}
        where.update(truth=f"--truth {truth}", lr=f"--lr {lr}")
        scores = align({label: opened(p)
                        for label, p in zip(labels, predictions, strict=True)},
                       opened(truth), None if lr is None else opened(lr), where=where,
                       rename=rename, variables=variables, member_dim=member_dim,
                       area_weighted=area_weighted)
        results, first, heads, valid, scoring = _run(
            scores, baselines=baselines, seed=seed, chunk_fields=chunk_fields, block=block,
            show_progress=show_progress, folder=Path(out).absolute().parent,
            sum_window=sum_window)
        settings = _settings(scores, first, labels, predictions, truth, lr, seed)
        settings.update(scored_fraction=valid, bootstrap=scoring.settings())
        with atomic_output(out, overwrite=overwrite, what="report folder", marker="report",
                           option="--out", checked=True) as tmp:
            write_report(tmp, first, heads, results, settings=settings)
    return Path(out) / "report.md", results


def _settings(scores: ScoreSet, first: EvalSet, labels: Sequence[str],
              paths: Sequence[str | os.PathLike[str]], truth: Any, lr: Any,
              seed: int) -> dict[str, Any]:
    times = scores.times
    dated = np.issubdtype(times.dtype, np.datetime64)
    return {
        "command": "score",
        "data": str(truth),
        "lr": None if lr is None else str(lr),
        "predictions": {label: {"path": str(p), "members": scores.predictions[label].members}
                        for label, p in zip(labels, paths, strict=True)},
        "n_fields": scores.n_fields,
        "times": [str(times[0])[:19], str(times[-1])[:19]] if dated else [],
        "scale_factor": first.scale_factor,
        "area_weighted": scores.area_weighted,
        "seed": seed,
    }
