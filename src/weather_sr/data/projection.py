"""Grid mappings: the CF ``grid_mapping`` of a variable, the latitude/longitude it gives a
projected or rotated-pole grid (pyproj), and which coordinates are geographic.

A projected HR grid (Lambert conformal, polar stereographic, rotated pole, ...) fed from
latitude/longitude predictors is regridded at the latitude/longitude of its points: its 2-D
latitude/longitude coordinates when the file has them, else those its grid mapping gives
(:func:`latlon_of_mapping`), as CF allows either.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import xarray as xr

from weather_sr.errors import UserError

_LENGTH = {"m": 1.0, "metre": 1.0, "meter": 1.0, "metres": 1.0, "meters": 1.0, "km": 1000.0}


def grid_mapping_of(ds: xr.Dataset, variable: str) -> dict[str, Any] | None:
    """``{"name": ..., "attrs": {...}}`` of ``variable``'s CF grid-mapping variable, or None."""
    name = str(ds[variable].attrs.get("grid_mapping", "") or ds[variable].encoding.get(
        "grid_mapping", ""))
    if not name or name not in ds.variables:
        return None
    attrs = {str(k): (v.tolist() if isinstance(v, np.ndarray | np.generic) else v)
             for k, v in ds[name].attrs.items()}
    return {"name": name, "attrs": attrs}


def is_geographic(y_attrs: Mapping[str, Any], x_attrs: Mapping[str, Any], y_name: str) -> bool:
    """Whether 1-D axes are latitude/longitude on the sphere (not projected, not rotated)."""
    standard = str(y_attrs.get("standard_name", "")).lower()
    if standard in ("grid_latitude", "projection_y_coordinate"):
        return False
    if standard == "latitude" or str(x_attrs.get("standard_name", "")).lower() == "longitude":
        return True
    units = str(y_attrs.get("units", "")).lower()
    if units:
        return units in ("degrees_north", "degree_north", "degrees_n", "degree_n")
    return y_name.lower() in ("lat", "latitude")


def latlon_of_mapping(mapping: Mapping[str, Any], y: np.ndarray, x: np.ndarray,
                      y_attrs: Mapping[str, Any], x_attrs: Mapping[str, Any], where: str
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Latitude and longitude [H, W] (degrees) of the grid ``y`` [H] x ``x`` [W] in the CRS
    of a CF grid mapping (pyproj's ``CRS.from_cf``). UserError naming ``where`` when pyproj
    does not know the mapping or the axes' units are not a length (nor degrees, rotated pole)."""
    import pyproj

    attrs = dict(mapping.get("attrs", mapping))
    try:
        crs = pyproj.CRS.from_cf(attrs)
    except pyproj.exceptions.CRSError as exc:
        raise UserError(f"{where}: grid mapping {attrs.get('grid_mapping_name')!r} is not one "
                        f"pyproj reads ({str(exc).splitlines()[0]}): add 2-D latitude/longitude "
                        "coordinates to the file") from None
    scale = 1.0
    if crs.is_projected:
        units = {str(a.get("units", "m")).lower() for a in (y_attrs, x_attrs)}
        if len(units) != 1 or next(iter(units)) not in _LENGTH:
            raise UserError(f"{where}: projection coordinates in units {sorted(units)}: give "
                            "them in m or km, or add 2-D latitude/longitude coordinates")
        scale = _LENGTH[next(iter(units))]
    xx, yy = np.meshgrid(np.asarray(x, np.float64) * scale, np.asarray(y, np.float64) * scale)
    # a rotated pole's base CRS (its geodetic_crs is the rotated one itself)
    to_geo = pyproj.Transformer.from_crs(crs, crs.source_crs or crs.geodetic_crs, always_xy=True)
    lon, lat = to_geo.transform(xx, yy)
    return np.asarray(lat, np.float64), np.asarray(lon, np.float64)
