"""CF-1.8 NetCDF output of a downscaled ensemble: HR grid, ``member`` dimension, provenance.

The file passes the IOOS compliance-checker at CF-1.8 and converts to netCDF classic: time is
stored as float64 (int64 types arrive only in CF-1.9), integer attributes as 32-bit integers
(a seed beyond that range as its decimal string), coordinates carry no ``_FillValue``, ``member``
has units "1" and standard_name ``realization``. Each variable keeps the ``standard_name`` of the
input; else one from :data:`STANDARD_NAMES` (common weather variables by short name); else none.

The HR coordinates are the cell centres of the s×s sub-cells of each LR cell (cell edges halfway
between LR centres, extrapolated at the ends), or the coordinates of a target grid file. The file is
written by :mod:`weather_sr.inference.stream` through :func:`weather_sr.atomic.atomic_output`, so
a failed or interrupted write leaves nothing at the output path.
"""

from __future__ import annotations

import datetime as _dt
import functools
import hashlib
import os
import shlex
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from weather_sr import __version__
from weather_sr.data.pairs import hr_coordinate
from weather_sr.errors import UserError

LAT_ATTRS = {"standard_name": "latitude", "long_name": "latitude", "units": "degrees_north",
             "axis": "Y"}
LON_ATTRS = {"standard_name": "longitude", "long_name": "longitude", "units": "degrees_east",
             "axis": "X"}
STANDARD_NAMES = {
    # short name -> CF standard name, used when the input variable has none
    "t2m": "air_temperature", "2t": "air_temperature", "tas": "air_temperature",
    "t": "air_temperature", "d2m": "dew_point_temperature", "2d": "dew_point_temperature",
    "u10": "eastward_wind", "10u": "eastward_wind", "uas": "eastward_wind", "u": "eastward_wind",
    "v10": "northward_wind", "10v": "northward_wind", "vas": "northward_wind",
    "v": "northward_wind", "msl": "air_pressure_at_mean_sea_level",
    "psl": "air_pressure_at_mean_sea_level", "sp": "surface_air_pressure",
    "ps": "surface_air_pressure", "z": "geopotential", "q": "specific_humidity",
    "huss": "specific_humidity", "r": "relative_humidity",
    "tp": "lwe_thickness_of_precipitation_amount",
    "pr": "precipitation_flux", "sst": "sea_surface_temperature", "tcc": "cloud_area_fraction",
    "tcwv": "atmosphere_mass_content_of_water_vapor",
    "pwat": "atmosphere_mass_content_of_water_vapor", "btmp": "toa_brightness_temperature",
}
INT32 = (-(2**31), 2**31 - 1)
LAT_NAMES = ("lat", "latitude", "nav_lat", "grid_latitude", "rlat", "y")
LON_NAMES = ("lon", "longitude", "nav_lon", "grid_longitude", "rlon", "x")


@dataclass
class OutputGrid:
    """1-D HR coordinates with their dimension names and attributes."""

    lat: np.ndarray  # [H]
    lon: np.ndarray  # [W]
    lat_name: str = "lat"
    lon_name: str = "lon"
    lat_attrs: dict[str, Any] = field(default_factory=dict)
    lon_attrs: dict[str, Any] = field(default_factory=dict)


def hr_grid_from_lr(
    lat: np.ndarray, lon: np.ndarray, scale_factor: int, *, lat_name: str = "lat",
    lon_name: str = "lon", lat_attrs: Mapping[str, Any] | None = None,
    lon_attrs: Mapping[str, Any] | None = None,
) -> OutputGrid:
    """HR grid (cell centres of the block grid) from the LR coordinates and the scale factor."""
    return OutputGrid(
        hr_coordinate(lat, scale_factor), hr_coordinate(lon, scale_factor), lat_name, lon_name,
        dict(lat_attrs or {}), dict(lon_attrs or {}),
    )


def _find_coord(ds: xr.Dataset, names: Sequence[str], standard: str) -> str | None:
    for name, var in ds.variables.items():
        if var.ndim == 1 and var.attrs.get("standard_name") == standard:
            return str(name)
    lower = {str(n).lower(): str(n) for n in ds.variables}
    return next((lower[n] for n in names if n in lower), None)


def read_target_grid(path: str | os.PathLike[str], h: int, w: int) -> OutputGrid:
    """1-D lat/lon coordinates of a target grid file; UserError unless they are ``[h]``, ``[w]``."""
    try:
        ds = xr.open_dataset(path)
    except (OSError, ValueError) as exc:
        reason = str(exc).split(". ")[0].splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(f"--target-grid {path}: unreadable ({reason}): give a NetCDF file"
                        ) from exc
    with ds:
        lat_name = _find_coord(ds, LAT_NAMES, "latitude")
        lon_name = _find_coord(ds, LON_NAMES, "longitude")
        if lat_name is None or lon_name is None:
            raise UserError(f"--target-grid {path}: no 1-D latitude/longitude coordinates found")
        lat, lon = ds[lat_name].values, ds[lon_name].values
        if lat.ndim != 1 or lon.ndim != 1 or lat.size != h or lon.size != w:
            raise UserError(
                f"--target-grid {path}: grid is {lat.size}x{lon.size} but the output is {h}x{w} "
                "(LR size x scale factor): give a grid of that size or omit --target-grid"
            )
        if lat.size > 1 and lat[0] > lat[-1]:
            raise UserError(
                f"--target-grid {path}: latitude decreases; outputs run south to north: flip it"
            )
        return OutputGrid(lat, lon, lat_name, lon_name, dict(ds[lat_name].attrs),
                          dict(ds[lon_name].attrs))


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file (a folder: of its files' names and contents, in sorted order).

    A file's digest is remembered while its identity, size and modification time stay the same
    (a streamed ``downscale`` builds the provenance of every chunk: the checkpoint is read once).
    """
    p = Path(path)
    if p.is_file():
        st = p.stat()
        return _sha256_of_file(str(p.resolve()), st.st_dev, st.st_ino, st.st_size,
                               st.st_mtime_ns)
    return _sha256(p)


@functools.lru_cache(maxsize=16)
def _sha256_of_file(path: str, dev: int, ino: int, size: int, mtime_ns: int) -> str:
    del dev, ino, size, mtime_ns  # the cache key only
    return _sha256(Path(path))


def _sha256(p: Path) -> str:
    digest = hashlib.sha256()
    files = sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p]
    for f in files:
        if p.is_dir():
            digest.update(str(f.relative_to(p)).encode())
        with open(f, "rb") as handle:
            for block in iter(lambda h=handle: h.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def provenance(
    *, checkpoint: str | os.PathLike[str], sampler: str, steps: int, eta: float, seed: int,
    members: int, tile: int | None, overlap: int, argv: Sequence[str] | None = None,
    extra: Mapping[str, Any] | None = None, model: str = "conditional diffusion model",
) -> dict[str, Any]:
    """Global provenance attributes (NetCDF-safe scalars and strings); ``model``: what made the
    output, for the CF ``source``."""
    now = _dt.datetime.now(_dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")
    command = shlex.join(list(sys.argv if argv is None else argv))
    attrs: dict[str, Any] = {
        "Conventions": "CF-1.8",
        "title": "Probabilistic downscaling with weather-sr",
        "source": f"weather-sr {__version__} ({model})",
        "history": f"{now}: {command}",
        "date_created": now,
        "weather_sr_version": __version__,
        "command_line": command,
        "checkpoint": str(checkpoint),
        "checkpoint_sha256": sha256_file(checkpoint),
        "sampler": sampler,
        "steps": int(steps),
        "eta": float(eta),
        "seed": int(seed),
        "members": int(members),
        "tile": int(tile) if tile else 0,
        "overlap": int(overlap),
    }
    for key, value in (extra or {}).items():
        attrs[key] = value if isinstance(value, int | float | str) else str(value)
    return {key: _cf_attr(value) for key, value in attrs.items()}


def _cf_attr(value: Any) -> Any:
    """An attribute value in a type netCDF classic and CF-1.8 allow: int32, float64 or text."""
    if isinstance(value, bool | np.bool_):
        return np.int32(value)
    if isinstance(value, int | np.integer):
        return np.int32(value) if INT32[0] <= int(value) <= INT32[1] else str(int(value))
    return value


def check_finite(samples: np.ndarray, channels: Sequence[str], valid: np.ndarray | None) -> None:
    """UserError naming the channel if the model output ``[N, M, C, H, W]`` has NaN/Inf where
    the input was valid (``valid`` broadcastable to it, True = valid; None = everywhere)."""
    for c, name in enumerate(channels):
        v = samples[:, :, c]
        bad = ~np.isfinite(v) if valid is None else ~np.isfinite(v) & valid[:, :, c]
        if bad.any():
            raise UserError(
                f"the model produced {int(bad.sum())} non-finite values in channel {name}: "
                "nothing written; check the checkpoint (training diverged?) or use fewer steps/"
                "another --sampler"
            )


def build_dataset(
    samples: np.ndarray, grid: OutputGrid, *, channels: Sequence[str], units: Sequence[str],
    long_names: Sequence[str] | None = None, times: np.ndarray | None = None,
    input_members: np.ndarray | None = None, attrs: Mapping[str, Any] | None = None,
    standard_names: Sequence[str] | None = None, members: bool = True,
) -> xr.Dataset:
    """Ensemble ``samples [N, M, C, H, W]`` (physical units) -> CF Dataset.

    Dims ``(time, member, lat, lon)``; when the input itself has ensemble members, the first dim is
    ``sample`` with ``time`` and ``input_member`` coordinates on it. ``members`` False (mean
    mode, ``M = 1``): no ``member`` dim, ``(time, lat, lon)``. ``standard_names`` (the
    input's, "" when it had none) falls back to :data:`STANDARD_NAMES` by channel name.
    """
    m, h, w = samples.shape[1], samples.shape[3], samples.shape[4]
    if (grid.lat.size, grid.lon.size) != (h, w):
        raise ValueError(f"grid {grid.lat.size}x{grid.lon.size} does not match fields {h}x{w}")
    first = "time" if input_members is None else "sample"
    lat_attrs = {**grid.lat_attrs, **LAT_ATTRS} if _degrees(grid.lat_attrs) else {
        **grid.lat_attrs, "axis": "Y"}
    lon_attrs = {**grid.lon_attrs, **LON_ATTRS} if _degrees(grid.lon_attrs) else {
        **grid.lon_attrs, "axis": "X"}
    coords: dict[str, Any] = {
        "member": ("member", np.arange(m, dtype=np.int32),
                   {"standard_name": "realization", "long_name": "ensemble member",
                    "units": "1"}),
        grid.lat_name: (grid.lat_name, np.asarray(grid.lat), lat_attrs),
        grid.lon_name: (grid.lon_name, np.asarray(grid.lon), lon_attrs),
    }
    time_attrs = {"standard_name": "time", "long_name": "time", "axis": "T"}
    if times is not None and not np.issubdtype(np.asarray(times).dtype, np.datetime64):
        time_attrs = {"long_name": "index of the input field"}  # the input had no time axis
    if times is not None:
        coords["time"] = (first, _int32(np.asarray(times)), time_attrs)
    if input_members is not None:
        coords["input_member"] = (first, _int32(np.asarray(input_members)),
                                  {"long_name": "ensemble member of the input"})
    if not members:
        if m != 1:
            raise ValueError(f"members=False needs one field per time, got {m}")
        del coords["member"]
    dims = (first, *(("member",) if members else ()), grid.lat_name, grid.lon_name)
    data_vars = {}
    for k, name in enumerate(channels):
        var_attrs = {"long_name": (long_names[k] if long_names else "") or name,
                     "units": units[k] if units[k] else "1"}
        standard = (standard_names[k] if standard_names else "") or STANDARD_NAMES.get(name)
        if standard:
            var_attrs["standard_name"] = standard
        values = samples[:, :, k] if members else samples[:, 0, k]
        data_vars[name] = (dims, values.astype(np.float32), var_attrs)
    ds = xr.Dataset(data_vars, coords=coords,
                    attrs={k: _cf_attr(v) for k, v in (attrs or {}).items()})
    for name in channels:
        ds[name].encoding.update(zlib=True, complevel=4, _FillValue=np.float32(np.nan))
    return ds


def _int32(values: np.ndarray) -> np.ndarray:
    """Integer values as int32 when they fit (netCDF classic has no int64)."""
    if np.issubdtype(values.dtype, np.integer) and values.size and (
            INT32[0] <= values.min() and values.max() <= INT32[1]):
        return values.astype(np.int32)
    return values


def cf_encoding(ds: xr.Dataset) -> None:
    """Encode ``ds`` in place for CF-1.8 / netCDF classic: datetimes as float64, no
    ``_FillValue`` on coordinates (nor on the grid-mapping variable)."""
    for name, var in ds.variables.items():
        if np.issubdtype(var.dtype, np.datetime64) or np.issubdtype(var.dtype, np.timedelta64):
            var.encoding["dtype"] = "float64"
        if name in ds.coords or "grid_mapping_name" in var.attrs:
            var.encoding["_FillValue"] = None


def _degrees(attrs: Mapping[str, Any]) -> bool:
    units = str(attrs.get("units", "degrees")).lower()
    return "degree" in units or not attrs.get("units")
