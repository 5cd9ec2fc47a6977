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
from weather_sr.inference.domain import Domain
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
    aux: dict[str, xr.DataArray] | None = None  # 2-D lat/lon, grid mapping (of the output)
    standard_names: list[str] | None = None  # of the input variables ("" when none)
    scalars: np.ndarray | None = None  # [N, K] physical, the model's data.scalars


SCALAR_COORD = "scalar:{}"  # the sample coordinate that carries a scalar from reading to sampling


def with_scalars(fields: xr.DataArray, ds: xr.Dataset, meta: CheckpointMeta, where: str
                 ) -> xr.DataArray:
    """``fields`` with the model's scalars (``data.scalars``) read from ``ds`` (the input) at
    the fields' times, as sample coordinates; UserError naming the input when one is missing."""
    from weather_sr.data.scalars import scalars_at

    names = meta.condition_spec().scalar_names
    if not names:
        return fields
    values = scalars_at([(ds, where)], names, fields["time"].values,
                        f"this model is conditioned on data.scalars {names}: give each as a "
                        "coordinate or variable along time in the input")
    return fields.assign_coords({SCALAR_COORD.format(n): ("sample", values[:, k])
                                 for k, n in enumerate(names)})


def field_scalars(fields: xr.DataArray, names: Sequence[str]) -> np.ndarray | None:
    """The scalars [N, K] that :func:`with_scalars` put on ``fields`` (None: no scalars)."""
    if not names:
        return None
    return np.stack([fields[SCALAR_COORD.format(n)].values for n in names], axis=1)


def input_variables(meta: CheckpointMeta, coarsen_input: bool) -> tuple[list[str], bool]:
    """The variables to read for the checkpoint, and whether they are its own HR channels
    (False: the config names separate ``data.lr_variables`` or predictors ``data.inputs``)."""
    if meta.condition is not None:
        spec = meta.condition_spec()
        if spec.mode != "own":
            return list(spec.input_variables), False
    cfg = meta.config.data
    lr_vars = cfg.lr_variables if not coarsen_input else None
    return list(lr_vars or cfg.variables or meta.channels), not lr_vars


def dataset_fields(ds: xr.Dataset, meta: CheckpointMeta, *, coarsen_input: bool,
                   where: str = "input Dataset", chunk_fields: int = 8,
                   allow_out_of_range: bool = False) -> xr.DataArray:
    """The checkpoint's input variables of an ``xarray.Dataset`` (the Python API) as standardised
    fields ``[sample, channel, y, x]``, still lazy when ``ds`` is, checked
    (:func:`checked_inputs`) and their values checked ``chunk_fields`` at a time
    (``stream.check_values_in_chunks``, training range included), as for an input file."""
    from weather_sr.data.reading import standardise
    from weather_sr.inference.stream import check_values_in_chunks

    if not isinstance(ds, xr.Dataset):
        raise UserError(f"{where}: expected an xarray.Dataset, got {type(ds).__name__}")
    variables, _ = input_variables(meta, coarsen_input)
    fields = checked_inputs(standardise(ds, variables, where), meta, where,
                            coarsen_input=coarsen_input)
    fields = with_scalars(fields, ds, meta, where)
    check_values_in_chunks(fields, chunk_fields, where, meta.condition_spec().input_normalizer,
                           allow_out_of_range=allow_out_of_range)
    return fields


def prepare_fields(
    fields: xr.DataArray, meta: CheckpointMeta, *, coarsen_input: bool,
    target_grid: str | os.PathLike[str] | None, where: str, source: xr.Dataset | None,
    domain: Domain | None = None,
) -> Prepared:
    """Standardised, loaded input ``fields`` (:func:`weather_sr.data.open_fields`), checked by
    :func:`checked_inputs`, coarsened if asked, with the output grid; ``source`` (the raw
    Dataset, None if it cannot be opened) gives long names and the 2-D auxiliary coordinates of
    an HR input. ``domain``: the part of the domain to downscale with predictors regridded from
    their own grid (:mod:`weather_sr.inference.domain`; None: the training grid)."""
    from weather_sr import data

    cfg = meta.config.data
    meta.require("scale_factor", to="downscale")
    s = int(meta.scale_factor or 0)
    channels = list(meta.channels)
    variables, _ = input_variables(meta, coarsen_input)
    spec = meta.condition_spec()
    named = variables if spec.mode == "own" else channels  # where the output's names come from
    long_names = _long_names(source, named, len(channels))
    aux = None
    grid = data.grid_of(fields)
    if not coarsen_input and spec.mode != "regrid":
        warn_if_finer(grid, meta, s, where)
    values = np.asarray(fields.values, dtype=np.float32)
    if domain is not None and spec.mode != "regrid":
        raise UserError("--domain: this model's output grid is its input's (x the scale "
                        "factor): give an input file of the part of the domain you want")
    if spec.mode == "regrid":
        lr, out_grid, aux = _regridded(fields, meta, spec, coarsen_input, where, domain)
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
        if target_grid is None:
            aux = _lr_aux(grid, out_grid, meta, s, source, variables[0])
    if target_grid is not None:
        if spec.mode == "regrid":
            raise UserError("--target-grid: this model's output grid is its training grid (its "
                            "predictors are regridded onto it): leave the option out")
        out_grid = read_target_grid(target_grid, lr.shape[2] * s, lr.shape[3] * s)
    times = fields["time"].values if "time" in fields.coords else None
    members = fields["member"].values if "member" in fields.coords else None
    return Prepared(lr, out_grid, bool(grid.periodic), times, members, long_names, aux,
                    _long_names(source, named, len(channels), "standard_name"),
                    field_scalars(fields, spec.scalar_names))


def checked_inputs(fields: xr.DataArray, meta: CheckpointMeta, where: str, *,
                   coarsen_input: bool) -> xr.DataArray:
    """Input ``fields`` checked against the checkpoint: the targets' own variables (names unless
    ``data.lr_variables`` renames them; units where both sides have them), or its predictors
    (names; units of its training file, recorded in ``spec.input_units``), whose channels named
    like a target are then converted to the target's units as in training
    (:func:`weather_sr.data.units.to_target_units`; lazy fields stay lazy). The one check of
    downscale's input (the CLI's :func:`weather_sr.inference.downscale.read_input`, the API's
    :func:`dataset_fields`), before the range check, which needs the model's channels and units."""
    from weather_sr.data.units import to_target_units

    spec = meta.condition_spec()
    found, units = [str(c) for c in fields["channel"].values], list(fields.attrs["units"])
    if spec.mode == "own":
        own = input_variables(meta, coarsen_input)[1]
        meta.check_data(found, units, where, names=own, unknown_units=True)
        return fields
    check_channels_of(found, units, spec.inputs, spec.input_units or None, where,
                      checkpoint=f"the predictors of the checkpoint {meta.source}",
                      unknown_units=True)
    if not (spec.input_units and meta.units):  # older checkpoints: nothing recorded to convert
        return fields
    return to_target_units(fields, dict(zip(meta.channels, meta.units, strict=True)), where,
                           spec.input_units)


def _regridded(fields: xr.DataArray, meta: CheckpointMeta, spec: Any, coarsen_input: bool,
               where: str, domain: Domain | None
               ) -> tuple[np.ndarray, OutputGrid, dict[str, xr.DataArray] | None]:
    """Predictors on their own grid regridded onto the checkpoint's HR grid (or the grid of
    ``domain``), that grid and its 2-D coordinates."""
    from weather_sr.data.grid import Grid
    from weather_sr.data.inputs import regrid_inputs

    if coarsen_input:
        raise UserError("--coarsen: this model's predictors come on their own grid and are "
                        "regridded onto its HR grid: give them as they are, without --coarsen")
    meta.require("grid", to="regrid its predictors")
    hr = Grid.from_dict(dict(meta.grid or {}))
    if domain is not None:
        from weather_sr.inference.domain import domain_grid

        hr = domain_grid(hr, spec, domain, where)
    values = regrid_inputs(fields, hr, spec.regrid, where)
    out_grid = OutputGrid(hr.lat, hr.lon, hr.lat_name, hr.lon_name, hr.lat_attrs, hr.lon_attrs)
    aux = {k: xr.DataArray(v, dims=(hr.lat_name, hr.lon_name), attrs=a)
           for k, (v, a) in hr.aux.items()}
    if hr.mapping:  # the targets' CF grid mapping, kept in the checkpoint
        aux[f"grid_mapping:{hr.mapping['name']}"] = xr.DataArray(
            np.int32(0), attrs=dict(hr.mapping["attrs"]))
    return values, out_grid, aux or None


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
    """Latitude/longitude of the output grid for the lat/lon features: the 2-D ones of
    ``prep.aux``, else the checkpoint's when the output grid is its training grid, else those
    of the grid mapping (the input's, else the training grid's), else the 1-D axes if in
    degrees (UserError for projected axes)."""
    from weather_sr.data.condition import grid_latlon
    from weather_sr.data.grid import Grid

    g = prep.grid
    found = {k: v for k, v in (prep.aux or {}).items()
             if not k.startswith("grid_mapping:") and v.ndim == 2}
    if not {"lat", "lon"} <= {_latlon_kind(k) for k in found}:
        found = _training_aux(g, meta) or found
    aux = {k: (np.asarray(v.values), dict(v.attrs)) for k, v in found.items()}
    mapping = next(({"name": k.split(":", 1)[1], "attrs": dict(v.attrs)}  # the input's, else
                    for k, v in (prep.aux or {}).items() if k.startswith("grid_mapping:")),
                   dict((meta.grid or {}).get("mapping") or {}))  # the training grid's
    return grid_latlon(Grid(np.asarray(g.lat), np.asarray(g.lon), g.lat_name, g.lon_name,
                            dict(g.lat_attrs), dict(g.lon_attrs), prep.periodic, aux, mapping),
                       fix="give the input file 2-D latitude/longitude coordinates, or "
                           "downscale on the model's training grid (its checkpoint stores them)")


def _latlon_kind(name: str) -> str | None:
    """"lat" or "lon" for a 2-D coordinate that names latitude or longitude (the rule of
    :func:`weather_sr.data.condition.grid_latlon`), else None."""
    low = name.lower()
    return "lat" if low.startswith("lat") else "lon" if low.startswith("lon") else None


def _lr_aux(grid: Any, out_grid: OutputGrid, meta: CheckpointMeta, s: int,
            source: xr.Dataset | None, variable: str) -> dict[str, xr.DataArray] | None:
    """2-D latitude/longitude of the HR output grid of an LR input (for the lat/lon features and
    the output file) and the input's CF grid mapping: the checkpoint's exact ones when the output
    grid is its training grid, else the LR input's interpolated; None when there are none."""
    aux = _training_aux(out_grid, meta) or _interpolated_aux(grid, out_grid, s) or {}
    if source is None or variable not in source.variables:
        return aux or None
    mapping = str(source[variable].attrs.get("grid_mapping", ""))
    try:  # the HR grid has the LR grid's projection, so its grid mapping holds
        if mapping in source.variables:
            aux[f"grid_mapping:{mapping}"] = source[mapping].load()
    except (OSError, ValueError):
        pass
    return aux or None


def _training_aux(grid: OutputGrid, meta: CheckpointMeta) -> dict[str, xr.DataArray] | None:
    """The 2-D coordinates the checkpoint stores for its HR training grid, if ``grid`` is it."""
    from weather_sr.data.grid import Grid, same_axis

    trained = meta.grid or {}
    if not trained.get("aux") or not (
            same_axis(grid.lat, np.asarray(trained.get("lat", [])))
            and same_axis(grid.lon, np.asarray(trained.get("lon", [])))):
        return None
    hr = Grid.from_dict(dict(trained))
    return {k: xr.DataArray(v, dims=(grid.lat_name, grid.lon_name), attrs=a)
            for k, (v, a) in hr.aux.items()}


def _interpolated_aux(grid: Any, out_grid: OutputGrid, s: int
                      ) -> dict[str, xr.DataArray] | None:
    """The LR grid's 2-D latitude/longitude interpolated onto its HR grid (None if it has none):
    a projected grid's latitude/longitude vary smoothly, so linearly between LR centres."""
    out: dict[str, xr.DataArray] = {}
    for name, (values, attrs) in grid.aux.items():
        kind = _latlon_kind(str(name))
        v = np.asarray(values, np.float64)
        if kind is None or v.ndim != 2:
            continue
        hr = lr_to_hr_lon(v, s) if kind == "lon" else lr_to_hr_linear(v, s)
        out[str(name)] = xr.DataArray(hr, dims=(out_grid.lat_name, out_grid.lon_name),
                                      attrs=dict(attrs))
    return out or None


def lr_to_hr_linear(values: np.ndarray, s: int) -> np.ndarray:
    """A smooth field on an LR grid ``[h, w]`` -> its HR grid ``[h * s, w * s]``: HR pixel ``i``
    lies at LR fractional index ``(i + 0.5) / s - 0.5``; bilinear inside, linear extrapolation
    from the edge cells beyond the outer LR centres (a linear field is reproduced everywhere)."""
    out = np.asarray(values, np.float64)
    for axis in (0, 1):
        n = out.shape[axis]
        pos = (np.arange(n * s) + 0.5) / s - 0.5
        if n == 1:  # one LR centre along this axis: nothing to interpolate between
            out = np.repeat(out, s, axis=axis)
            continue
        i0 = np.clip(np.floor(pos).astype(np.int64), 0, n - 2)
        t = np.expand_dims(pos - i0, 1 - axis)  # broadcasts along the other axis
        a, b = np.take(out, i0, axis=axis), np.take(out, i0 + 1, axis=axis)
        out = a + (b - a) * t
    return out


def lr_to_hr_lon(lon: np.ndarray, s: int) -> np.ndarray:
    """:func:`lr_to_hr_linear` for longitude (degrees): across a jump by 360 degrees (e.g. from
    359 to 0 on a grid crossing the prime meridian) it interpolates the unwrapped values, then
    wraps the result back into the input's range ([0, 360) or [-180, 180))."""
    lon = np.asarray(lon, np.float64)
    jumps = [np.abs(np.diff(lon, axis=a)) for a in (0, 1) if lon.shape[a] > 1]
    if not any(j.size and j.max() > 180.0 for j in jumps):
        return lr_to_hr_linear(lon, s)
    ref = float(lon.flat[lon.size // 2])
    lo = 0.0 if lon.min() >= 0.0 else -180.0
    out = np.mod(ref + lr_to_hr_linear((lon - ref + 180.0) % 360.0 - 180.0, s) - lo, 360.0)
    return np.where(out < 360.0, out, 0.0) + lo  # -1e-14 % 360 is 360.0 in floating point
