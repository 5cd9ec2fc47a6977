"""The torch-facing entry points: ``build_datasets`` (training/evaluation) and ``prepare_condition``
(inference on an LR-only file). Plain keyword arguments only; no config objects."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import xarray as xr

from weather_sr.data.condition import ConditionSpec, default_condition, grid_latlon
from weather_sr.data.datasets import PairDataset
from weather_sr.data.files import PathSpec
from weather_sr.data.grid import Grid, grid_of
from weather_sr.data.normalise import Normalizer, compute_stats
from weather_sr.data.pairs import (
    check_interpolation,
    check_lr_grid,
    check_scale_factor,
    coarsen,
    crop_to_multiple,
    upsample,
)
from weather_sr.data.reading import open_fields
from weather_sr.data.source import FieldSource, LazyFields
from weather_sr.data.splits import split_samples
from weather_sr.data.temporal import previous_rows
from weather_sr.errors import UserError


@dataclass
class DataBundle:
    """Datasets of the three splits plus what a checkpoint and an output writer need."""

    train: PairDataset
    val: PairDataset
    test: PairDataset
    normalizer: Normalizer
    channels: list[str]
    units: list[str]
    grid: Grid
    scale_factor: int
    interpolation: str
    condition: ConditionSpec | None = None  # what the network sees; None: the default (SR3)


def _patch(
    patch_size: int | Sequence[int] | None, s: int, shape: tuple[int, int]
) -> tuple[int, int] | None:
    if patch_size is None:
        return None
    ph, pw = (patch_size, patch_size) if isinstance(patch_size, int) else tuple(patch_size)
    if ph % s or pw % s or ph <= 0 or pw <= 0:
        raise UserError(
            f"data.patch_size={patch_size}: give a positive multiple of scale_factor {s}"
        )
    if ph > shape[0] or pw > shape[1]:
        raise UserError(
            f"data.patch_size={patch_size}: larger than the HR field {shape}: reduce it"
        )
    return int(ph), int(pw)


def _paired_lr(
    lr_path: PathSpec, lr_variables: Sequence[str], hr: xr.DataArray, s: int, load: bool
) -> tuple[np.ndarray | LazyFields, np.ndarray]:
    """Open the LR dataset, check grid and times against HR; return its values and sample map."""
    lr = open_fields(lr_path, lr_variables, load=load)
    where = f"LR data file {lr.attrs['source'][0]}"
    if lr.sizes["channel"] != hr.sizes["channel"]:
        raise UserError(
            f"{where}: {lr.sizes['channel']} channels but HR has {hr.sizes['channel']}: "
            "select matching lr_variables"
        )
    ny, nx = hr.sizes["y"] // s, hr.sizes["x"] // s
    lr = lr.isel(y=slice(0, ny), x=slice(0, nx))
    if all(d in c.coords for c in (lr, hr) for d in ("y", "x")):
        check_lr_grid(hr["y"].values, hr["x"].values, lr["y"].values, lr["x"].values, s, where)
    elif (lr.sizes["y"] * s, lr.sizes["x"] * s) != (hr.sizes["y"], hr.sizes["x"]):
        raise UserError(f"{where}: LR size {lr.sizes['y']}x{lr.sizes['x']} x {s} != HR size")
    keys = [f"{t}|{m}" for t, m in zip(lr["time"].values, _members(lr), strict=True)]
    pos = {k: i for i, k in enumerate(keys)}
    hr_keys = [f"{t}|{m}" for t, m in zip(hr["time"].values, _members(hr), strict=True)]
    missing = [k for k in hr_keys if k not in pos]
    if missing:
        raise UserError(
            f"{where}: no LR field for HR time/member {missing[0].split('|')[0]}: "
            "give LR data covering the HR times"
        )
    samples = np.array([pos[k] for k in hr_keys])
    values = lr.values if load else LazyFields(lr_path, list(lr_variables), ny, nx)
    return values, samples


def _members(da: xr.DataArray) -> np.ndarray:
    return da["member"].values if "member" in da.coords else np.zeros(da.sizes["sample"], int)


def _scalars(condition: ConditionSpec, names: Sequence[str], fields: xr.DataArray,
             path: PathSpec, inputs: Mapping[str, Any] | None, train_idx: np.ndarray
             ) -> np.ndarray | None:
    """The scalars [N, K] of every field (from the targets' file, else the predictors'), and
    their training statistics set on ``condition``; None without scalars."""
    from weather_sr.data.files import open_dataset
    from weather_sr.data.scalars import scalar_statistics, scalars_at

    if not names:
        return None
    files = [(path, f"data file {fields.attrs['source'][0]}")]
    if inputs and inputs.get("path") is not None:
        files.append((inputs["path"], f"predictors file {inputs['path']}"))
    with ExitStack() as stack:  # read at once, then closed
        sources = [(stack.enter_context(open_dataset(p)[0]), where) for p, where in files]
        values = scalars_at(sources, list(names), fields["time"].values,
                            "give it as a coordinate or variable along time in one of them")
    condition.scalar_names = list(names)
    condition.scalar_mean, condition.scalar_std = scalar_statistics(values[train_idx], names)
    condition.check()
    return values


def build_datasets(
    path: PathSpec,
    variables: Sequence[str],
    *,
    scale_factor: int,
    patch_size: int | Sequence[int] | None = None,
    lr_path: PathSpec | None = None,
    lr_variables: Sequence[str] | None = None,
    interpolation: str = "bicubic",
    normalisation: str = "channel",
    split: Sequence[float] = (0.7, 0.15, 0.15),
    gap: int = 0,
    lr_noise_std: float = 0.0,
    min_valid_fraction: float = 0.5,
    flips: bool = False,
    seed: int = 0,
    load: bool = True,
    area_weighted: bool = False,
    crop: bool = True,
    inputs: Mapping[str, Any] | None = None,
    static: Mapping[str, Any] | None = None,
    features: Sequence[str] = (),
    scalars: Sequence[str] = (),
    previous: bool = False,
    previous_noise: float = 0.1,
    previous_dropout: float = 0.1,
    transforms: Mapping[str, str] | None = None,
) -> DataBundle:
    """Open HR (and optional paired LR) data and return train/val/test datasets (see DataBundle).

    ``scale_factor`` s: LR spacing / HR spacing. HR is cropped to the first floor(n/s)*s rows and
    columns (``crop=False``: UserError instead). Without ``lr_path`` LR is the NaN-aware block
    mean of HR (cos-latitude weighted if ``area_weighted``). ``lr_noise_std`` adds Gaussian noise
    to LR, in units of each channel's std. Statistics come from the training split only.
    ``inputs`` ({path, variables, regrid}), ``static`` ({path, variables}), ``features``,
    ``scalars`` (names of per-field numbers in the targets' or the predictors' file) and
    ``transforms`` ({variable: "log1p" | "power:P"}) shape the condition (docs/data.md,
    :mod:`weather_sr.data.inputs`, :mod:`weather_sr.data.scalars`). ``previous``: the previous
    time's HR targets join the condition (the truth, with Gaussian noise of std
    ``previous_noise`` in normalised units and replaced by zeros with probability
    ``previous_dropout`` in training; :func:`weather_sr.data.temporal.previous_rows`).
    """
    from weather_sr.data.inputs import build_condition, check_transformed

    s = check_scale_factor(scale_factor)
    interpolation = check_interpolation(interpolation)
    if isinstance(variables, str):
        variables = [variables]
    if not 0.0 <= min_valid_fraction <= 1.0:
        raise UserError(f"data.min_valid_fraction={min_valid_fraction}: give a value in [0, 1]")
    fields = open_fields(path, variables)
    where = f"data file {fields.attrs['source'][0]}"
    H, W = crop_to_multiple(fields.sizes["y"], fields.sizes["x"], s, crop, where)
    fields = fields.isel(y=slice(0, H), x=slice(0, W))
    if load:
        fields = fields.load()
    train_idx, val_idx, test_idx = split_samples(fields["time"].values, split, gap)
    names = [*variables, *((inputs or {}).get("variables") or [])]
    tf = {}
    if transforms:
        from weather_sr.data.transforms import parse_transforms

        tf = parse_transforms(transforms, list(dict.fromkeys(names)), "data.transforms")
    check_transformed(fields, tf, where)
    # also checks NaN/Inf
    normalizer = compute_stats(fields, train_idx, normalisation, where, transforms=tf)
    grid = grid_of(fields)
    hr_values = fields.values if load else LazyFields(path, list(variables), H, W)
    lr_values, lr_samples = None, None
    if lr_path is not None:
        lr_values, lr_samples = _paired_lr(lr_path, lr_variables or variables, fields, s, load)
    lat = grid.lat if area_weighted else None
    source = FieldSource(hr_values, s, (H, W), lr_values, lr_samples, lat)
    condition, in_source = build_condition(
        fields, normalizer, train_idx, path=path, source=source, inputs=inputs, static=static,
        features=features, transforms=tf, load=load)
    scalar_values = _scalars(condition, scalars, fields, path, inputs, train_idx)
    condition.previous = bool(previous)
    before = previous_rows(fields["time"].values, _members(fields)) if previous else None
    f_lat, f_lon = grid_latlon(grid) if condition.features else (None, None)
    # the checkpoint keeps the static fields' whole domain; the datasets see the targets' part
    on_grid = condition.on_grid(grid.lat, grid.lon, where)
    times = fields["time"].values
    members = fields["member"].values if "member" in fields.coords else None
    common = dict(
        interpolation=interpolation, periodic=grid.periodic, lr_noise_std=lr_noise_std, seed=seed
    )

    def make(idx: np.ndarray, train: bool) -> PairDataset:
        return PairDataset(
            source,
            idx,
            normalizer,
            patch_size=_patch(patch_size, s, (H, W)) if train else None,
            min_valid_fraction=min_valid_fraction if train else 0.0,
            flips=flips and train,
            random=train,
            times=times[idx],
            scalars=None if scalar_values is None else scalar_values[idx],
            previous=None if before is None else before[idx],
            previous_noise=previous_noise if train else 0.0,
            previous_dropout=previous_dropout if train else 0.0,
            members=None if members is None else members[idx],
            condition=on_grid,
            inputs=in_source,
            lat=f_lat,
            lon=f_lon,
            **common,
        )

    return DataBundle(
        make(train_idx, True),
        make(val_idx, False),
        make(test_idx, False),
        normalizer,
        list(normalizer.channels),
        list(fields.attrs["units"]),
        grid,
        s,
        interpolation,
        condition,
    )


def prepare_condition(
    lr_fields: xr.DataArray | np.ndarray | torch.Tensor,
    condition: ConditionSpec | Normalizer,
    scale_factor: int,
    interpolation: str = "bicubic",
    periodic: bool | None = None,
    *,
    lat: np.ndarray | None = None,
    lon: np.ndarray | None = None,
    times: np.ndarray | None = None,
    scalars: np.ndarray | None = None,
) -> torch.Tensor:
    """LR inputs [N, Ci, h, w] in physical units (NaN allowed) -> condition [N, Cc, h*s, w*s]
    (inputs already regridded onto the HR grid, [N, Ci, H, W], when ``condition.mode`` is
    "regrid": they are only filled and assembled).

    Missing LR cells are filled with the (coarsened) climatological mean, the field is
    interpolated onto the HR grid and assembled into the condition (normalised inputs, static
    fields, features of ``lat`` / ``lon`` [H] or [H, W] and ``times`` [N], ``scalars`` [N, K]
    physical); the result has no NaN. A :class:`Normalizer` stands for the default condition
    (the targets' own LR field).
    ``periodic`` defaults to ``lr_fields.attrs["periodic"]`` for a DataArray from
    ``open_fields``, else False.
    """
    s = check_scale_factor(scale_factor)
    spec = condition if isinstance(condition, ConditionSpec) else default_condition(
        condition.channels, condition)
    norm = spec.input_normalizer
    if periodic is None:
        periodic = bool(getattr(lr_fields, "attrs", {}).get("periodic", False))
    values = lr_fields.values if isinstance(lr_fields, xr.DataArray) else lr_fields
    lr = torch.as_tensor(np.asarray(values), dtype=torch.float32)
    if lr.ndim != 4 or lr.shape[1] != len(spec.inputs):
        raise UserError(
            f"LR fields of shape {tuple(lr.shape)}: expected [N, "
            f"{len(spec.inputs)}, h, w] for channels {spec.inputs}"
        )
    mean = torch.as_tensor(norm.physical_mean(), dtype=torch.float32)
    if norm.kind == "pixel":  # only for the default condition (config rule)
        if tuple(mean.shape[1:]) != (lr.shape[2] * s, lr.shape[3] * s):
            raise UserError(
                f"LR fields {lr.shape[2]}x{lr.shape[3]} x {s} do not match the "
                f"per-pixel statistics {tuple(mean.shape[1:])}: use the training domain"
            )
        mean = coarsen(mean, s)
    lr = torch.where(torch.isfinite(lr), lr, mean.expand_as(lr[0]))
    cond = lr if spec.mode == "regrid" else upsample(lr, s, interpolation, periodic)
    return spec.assemble(cond, None, lat, lon, times, scalars)
