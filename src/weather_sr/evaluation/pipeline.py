"""Evaluate checkpoints and the interpolation baselines on a split and write the report.

Used by ``weather-sr evaluate`` and ``weather-sr demo``. The report folder is built in a
temporary folder beside ``out`` and renamed into place at the end, so an interrupted evaluation
leaves nothing half-written.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from weather_sr import distributed
from weather_sr.atomic import atomic_output, check_output_path
from weather_sr.data import DataBundle, build_datasets
from weather_sr.errors import UserError
from weather_sr.evaluation.evalset import (
    EvalSet,
    baseline_predictions,
    check_compatible,
    check_inputs_in_range,
    load_split,
    method_name,
    model_prediction,
    run_folder,
    split_size,
)
from weather_sr.evaluation.report import write_report
from weather_sr.evaluation.scoring import Scoring, truth_reference
from weather_sr.evaluation.series import SeriesStore
from weather_sr.evaluation.temporal import resolve_sum_window
from weather_sr.inference.downscale import checkpoint_sources
from weather_sr.inference.ensemble import SamplingOptions, noise_chain, previous_state
from weather_sr.inference.precision import resolve_precision
from weather_sr.inference.stream import check_chunk_fields, chunks
from weather_sr.lock import lock_output
from weather_sr.model.downscaling_model import DownscalingModel
from weather_sr.model.loading import load_model
from weather_sr.targets import Source, check_target


def bundle_for(model: DownscalingModel, data_path: str | None) -> DataBundle:
    """Datasets built exactly as for the checkpoint's training run, optionally on other files."""
    from weather_sr.model.data_setup import data_kwargs

    if model.meta is None:
        raise UserError("the model has no checkpoint metadata: load it with load_model")
    cfg = model.meta.run_config()
    if data_path is not None:
        cfg.data.path = data_path
    kwargs = data_kwargs(cfg)
    kwargs["patch_size"] = None  # evaluation uses full fields; no patch constraint applies
    return build_datasets(**kwargs)


def check_report_target(
    out: str | Path, checkpoints: Sequence[str | Path], data_path: str | None,
    models: Sequence[DownscalingModel] = (),
) -> None:
    """The report folder is not the current/home folder and holds none of what is read: the
    checkpoints, their training logs, ``--data`` and every path the checkpoints' configs name
    (``models``: once they are loaded; :func:`checkpoint_sources`)."""
    sources = [Source("--checkpoint", c) for c in checkpoints]
    sources += [Source("training log", run_folder(c) / "metrics.csv") for c in checkpoints]
    sources.append(Source("--data", data_path, data=True))
    for path, model in zip(checkpoints, models, strict=False):
        sources += checkpoint_sources(path, model)  # with --data too: its predictors, static
    check_target(out, "report folder", "--out", sources, folder=True)


def _progress_bar(label: str, show: bool) -> tuple[Any, Any]:
    # disable=None: no bar when stderr is not a terminal (logs, pipes keep one error line)
    bar = tqdm(total=1, desc=label, unit="eval", leave=False, dynamic_ncols=True,
               disable=None if show else True)

    def update(i: int, n: int) -> None:
        if (i, n) != (bar.n, bar.total):  # the sampler reports once per chunk of samples
            bar.total, bar.n = n, i
            bar.refresh()

    return bar, update


def evaluate_checkpoints(
    checkpoints: Sequence[str | Path],
    out: str | Path,
    *,
    options: SamplingOptions,
    data_path: str | None = None,
    split: str = "test",
    max_fields: int | None = None,
    device: torch.device | str = "cpu",
    overwrite: bool = False,
    names: Sequence[str] | None = None,
    sections: Sequence[str] = (),
    chunk_fields: int = 8,
    allow_out_of_range: bool = False,
    block: int | None = None,
    sum_window: int | str | None = None,
) -> tuple[Path, dict[str, Any]]:
    """Score every checkpoint and the baselines on ``split``; write the report into ``out``.

    The split is read, sampled and scored ``chunk_fields`` fields at a time
    (:class:`~weather_sr.evaluation.accumulate.ScoreAccumulator`; seeds per (field, member) of
    the split), so memory does not grow with the number of fields and the scores equal those
    of one pass (``evaluation.scoring``: with bootstrap intervals over the fields in blocks of
    ``block`` fields, and paired tests against the references; the CRPS of sums over
    ``sum_window``, a number of times or a duration, None: ``evaluation.temporal``'s default
    where it applies). Model inputs outside the training range are an error (a warning with
    ``allow_out_of_range``; :mod:`weather_sr.data.ranges`). Under ``torchrun`` every rank
    samples its share of each chunk and rank 0 scores and writes. Returns (path of report.md,
    {method: metrics}; {} on other ranks).
    """
    if not checkpoints:
        raise UserError("give at least one --checkpoint")
    check_chunk_fields(chunk_fields)
    check_report_target(out, checkpoints, data_path)
    main = distributed.current()[0] == 0
    # one writer per report folder (rank 0 writes): a second run exits at once
    with lock_output(out, "report folder", main), ExitStack() as stack:
        # fail before sampling, not after
        check_output_path(out, overwrite, what="report folder", marker="report", option="--out")
        models = [load_model(c, device) for c in checkpoints]
        check_report_target(out, checkpoints, data_path, models)
        bundle = bundle_for(models[0], data_path)
        n = split_size(bundle, split, max_fields)
        times = getattr(bundle, split).times
        split_times = None if times is None else np.asarray(times[:n])
        # a bad --sum-window fails before sampling; Scoring's times are these (or 0..n-1)
        resolve_sum_window(sum_window, np.arange(n) if split_times is None else split_times)
        parts = chunks(n, chunk_fields)
        data = load_split(bundle, split, max_fields, fields=parts[0])
        for path, model in zip(checkpoints, models, strict=True):
            check_compatible(model, data, str(path))  # every checkpoint, before any sampling
        labels = list(names) if names else _labels(checkpoints, models, baseline_predictions(data))
        first: EvalSet = data.head()
        scoring = None
        if main:
            reference = truth_reference(
                data.truth if a == 0 else load_split(bundle, split, max_fields, (a, b)).truth
                for a, b in parts)
            # the fields of the series scores: a temporary store beside the report, removed
            series = stack.enter_context(tempfile.TemporaryDirectory(
                prefix=".weather-sr-series-", dir=Path(out).absolute().parent))
            scoring = Scoring(options.seed, reference=reference, block=block,
                              store=SeriesStore(series, n), sum_window=sum_window)
        heads: dict[str, np.ndarray] = {}  # the first field of every method, for the panels
        # the members' coherence in time, carried over all chunks
        chains = [noise_chain(m, options, split_times) for m in models]
        states = [previous_state(m, options, split_times) for m in models]
        for a, b in parts:
            data = data if a == 0 else load_split(bundle, split, max_fields, fields=(a, b))
            predictions = dict(baseline_predictions(data)) if main else {}
            for label, path, model, chain, state in zip(labels, checkpoints, models, chains,
                                                        states, strict=True):
                check_inputs_in_range(model, data, f"{split} split of {data_path or path}", a,
                                      allow_out_of_range)
                bar, update = _progress_bar(f"{label}: downscaling fields {a + 1}-{b} of {n}", main)
                with bar:
                    predictions[label] = model_prediction(model, data, options, device=device,
                                                          source=str(path), progress=update,
                                                          field_offset=a, chain=chain,
                                                          state=state)
            if scoring is not None:
                scoring.update(data, predictions)
            heads = heads or {k: v[:1] for k, v in predictions.items()}
        if scoring is None:
            return Path(out) / "report.md", {}
        results = scoring.results()
        logs = {label: run_folder(path) / "metrics.csv"
                for label, path in zip(labels, checkpoints, strict=True)}
        if not data_path and models[0].meta is not None:
            data_path = models[0].meta.config.data.path
        settings = _settings(n, first, data, options, data_path, checkpoints, models, device)
        settings["bootstrap"] = scoring.settings()
        with atomic_output(out, overwrite=overwrite, what="report folder", marker="report",
                           option="--out", checked=True) as tmp:
            write_report(tmp, first, heads, results, settings=settings, training_logs=logs,
                         sections=sections)
        return Path(out) / "report.md", results


def _labels(checkpoints: Sequence[str | Path], models: Sequence[DownscalingModel],
            baselines: Mapping[str, Any]) -> list[str]:
    """A unique report label per checkpoint (its run folder's name), none a baseline's."""
    labels: list[str] = []
    for path, model in zip(checkpoints, models, strict=True):
        labels.append(method_name(path, model, [*baselines, *labels]))
    return labels


def _settings(n_fields: int, first: EvalSet, last: EvalSet, options: SamplingOptions,
              data_path: Any, checkpoints: Sequence[str | Path],
              models: Sequence[DownscalingModel], device: torch.device | str
              ) -> Mapping[str, Any]:
    evals = {str(c): _network_evaluations(m, options)
             for c, m in zip(checkpoints, models, strict=True)}
    distinct = {n for n in evals.values() if n is not None}
    return {
        "data": str(data_path),
        "split": first.split,
        "n_fields": n_fields,
        "times": [first.times[0], last.times[-1]] if first.times else [],
        "scale_factor": first.scale_factor,
        "members": options.members,
        "sampler": options.sampler,
        "steps": options.steps,
        # denoiser calls per member actually made (ancestral: all T, whatever --steps says);
        # one number when every diffusion checkpoint agrees, else None (see each checkpoint)
        "network_evaluations": distinct.pop() if len(distinct) == 1 else None,
        "eta": options.eta,
        "noise_colour": options.noise_colour,
        "constrain": options.constrain,  # diffusion checkpoints' members (docs/method.md §8)
        "seed": options.seed,
        "tile": options.tile or 0,
        "overlap": options.overlap,
        "precision": resolve_precision(options.precision, device),
        "checkpoints": {str(c): {"kind": m.kind, "target": m.target,
                                 "step": None if m.meta is None else m.meta.step,
                                 "network_evaluations": evals[str(c)]}
                        for c, m in zip(checkpoints, models, strict=True)},
    }


def _network_evaluations(model: DownscalingModel, options: SamplingOptions) -> int | None:
    """Denoiser calls per ensemble member for ``model`` (None: a regression model, no sampling)."""
    if model.kind != "diffusion" or model.schedule is None:
        return None
    from weather_sr.core.sampling import network_evaluations

    return network_evaluations(options.sampler, model.schedule, options.steps)
