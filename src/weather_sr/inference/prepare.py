"""Reading the input of ``downscale``: open the LR (or HR to coarsen) fields or predictors,
check them against the checkpoint (channels, units, grid), coarsen or regrid them, and work out
the output grid and the attributes to carry (:class:`Prepared`)."""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import xarray as xr

from weather_sr.errors import UserError
from weather_sr.inference.netcdf import OutputGrid, hr_grid_from_lr, read_target_grid
from weather_sr.model.meta import CheckpointMeta, check_channels_of


@dataclass
class Prepared:
    """LR input checked against the checkpoint: ``lr [N, C, h, w]`` physical, grid, sample info."""

    lr: np.ndarray
    grid: OutputGrid
    periodic: bool
    times: np.ndarray | None
    input_members: np.ndarray | None
    long_names: list[str]
    aux: dict[str, xr.DataArray] | None = None  # 2-D lat/lon, grid mapping (HR input only)
    standard_names: list[str] | None = None  # of the input variables ("" when none)


def input_variables(meta: CheckpointMeta, coarsen_input: bool) -> tuple[list[str], bool]:
    """The variables to read for the checkpoint, and whether they are its own HR channels
    (False: the config names separate ``data.lr_variables`` or predictors ``data.inputs``)."""
    if meta.condition is not None:
        spec = meta.condition_spec()
        if spec.mode != "own":
            return list(spec.input_variables), False
    cfg = meta.run_config().data
    lr_vars = cfg.lr_variables if not coarsen_input else None
    return list(lr_vars or cfg.variables or meta.channels), not lr_vars


def dataset_fields(ds: xr.Dataset, meta: CheckpointMeta, *, coarsen_input: bool,
                   where: str = "input Dataset", chunk_fields: int = 8) -> xr.DataArray:
    """The checkpoint's input variables of an ``xarray.Dataset`` (the Python API) as standardised
    fields ``[sample, channel, y, x]``, still lazy when ``ds`` is, their values checked
    ``chunk_fields`` at a time (``stream.check_values_in_chunks``, as for an input file)."""
    from weather_sr.data.reading import standardise
    from weather_sr.inference.stream import check_values_in_chunks

    if not isinstance(ds, xr.Dataset):
        raise UserError(f"{where}: expected an xarray.Dataset, got {type(ds).__name__}")
    variables, _ = input_variables(meta, coarsen_input)
    fields = standardise(ds, variables, where)
    check_values_in_chunks(fields, chunk_fields, where)
    return fields


def prepare_fields(
    fields: xr.DataArray, meta: CheckpointMeta, *, coarsen_input: bool,
    target_grid: str | os.PathLike[str] | None, where: str, source: xr.Dataset | None,
) -> Prepared:
    """Standardised, loaded input ``fields`` (:func:`weather_sr.data.open_fields`) checked
    against the checkpoint (channels, units), coarsened if asked, with the output grid;
    ``source`` (the raw Dataset, None if it cannot be opened) gives long names and the 2-D
    auxiliary coordinates of an HR input."""
    from weather_sr import data

    cfg = meta.run_config().data
    meta.require("scale_factor", to="downscale")
    s = int(meta.scale_factor or 0)
    channels = list(meta.channels)
    variables, own = input_variables(meta, coarsen_input)
    spec = meta.condition_spec()
    found = [str(c) for c in fields["channel"].values]
    if spec.mode == "own":
        meta.check_data(found, list(fields.attrs["units"]), where, names=own, unknown_units=True)
    else:
        check_channels_of(found, list(fields.attrs["units"]), spec.inputs,
                          spec.input_units or None, where,
                          checkpoint=f"the predictors of the checkpoint {meta.source}",
                          unknown_units=True)
    named = variables if spec.mode == "own" else channels  # where the output's names come from
    long_names = _long_names(source, named, len(channels))
    aux = None
    grid = data.grid_of(fields)
    if not coarsen_input and spec.mode != "regrid":
        warn_if_finer(grid, meta, s, where)
    values = np.asarray(fields.values, dtype=np.float32)
    if spec.mode == "regrid":
        lr, out_grid, aux = _regridded(fields, meta, spec, coarsen_input, where)
    elif coarsen_input:
        h, w = data.crop_to_multiple(values.shape[2], values.shape[3], s, True, where)
        values = values[:, :, :h, :w]
        lat = grid.lat[:h] if cfg.area_weighted else None
        lr = data.coarsen(torch.from_numpy(values), s, lat).numpy()
        out_grid = OutputGrid(grid.lat[:h], grid.lon[:w], grid.lat_name, grid.lon_name,
                              grid.lat_attrs, grid.lon_attrs)
        if target_grid is None:
            aux = _aux_coords(source, variables[0], out_grid)
    else:
        lr = values
        out_grid = hr_grid_from_lr(grid.lat, grid.lon, s, lat_name=grid.lat_name,
                                   lon_name=grid.lon_name, lat_attrs=grid.lat_attrs,
                                   lon_attrs=grid.lon_attrs)
    if target_grid is not None:
        if spec.mode == "regrid":
            raise UserError("--target-grid: this model's output grid is its training grid (its "
                            "predictors are regridded onto it): leave the option out")
        out_grid = read_target_grid(target_grid, lr.shape[2] * s, lr.shape[3] * s)
    times = fields["time"].values if "time" in fields.coords else None
    members = fields["member"].values if "member" in fields.coords else None
    if spec.static_names:
        check_training_grid(out_grid, meta, where)
    return Prepared(lr, out_grid, bool(grid.periodic), times, members, long_names, aux,
                    _long_names(source, named, len(channels), "standard_name"))


def _regridded(fields: xr.DataArray, meta: CheckpointMeta, spec: Any, coarsen_input: bool,
               where: str) -> tuple[np.ndarray, OutputGrid, dict[str, xr.DataArray] | None]:
    """Predictors on their own grid regridded onto the checkpoint's HR grid, that grid and its
    2-D coordinates."""
    from weather_sr.data.grid import Grid
    from weather_sr.data.inputs import regrid_inputs

    if coarsen_input:
        raise UserError("--coarsen: this model's predictors come on their own grid and are "
                        "regridded onto its HR grid: give them as they are, without --coarsen")
    meta.require("grid", to="regrid its predictors")
    hr = Grid.from_dict(dict(meta.grid or {}))
    values = regrid_inputs(fields, hr.lat, hr.lon, spec.regrid, where)
    out_grid = OutputGrid(hr.lat, hr.lon, hr.lat_name, hr.lon_name, hr.lat_attrs, hr.lon_attrs)
    aux = {k: xr.DataArray(v, dims=(hr.lat_name, hr.lon_name), attrs=a)
           for k, (v, a) in hr.aux.items()}
    return values, out_grid, aux or None


def check_training_grid(grid: OutputGrid, meta: CheckpointMeta, where: str) -> None:
    """UserError unless ``grid`` is the checkpoint's HR training grid (static fields lie on it)."""
    trained = meta.grid or {}
    from weather_sr.data.grid import same_axis

    lat, lon = np.asarray(trained.get("lat", [])), np.asarray(trained.get("lon", []))
    if not (same_axis(grid.lat, lat) and same_axis(grid.lon, lon)):
        raise UserError(
            f"{where}: gives a {grid.lat.size}x{grid.lon.size} HR grid, but the checkpoint "
            f"{meta.source} has static fields on its {lat.size}x{lon.size} training grid: "
            "downscale inputs of the domain the model was trained on")


def _spacing(values: Any) -> float | None:
    """Median absolute spacing of 1-D coordinate values (None for fewer than 2)."""
    v = np.asarray(values, dtype=np.float64)
    return float(np.median(np.abs(np.diff(v)))) if v.ndim == 1 and v.size > 1 else None


def warn_if_finer(grid: Any, meta: CheckpointMeta, s: int, where: str) -> None:
    """Warn (one line) when the input grid is clearly finer than the model's LR grid (the
    training HR spacing x ``s``): an HR file given without --coarsen makes an s x s larger run."""
    trained = meta.grid or {}
    units = (str(trained.get("lat_attrs", {}).get("units", "")),
             str(getattr(grid, "lat_attrs", {}).get("units", "")))
    hr, found = _spacing(trained.get("lat", [])), _spacing(grid.lat)
    if hr is None or found is None or units[0] != units[1] or found >= 0.75 * hr * s:
        return
    h, w = grid.shape
    warnings.warn(
        f"{where}: its grid spacing ({found:.4g}) is finer than the model's LR grid "
        f"({hr * s:.4g}, the HR training grid {hr:.4g} x {s}): it is downscaled to "
        f"{h * s}x{w * s}; if it is an HR field, give --coarsen", UserWarning, stacklevel=2)


@contextlib.contextmanager
def opened(path: str | os.PathLike[str]) -> Iterator[xr.Dataset | None]:
    """The input file as one Dataset (for its attributes), None when xarray cannot open it so."""
    try:
        ds = xr.open_dataset(path)
    except (OSError, ValueError):
        yield None
        return
    with ds:
        yield ds


def _aux_coords(
    ds: xr.Dataset | None, variable: str, grid: OutputGrid
) -> dict[str, xr.DataArray] | None:
    """2-D auxiliary coordinates (e.g. latitude/longitude of a projected grid) on the output grid
    and the CF grid-mapping variable of an HR input, to carry into the output; None if absent."""
    dims = (grid.lat_name, grid.lon_name)
    if ds is None:
        return None
    try:
        if variable not in ds or not set(dims) <= set(ds.dims):
            return None
        sel = {grid.lat_name: grid.lat, grid.lon_name: grid.lon}
        aux = {str(k): v.sel(sel).load() for k, v in ds.coords.items()
               if set(v.dims) == set(dims)}
        mapping = str(ds[variable].attrs.get("grid_mapping", ""))
        if mapping in ds.variables:
            aux[f"grid_mapping:{mapping}"] = ds[mapping].load()
    except (OSError, ValueError, KeyError):
        return None
    return aux or None


def _long_names(
    ds: xr.Dataset | None, variables: Sequence[str], n: int, attr: str = "long_name"
) -> list[str]:
    """long_name (or ``attr``) of each input variable ("" when unknown)."""
    if ds is None:
        return [""] * n
    names = [str(ds[v].attrs.get(attr, "")) if v in ds else "" for v in variables]
    return names if len(names) == n else [""] * n


def feature_grid(prep: Prepared, meta: CheckpointMeta) -> tuple[np.ndarray, np.ndarray]:
    """Latitude/longitude of the output grid for the lat/lon features (2-D ones if given)."""
    from weather_sr.data.condition import grid_latlon
    from weather_sr.data.grid import Grid

    g = prep.grid
    aux = {k: (np.asarray(v.values), dict(v.attrs)) for k, v in (prep.aux or {}).items()
           if not k.startswith("grid_mapping:") and v.ndim == 2}
    return grid_latlon(Grid(np.asarray(g.lat), np.asarray(g.lon), g.lat_name, g.lon_name,
                            dict(g.lat_attrs), dict(g.lon_attrs), prep.periodic, aux))
