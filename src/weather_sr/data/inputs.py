"""Reading the condition's parts for training and evaluation: predictors and static fields.

:func:`build_condition` turns the ``data.inputs`` / ``data.static`` / ``data.features`` settings
into a :class:`~weather_sr.data.condition.ConditionSpec` plus the source its inputs are read
from (docs/data.md, "Three kinds of condition"). Every problem is a one-line UserError naming
the file and the variable.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import xarray as xr

from weather_sr.data.condition import ConditionSpec, default_condition, static_statistics
from weather_sr.data.files import PathSpec
from weather_sr.data.normalise import Normalizer, compute_stats
from weather_sr.data.reading import open_fields
from weather_sr.data.regrid import (
    channel_methods,
    regrid_channels,
    regrid_weights,
    target_points,
)
from weather_sr.data.source import FieldSource, LazyFields, RegriddedInputs
from weather_sr.data.units import to_target_units
from weather_sr.errors import UserError

if TYPE_CHECKING:
    from weather_sr.data.transforms import Transform


def build_condition(
    fields: xr.DataArray, normalizer: Normalizer, train_idx: np.ndarray, *, path: PathSpec,
    source: FieldSource, inputs: Mapping[str, Any] | None, static: Mapping[str, Any] | None,
    features: Sequence[str], transforms: Mapping[str, Transform], load: bool,
) -> tuple[ConditionSpec, FieldSource | RegriddedInputs]:
    """The condition of targets ``fields`` (sample, channel, H, W; cropped) and where its
    inputs come from. ``source``: the targets' own (for the default condition)."""
    targets = list(normalizer.channels)
    where = f"data file {fields.attrs['source'][0]}"
    if features:
        from weather_sr.data.features import check_features

        check_features(list(features), "data.features")
    if inputs is None:
        spec = default_condition(targets, normalizer)
        in_source: FieldSource | RegriddedInputs = source
    elif inputs.get("path") is None:
        spec, in_source = _coarsened(fields, normalizer, train_idx, path, source, inputs,
                                     transforms, load, where)
    else:
        spec, in_source = _regridded(fields, normalizer, train_idx, inputs, transforms, load)
    spec.features = list(features)
    if static is not None:
        spec.static_names = list(static["variables"])
        spec.static_values, spec.static_y, spec.static_x = read_static(
            static["path"], spec.static_names, fields)
        where = (f"static file {static['path']}, for the targets of data file "
                 f"{fields.attrs['source'][0]}")
        trained = spec.on_grid(fields["y"].values, fields["x"].values, where,
                               fix="give static fields on a grid holding the targets' points "
                                   "(theirs, or a larger domain of it)").static_values
        spec.static_mean, spec.static_std = static_statistics(trained)
    spec.check()
    return spec, in_source


def check_transformed(da: xr.DataArray, transforms: Mapping[str, Transform], where: str) -> None:
    """UserError when a channel with a log1p/power transform has negative values."""
    if not transforms:
        return
    from weather_sr.data.transforms import check_non_negative

    for c, name in enumerate(str(n) for n in da["channel"].values):
        if name in transforms:
            one = da.isel(channel=c)  # its extremes: the check's tolerance is relative to max|x|
            check_non_negative(np.array([float(one.min()), float(one.max())]), name, where)


def input_normalizer(stats: Normalizer, targets: Normalizer) -> Normalizer:
    """The inputs' statistics, where an input named like a target takes the target's (so that
    its normalised value is the residual base as it is)."""
    mean, std = stats.mean.copy(), stats.std.copy()
    for c, name in enumerate(stats.channels):
        if name in targets.channels:
            k = targets.channels.index(name)
            mean[c], std[c] = targets.mean[k], targets.std[k]
    return Normalizer("channel", list(stats.channels), mean, std, dict(stats.transforms),
                      low=stats.low, high=stats.high)  # the range of the inputs' own values


def target_units(fields: xr.DataArray) -> dict[str, str]:
    """The targets' units by channel name, which same-named inputs are converted to."""
    return dict(zip((str(c) for c in fields["channel"].values), fields.attrs["units"],
                    strict=True))


def _coarsened(
    fields: xr.DataArray, normalizer: Normalizer, train_idx: np.ndarray, path: PathSpec,
    source: FieldSource, inputs: Mapping[str, Any], transforms: Mapping[str, Transform],
    load: bool, where: str,
) -> tuple[ConditionSpec, FieldSource]:
    """Inputs that are variables of the targets' file, block-averaged like the targets."""
    names = list(inputs["variables"])
    H, W = source.shape
    da = open_fields(path, names).isel(y=slice(0, H), x=slice(0, W))
    file_units, units = list(da.attrs["units"]), target_units(fields)
    da = to_target_units(da, units, where)
    if load:
        da = da.load()
    check_transformed(da, transforms, where)
    stats = compute_stats(da, train_idx, "channel", where, transforms=dict(transforms))
    values = da.values if load else LazyFields(path, names, H, W, units)
    in_source = FieldSource(values, source.scale_factor, (H, W), lat_weights=source.lat_weights)
    # the file's units: downscale checks its input file against them, then converts the same way
    spec = ConditionSpec(list(normalizer.channels), list(stats.channels),
                         input_normalizer(stats, normalizer), mode="coarsen",
                         input_variables=names, input_units=file_units,
                         input_valid=training_valid(da, train_idx, source.scale_factor))
    return spec, in_source


def _regridded(
    fields: xr.DataArray, normalizer: Normalizer, train_idx: np.ndarray,
    inputs: Mapping[str, Any], transforms: Mapping[str, Transform], load: bool,
) -> tuple[ConditionSpec, RegriddedInputs]:
    """Inputs of a second dataset on its own grid, regridded onto the targets' grid window by
    window with weights computed once (bicubic: whole fields, at load); their statistics and
    where they have values are gathered in one streaming pass each, never whole."""
    from weather_sr.data.grid import grid_of
    from weather_sr.data.regrid import check_regrid, method_groups, regrid_time_check

    names = list(inputs["variables"])
    regrid = check_regrid(inputs.get("regrid", "bilinear"), "data.inputs.regrid", names)
    da = open_fields(inputs["path"], names)
    where = f"inputs file {da.attrs['source'][0]}"
    file_units, units = list(da.attrs["units"]), target_units(fields)
    da = to_target_units(da, units, where)
    if load:
        da = da.load()
    check_transformed(da, transforms, where)
    rows = regrid_time_check(da["time"].values, fields["time"].values, where)
    ty, tx = target_points(grid_of(fields), da, where)
    methods = channel_methods(regrid, [str(c) for c in da["channel"].values])
    weights = {m: regrid_weights(da, ty, tx, m, _periodic(da), where)  # once, for all below
               for m, _ in method_groups(methods) if m != "bicubic"}
    on_grid = regrid_channels(da, ty, tx, methods, _periodic(da), where,  # lazy unless loaded
                              weights=weights)
    used = np.unique(rows[train_idx])
    stats = compute_stats(on_grid, used, "channel", where, transforms=dict(transforms))
    spec = ConditionSpec(list(normalizer.channels), list(stats.channels),
                         input_normalizer(stats, normalizer), mode="regrid", regrid=regrid,
                         input_variables=names, input_units=file_units,
                         input_valid=training_valid(on_grid, used, 1))
    if "bicubic" in methods:  # a spline through whole fields has no weights: regridded at load
        return spec, RegriddedInputs(np.asarray(on_grid.values, np.float32), rows)
    groups = [(idx, weights[m]) for m, idx in method_groups(methods)]
    h, w = da.sizes["y"], da.sizes["x"]
    values = da.values if load else LazyFields(inputs["path"], names, h, w, units)
    return spec, RegriddedInputs(values, rows, groups)


def _periodic(da: xr.DataArray) -> bool:
    return bool(da.attrs.get("periodic", False))


def training_valid(da: xr.DataArray, train_idx: np.ndarray, block: int) -> np.ndarray:
    """Where each input of ``da`` (sample, channel, y, x) has a value in every training field:
    bool [Ci, h, w] on the grid of ``block`` x ``block`` blocks (the LR grid of block means: a
    block has a value when one of its cells has)."""
    ok = da.isel(sample=np.asarray(train_idx)).notnull()
    if block > 1:
        ok = ok.coarsen(y=block, x=block, boundary="trim").any()
    return np.asarray(ok.all("sample").values, bool)


def regrid_inputs(da: xr.DataArray, grid: Any, regrid: str | Mapping[str, str], where: str
                  ) -> np.ndarray:
    """Predictors ``da`` (sample, channel, y, x on their own grid; global when its ``periodic``
    attribute says so) on the HR ``grid`` (:class:`~weather_sr.data.grid.Grid`; its points'
    latitude/longitude when it is projected and the predictors are not), each channel with its
    method of ``regrid`` (a name, or per variable): float32 [N_in, Ci, H, W]."""
    ty, tx = target_points(grid, da, where)
    methods = channel_methods(regrid, [str(c) for c in da["channel"].values])
    return np.asarray(regrid_channels(da, ty, tx, methods, _periodic(da), where).values,
                      np.float32)


def read_static(path: PathSpec, names: Sequence[str], fields: xr.DataArray
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Static fields [S, Hs, Ws] (float32, physical) on the static file's own grid, with its
    axes y [Hs] and x [Ws]: a domain holding the targets' grid (after cropping) on its points,
    which :meth:`ConditionSpec.on_grid` cuts out by coordinates. UserError for a grid that does
    not hold the targets', values changing in time, or missing values."""
    da = open_fields(path, list(names), load=True)
    where = f"static file {da.attrs['source'][0]}"
    if not all(d in da.coords and d in fields.coords for d in ("y", "x")):
        raise UserError(f"{where}: {', '.join(names)} and the targets need 1-D y/x (or "
                        "latitude/longitude) coordinates, to cut the static fields to the "
                        "targets' domain")
    values = np.asarray(da.values, np.float64)
    if not np.allclose(values, values[:1], equal_nan=True):
        raise UserError(f"{where}: the static fields change in time: give one field per "
                        "variable (or fields constant in time)")
    for c, name in enumerate(names):
        bad = int((~np.isfinite(values[0, c])).sum())
        if bad:
            raise UserError(f"{where}: static variable {name} has {bad} missing (NaN) or "
                            "infinite values: fill them (e.g. 0 over the sea) first")
    return (values[0].astype(np.float32), np.asarray(da["y"].values, np.float64),
            np.asarray(da["x"].values, np.float64))
