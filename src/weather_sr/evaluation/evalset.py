"""Evaluation of trained models and interpolation baselines on one split of a dataset.

Everything is scored in physical units on the HR grid of the split: the truth is the HR field,
the LR field is the one the model sees (block mean of the HR field, or the paired LR file), and
every method starts from that same LR field:

- ``nearest`` / ``bilinear`` / ``bicubic``: interpolation of the LR field (``data.upsample``);
  with predictors on their own grid (``data.inputs.path``) the one baseline is the targets'
  same-named predictors regridded as the model's are (none when a target has no such input);
- a ``regression`` checkpoint: its deterministic prediction;
- a ``diffusion`` checkpoint: an ensemble of ``members`` samples.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from weather_sr.data import DataBundle, Normalizer, prepare_condition, upsample
from weather_sr.data.condition import ConditionSpec, grid_latlon
from weather_sr.data.regrid import channel_methods
from weather_sr.errors import UserError
from weather_sr.evaluation.accumulate import ScoreAccumulator
from weather_sr.inference.coherence import NoiseChain, PreviousState
from weather_sr.inference.ensemble import SamplingOptions, options_for, sample_ensemble
from weather_sr.model.downscaling_model import DownscalingModel

BASELINES = ("nearest", "bilinear", "bicubic")


@dataclass
class EvalSet:
    """Fields of one split, in physical units.

    truth: [N, C, H, W] (NaN where missing); lr: [N, C, h, w] (None when the model's inputs
    come from another grid); mask: [N, 1, H, W] (1 valid); inputs: the model's inputs,
    [N, Ci, h, w] on the LR grid or [N, Ci, H, W] already regridded (``condition.mode``
    "regrid"); ``time_values`` [N] and ``feature_lat`` / ``feature_lon`` for the features.
    """

    truth: np.ndarray
    lr: np.ndarray
    mask: np.ndarray
    channels: list[str]
    units: list[str]
    lat: np.ndarray
    lon: np.ndarray
    lat_is_degrees: bool
    periodic: bool
    scale_factor: int | None  # None: no LR grid (weather-sr score without --lr)
    interpolation: str
    split: str
    times: list[str]
    inputs: np.ndarray | None = None
    condition: ConditionSpec | None = None
    time_values: np.ndarray | None = None
    coarsen_lat: np.ndarray | None = None  # HR latitudes when the LR is an area-weighted mean
    feature_lat: np.ndarray | None = None
    feature_lon: np.ndarray | None = None
    scalars: np.ndarray | None = None  # [N, K] physical, the condition's scalars

    def head(self) -> EvalSet:
        """The first field alone (what the report's panels show)."""
        one = slice(0, 1)
        return replace(self, truth=self.truth[one], mask=self.mask[one],
                       lr=None if self.lr is None else self.lr[one],
                       inputs=None if self.inputs is None else self.inputs[one],
                       times=self.times[:1],
                       time_values=None if self.time_values is None else self.time_values[one],
                       scalars=None if self.scalars is None else self.scalars[one])


def split_size(bundle: DataBundle, split: str = "test", max_fields: int | None = None) -> int:
    """Number of fields to score in ``split`` ("train", "val" or "test"): at most ``max_fields``."""
    if split not in ("train", "val", "test"):
        raise UserError(f"option --split {split!r}: choose train, val or test")
    dataset = getattr(bundle, split)
    n = len(dataset) if max_fields is None else min(len(dataset), max_fields)
    if n == 0:
        raise UserError(f"the {split} split is empty: use more time steps or change data.split")
    return n


def load_split(bundle: DataBundle, split: str = "test", max_fields: int | None = None,
               fields: tuple[int, int] | None = None) -> EvalSet:
    """The full fields of ``split`` in time order: all (at most ``max_fields``), or the ones
    ``fields = (start, stop)`` of those (a chunk, for scoring chunk by chunk)."""
    n = split_size(bundle, split, max_fields)
    start, stop = fields if fields is not None else (0, n)
    if not 0 <= start < stop <= n:
        raise ValueError(f"fields {start}..{stop}: outside the {n} fields of the {split} split")
    dataset = getattr(bundle, split)
    s = bundle.scale_factor
    H, W = dataset.source.shape
    ly, lx = np.arange(H // s), np.arange(W // s)
    rows = [int(r) for r in dataset.samples[start:stop]]
    truth = np.stack([dataset.source.hr_window(r, slice(0, H), slice(0, W)) for r in rows])
    spec = dataset.condition
    lr, inputs = None, None
    if spec.mode != "regrid":
        lr = np.stack([dataset.source.lr_window(r, ly, lx) for r in rows]).astype(np.float32)
        inputs = lr if dataset.inputs is dataset.source else np.stack(
            [dataset.inputs.lr_window(r, ly, lx) for r in rows]).astype(np.float32)
    else:
        inputs = np.stack([dataset.inputs.window(r, slice(0, H), slice(0, W)) for r in rows])
    kept = None if dataset.times is None else np.asarray(dataset.times[start:stop])
    times = [] if kept is None else [str(t)[:19] for t in kept]
    grid = bundle.grid
    units_attr = str(grid.lat_attrs.get("units", "degrees_north")).lower()
    f_lat, f_lon = grid_latlon(grid) if spec.features else (None, None)
    return EvalSet(
        truth=truth.astype(np.float32),
        lr=lr,
        mask=np.isfinite(truth).all(axis=1, keepdims=True).astype(np.float32),
        channels=list(bundle.channels),
        units=list(bundle.units),
        lat=np.asarray(grid.lat),
        lon=np.asarray(grid.lon),
        lat_is_degrees="degree" in units_attr,
        periodic=bool(grid.periodic),
        scale_factor=s,
        interpolation=bundle.interpolation,
        split=split,
        times=times,
        inputs=inputs,
        condition=spec,
        time_values=kept,
        coarsen_lat=dataset.source.lat_weights,
        feature_lat=f_lat,
        feature_lon=f_lon,
        scalars=None if dataset.scalars is None else dataset.scalars[start:stop],
    )


def _filled_lr(data: EvalSet) -> torch.Tensor:
    """LR fields with missing cells set to the field's own channel mean (interpolation needs
    finite input; per field, so that scoring chunk by chunk changes nothing)."""
    lr = torch.from_numpy(data.lr)
    with warnings.catch_warnings():  # a channel missing in a whole field: filled with 0 below
        warnings.simplefilter("ignore", RuntimeWarning)
        fill = np.nan_to_num(np.nanmean(data.lr, axis=(2, 3), keepdims=True))
    return torch.where(torch.isfinite(lr), lr, torch.from_numpy(fill).float().expand_as(lr))


def baseline_predictions(data: EvalSet) -> dict[str, np.ndarray]:
    """Interpolations of the LR field onto the HR grid: {name: [N, C, H, W]}; with inputs on
    another grid, the regridded same-named inputs ({} when a target has none)."""
    if data.lr is None:
        spec = data.condition
        index = None if spec is None else spec.base_index
        if index is None or data.inputs is None:
            return {}
        methods = {channel_methods(spec.regrid, spec.inputs)[i] for i in index}
        return {methods.pop() if len(methods) == 1 else "regridded": data.inputs[:, index]}
    lr = _filled_lr(data)
    return {
        mode: upsample(lr, data.scale_factor, mode, data.periodic).numpy() for mode in BASELINES
    }


def check_compatible(model: DownscalingModel, data: EvalSet, source: str) -> Normalizer:
    """The checkpoint's normaliser, after checking channels, units and scale factor against the
    data (:meth:`~weather_sr.model.meta.CheckpointMeta.check_data`)."""
    meta = model.meta
    if meta is None:
        raise UserError(f"checkpoint {source} has no metadata: it cannot be evaluated")
    meta.require("normalizer", "scale_factor", to="be evaluated")
    meta.check_data(data.channels, data.units, f"the {data.split} split of the data",
                    scale_factor=data.scale_factor, condition=data.condition)
    return meta.make_normalizer()


def model_prediction(
    model: DownscalingModel,
    data: EvalSet,
    options: SamplingOptions,
    *,
    device: torch.device | str = "cpu",
    source: str = "checkpoint",
    progress: Callable[[int, int], None] | None = None,
    field_offset: int = 0,
    chain: NoiseChain | None = None,
    state: PreviousState | None = None,
) -> np.ndarray:
    """Physical-unit output of one model: regression [N, C, H, W], diffusion [N, M, C, H, W].

    ``field_offset``: the split index of ``data``'s first field (each (field, member) has its
    own seed, so scoring chunk by chunk samples what one pass would); ``chain``: the run's
    :func:`~weather_sr.inference.ensemble.noise_chain` with ``--coherent noise``, ``state``
    its :func:`~weather_sr.inference.ensemble.previous_state` with ``ar``, kept over the chunks.
    """
    normalizer = check_compatible(model, data, source)
    assert model.meta is not None and data.inputs is not None
    spec = model.meta.condition_spec().on_grid(data.lat, data.lon, source)
    cond = prepare_condition(
        torch.from_numpy(data.inputs), spec, data.scale_factor,
        data.interpolation, data.periodic, lat=data.feature_lat, lon=data.feature_lon,
        times=data.time_values, scalars=data.scalars,
    )
    if model.kind == "regression":
        with torch.no_grad():
            out = torch.cat(
                [
                    model.predict(cond[i : i + options.batch_size].to(device)).float().cpu()
                    for i in range(0, len(cond), options.batch_size)
                ]
            )
    else:
        options = options_for(model, options, periodic=data.periodic)
        out = sample_ensemble(model, cond, options, device=device, progress=progress,
                              field_offset=field_offset, lr=data.lr, lat=data.coarsen_lat,
                              chain=chain, state=state)
    return np.asarray(normalizer.denormalise(out.numpy().astype(np.float64)), dtype=np.float32)


def scorer(data: EvalSet, seed: int = 0, **options: Any) -> ScoreAccumulator:
    """The accumulator of one method's metrics on ``data``'s grid (``accumulate.evaluate_method``'s
    options): cos-latitude weighted on lat/lon; spectra of regional (non-periodic) fields
    Hann-tapered so that the jump between opposite edges does not leak power into the high
    frequencies of every method alike; ``options``: ScoreAccumulator's others (thresholds,
    scales). Feed it chunks of the split in order."""
    return ScoreAccumulator(
        lat=data.lat if data.lat_is_degrees else None,
        channel_names=data.channels,
        seed=seed,
        window="none" if data.periodic else "hann",
        scale_factor=data.scale_factor,
        **options,
    )


def score(data: EvalSet, prediction: np.ndarray, seed: int = 0) -> dict[str, Any]:
    """All metrics of one method on all of ``data`` (:func:`scorer`, one chunk)."""
    acc = scorer(data, seed)
    acc.update(np.nan_to_num(data.truth), prediction, mask=data.mask)
    return acc.result()


def run_folder(checkpoint: str | Path) -> Path:
    """The training run folder of a checkpoint (``RUN/checkpoints/x.pt`` or ``RUN/x.pt``)."""
    folder = Path(checkpoint).parent
    return folder.parent if folder.name == "checkpoints" else folder


def method_name(checkpoint: str | Path, model: DownscalingModel, taken: Sequence[str]) -> str:
    """A short unique label for a checkpoint: its run folder's name (or the file's stem)."""
    path = Path(checkpoint)
    in_run = path.parent.name == "checkpoints"
    name = run_folder(path).name or ("" if in_run else path.stem) or model.kind
    base, k = name, 2
    while name in taken:
        name, k = f"{base}-{k}", k + 1
    return name


def check_inputs_in_range(model: DownscalingModel, data: EvalSet, where: str, offset: int = 0,
                          allow: bool = False) -> None:
    """The input range check of ``downscale`` (:mod:`weather_sr.data.ranges`) on the model
    inputs of a split: ``data.inputs`` against the checkpoint's training range (a model built
    in memory, without metadata, is not checked). Field k is field ``offset + k`` of the split."""
    from weather_sr.data.ranges import check_input_range

    if model.meta is None or data.inputs is None:
        return
    spec = model.meta.condition_spec()
    if spec.mode == "own":
        units = list(data.units)
    else:  # inputs named like a target were converted to the target's units
        file_units = list(spec.input_units) or [""] * len(spec.inputs)
        units = [data.units[data.channels.index(n)] if n in data.channels else u
                 for n, u in zip(spec.inputs, file_units, strict=True)]
    check_input_range(data.inputs, units, spec.input_normalizer, where,
                      times=np.asarray(data.times) if data.times else None, offset=offset,
                      allow=allow)
