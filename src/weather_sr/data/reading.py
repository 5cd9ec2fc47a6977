"""Standardised fields: any supported file -> ``xr.DataArray`` with dims (sample, channel, y, x).

Rules (documented in docs/data.md):

- Dims are recognised by the CF attributes of their coordinate (``axis``, ``standard_name``),
  then by name (case-insensitive): see ``DIM_NAMES``.
- time and ensemble member are stacked into ``sample`` (time-major: all members of a time are
  consecutive); ``sample`` carries ``time`` (and ``member``) coordinates.
- A pressure/vertical level dim becomes separate channels named ``f"{var}_{level:g}"``
  (e.g. ``t_500``, ``t_850``), levels in increasing order; variables in the order given.
- Other dims of length 1 are dropped; longer ones are an error.
- Latitude (y) is made increasing (south to north); longitude is kept as stored. Coordinates keep
  their attributes; per-channel units are in ``attrs["units"]``.
- ``attrs["periodic"]`` is True when the grid is global in longitude (|dlon| * nx ≈ 360).
- ``attrs["grid_mapping"]``: the first variable's CF grid mapping, ``{"name", "attrs"}``
  (:func:`weather_sr.data.projection.grid_mapping_of`), when it has one.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import xarray as xr

from weather_sr.data.files import PathSpec, open_dataset
from weather_sr.data.projection import grid_mapping_of
from weather_sr.errors import UserError

DIM_NAMES: dict[str, tuple[str, ...]] = {
    "time": ("time", "t", "valid_time", "date", "datetime", "step", "lead_time"),
    "member": ("number", "member", "realization", "ensemble", "ens", "ensemble_member"),
    "level": ("level", "isobaricinhpa", "plev", "pressure", "pressure_level", "lev", "levels"),
    "lat": ("lat", "latitude", "y", "rlat", "nav_lat", "south_north", "grid_latitude"),
    "lon": ("lon", "longitude", "x", "rlon", "nav_lon", "west_east", "grid_longitude"),
}
STANDARD_NAMES: dict[str, tuple[str, ...]] = {
    "time": ("time",),
    "member": ("realization",),
    "level": ("air_pressure", "pressure"),
    "lat": ("latitude", "grid_latitude", "projection_y_coordinate"),
    "lon": ("longitude", "grid_longitude", "projection_x_coordinate"),
}
AXES = {"T": "time", "Y": "lat", "X": "lon", "Z": "level"}


def classify_dims(da: xr.DataArray, where: str) -> dict[str, str]:
    """Map roles (time, member, level, lat, lon) to ``da``'s dim names; UserError if unknown."""
    roles: dict[str, str] = {}
    unknown: list[str] = []
    for dim in da.dims:
        attrs = da[dim].attrs if dim in da.coords else {}
        role = AXES.get(str(attrs.get("axis", "")).upper())
        sn = str(attrs.get("standard_name", "")).lower()
        role = role or next((r for r, names in STANDARD_NAMES.items() if sn in names), None)
        name = str(dim).lower()
        role = role or next((r for r, names in DIM_NAMES.items() if name in names), None)
        if role is None or role in roles:
            if da.sizes[dim] == 1:
                continue  # a length-1 dim (e.g. a single step or height) carries no information
            unknown.append(f"{dim}({da.sizes[dim]})")
            continue
        roles[role] = str(dim)
    if unknown:
        known = ", ".join(f"{r}: {'/'.join(n)}" for r, n in DIM_NAMES.items())
        raise UserError(
            f"{where}: unrecognised dims {', '.join(unknown)}; recognised names are {known} "
            "(or CF axis/standard_name attributes): rename the dims or select one element"
        )
    for role in ("lat", "lon"):
        if role not in roles:
            raise UserError(f"{where}: no {role} dim among {list(da.dims)}: rename it to {role}")
    return roles


def _level_label(value: object) -> str:
    return f"{float(value):g}" if np.issubdtype(np.asarray(value).dtype, np.number) else str(value)


def _standardise_variable(ds: xr.Dataset, var: str, where: str) -> xr.DataArray:
    """One variable -> dims (time, member, channel, y, x), levels expanded into channels."""
    da = ds[var]
    roles = classify_dims(da, f"{where}, variable {var}")
    extra = [d for d in da.dims if d not in roles.values()]
    da = da.isel({d: 0 for d in extra}, drop=True)
    # one chunk per sample: reads touch one field (.chunks, not .data, which would read it all)
    if da.chunks is None:
        da = da.chunk({roles[r]: 1 for r in ("time", "member") if r in roles})
    if (
        roles.get("time") == "step"
        and "valid_time" in da.coords
        and da["valid_time"].dims == ("step",)
    ):
        da = da.drop_vars("time", errors="ignore").assign_coords(step=da["valid_time"].values)
        da = da.drop_vars("valid_time")  # forecast steps of one run: valid time is the time axis
    rename = {roles["lat"]: "y", roles["lon"]: "x"}
    for role in ("time", "member", "level"):
        if role in roles:
            rename[roles[role]] = role
    da = da.rename(rename)
    for role in ("time", "member", "level"):
        if role not in da.dims:
            da = da.expand_dims(role)
    if "level" in roles:
        da = da.sortby("level")
        names = [f"{var}_{_level_label(v)}" for v in da["level"].values]
    else:
        names = [var]
    da = da.drop_vars("level", errors="ignore").rename(level="channel")
    da = da.assign_coords(channel=names)
    return da.transpose("time", "member", "channel", "y", "x")


def is_periodic(lon: np.ndarray, lon_attrs: dict) -> bool:
    """True when a 1-D longitude axis in degrees covers the globe: |dlon| * nx ≈ 360."""
    if lon.ndim != 1 or lon.size < 2 or not np.issubdtype(lon.dtype, np.number):
        return False
    units = str(lon_attrs.get("units", "degrees")).lower()
    if "degree" not in units:
        return False
    d = np.diff(lon.astype(np.float64))
    if not np.allclose(d, d[0], rtol=1e-4, atol=1e-6):
        return False
    return bool(abs(abs(d[0]) * lon.size - 360.0) < 1e-3 * 360.0)


def standardise(ds: xr.Dataset, variables: Sequence[str], where: str) -> xr.DataArray:
    """Turn ``ds[variables]`` into the standard lazy DataArray (sample, channel, y, x)."""
    if isinstance(variables, str):
        variables = [variables]
    if not variables:
        raise UserError(f"{where}: no variable selected: give at least one variable name")
    available = [str(v) for v in ds.data_vars]
    for var in variables:
        if var not in ds.data_vars:
            raise UserError(
                f"{where}: variable {var!r} not found; available: {', '.join(available)}"
            )
    parts = [_standardise_variable(ds, v, where) for v in variables]
    units = [
        str(ds[v].attrs.get("units", ""))
        for v, p in zip(variables, parts, strict=True)
        for _ in p.channel
    ]
    try:
        da = xr.concat(parts, dim="channel", join="exact", coords="minimal", compat="override")
    except ValueError as exc:
        raise UserError(
            f"{where}: variables {list(variables)} are not on the same grid/times "
            f"({str(exc).splitlines()[0]}): "
            "select variables sharing one grid"
        ) from exc
    roles = classify_dims(ds[variables[0]], where)
    lat_name, lon_name = roles["lat"], roles["lon"]
    out = _finish(da, units, lat_name, lon_name, list(variables))
    mapping = grid_mapping_of(ds, variables[0])
    if mapping is not None:
        out.attrs["grid_mapping"] = mapping
    return out


def _finish(
    da: xr.DataArray, units: list[str], lat_name: str, lon_name: str, variables: list[str]
) -> xr.DataArray:
    """Sort latitude/time, stack (time, member) into sample, record attributes."""
    lat_1d = "y" in da.coords and da["y"].ndim == 1 and da.sizes["y"] > 1
    if lat_1d and float(da["y"][0]) > float(da["y"][-1]):
        da = da.isel(y=slice(None, None, -1))  # latitude increasing (south -> north)
    if (
        "time" in da.coords
        and da.sizes["time"] > 1
        and not da.indexes["time"].is_monotonic_increasing
    ):
        da = da.sortby("time")
    nt, nm = da.sizes["time"], da.sizes["member"]
    times = da["time"].values if "time" in da.coords else np.arange(nt)
    members = da["member"].values if "member" in da.coords else np.arange(nm)
    data = da.data.reshape((nt * nm, *da.shape[2:]))
    coords: dict[str, object] = {
        "time": ("sample", np.repeat(times, nm)),
        "channel": list(da["channel"].values),
    }
    if nm > 1 or "member" in da.coords:
        coords["member"] = ("sample", np.tile(members, nt))
    for dim, _name in (("y", lat_name), ("x", lon_name)):
        if dim in da.coords:
            coords[dim] = xr.DataArray(da[dim].values, dims=dim, attrs=dict(da[dim].attrs))
    for name, c in da.coords.items():
        if c.dims == ("y", "x") and name not in ("y", "x"):  # 2-D lat/lon of projected grids
            coords[str(name)] = xr.DataArray(c.values, dims=("y", "x"), attrs=dict(c.attrs))
    out = xr.DataArray(data, dims=("sample", "channel", "y", "x"), coords=coords)
    lon = out["x"].values if "x" in out.coords else np.arange(out.sizes["x"])
    lon_attrs = dict(out["x"].attrs) if "x" in out.coords else {}
    out.attrs.update(
        units=units,
        variables=variables,
        lat_name=lat_name,
        lon_name=lon_name,
        periodic=is_periodic(np.asarray(lon), lon_attrs),
    )
    return out


def open_fields(path: PathSpec, variables: Sequence[str], *, load: bool = False) -> xr.DataArray:
    """Open ``variables`` of ``path`` as a DataArray (sample, channel, y, x), lazy unless ``load``.

    Returns dims ``("sample", "channel", "y", "x")``; coords ``time`` (sample), ``member``
    (sample, when the data has members), ``channel`` names, ``y`` (latitude, increasing) and
    ``x`` (longitude) with their original attributes; attrs ``units`` (list per channel),
    ``variables``, ``lat_name``, ``lon_name``, ``periodic``, ``source``.
    With ``load=True`` the values are read and checked (all-NaN channel, Inf) at once.
    """
    if isinstance(variables, str):
        variables = [variables]
    ds, paths = open_dataset(path, variables, DIM_NAMES["time"] + DIM_NAMES["member"])
    where = f"data file {paths[0]}" + (f" (+{len(paths) - 1} more)" if len(paths) > 1 else "")
    da = standardise(ds, variables, where)
    da.attrs["source"] = [str(p) for p in paths]
    if load:
        da = da.load()
        check_values(da.values, list(da["channel"].values), where)
    return da


FLOAT32_MAX = float(np.finfo(np.float32).max)


def check_values(values: np.ndarray, channels: Sequence[str], where: str) -> None:
    """UserError if a channel of ``values`` [N, C, H, W] is entirely NaN or holds Inf.

    Checked as the model sees the values, after the cast to float32: a finite float64 value
    beyond the float32 range (|x| > 3.4e38) would become Inf, and is an error too.
    """
    for c, name in enumerate(channels):
        v = values[:, c]
        if np.isinf(v).any():
            raise UserError(f"{where}: channel {name} contains Inf values: mask them as NaN")
        with np.errstate(invalid="ignore"):
            big = np.abs(v) > FLOAT32_MAX if v.dtype.itemsize > 4 else None
        if big is not None and big.any():
            k = int(np.argwhere(big)[0][0])
            raise UserError(
                f"{where}: channel {name} has values beyond the float32 range (e.g. "
                f"{float(v[big][0]):.3g} in field {k}), which would become Inf: mask them as NaN "
                "or fix the units"
            )
        if not np.isfinite(v).any():
            raise UserError(f"{where}: channel {name} is entirely missing (NaN): select another")
