#!/usr/bin/env python
"""Rebuild src/weather_sr/sample_data/safrica_sample.nc from the pygrib source distribution.

    pip download --no-deps --no-binary :all: pygrib==2.1.6 -d /tmp/x   # needs Cython to build
    tar xzf /tmp/x/pygrib-2.1.6.tar.gz -C /tmp/x                          # metadata; or take the
    python scripts/make_sample_data.py /tmp/x/pygrib-2.1.6               # tarball from PyPI

Source: ``sampledata/safrica.grib2`` (NCEP, one forecast run initialised 2010-03-08 12 UTC,
25 steps every 3 h to +72 h, polar stereographic grid of 140 x 210 points at 47.625 km over
southern Africa and the South Atlantic). Reads it with cfgrib (the project's ``grib`` extra) and
eccodes for the projection keys; keeps precipitable water (pwat) and cloud-top brightness
temperature (btmp); crops the central 128 x 192 points (rows 6..133, columns 9..200), divisible
by 16; uses valid time as the time axis; writes compressed NetCDF atomically.

x/y are the true projected coordinates (metres) of the CF ``polar_stereographic`` grid mapping
(south pole, standard parallel LaD, orientation, the GRIB message's spherical earth, no false
easting/northing): the 2-D latitude/longitude that eccodes computes for the grid points are put
through the mapping with pyproj (the ``dev`` extra), and the result must be a regular grid;
otherwise the file gets no grid mapping (only the 2-D latitude/longitude).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pyproj  # before xarray opens a file: the eccodes wheel loads a PROJ library of its own
import xarray as xr

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from weather_sr.atomic import atomic_output  # noqa: E402

VARIABLES = ("pwat", "btmp")
STANDARD_NAMES = {"pwat": "atmosphere_mass_content_of_water_vapor",
                  "btmp": "toa_brightness_temperature"}
EARTH_RADIUS = {0: 6367470.0, 6: 6371229.0}  # GRIB2 shapeOfTheEarth -> sphere radius (m)
REGULAR_TOLERANCE = 1.0  # metres: projected points must lie this close to a regular grid
CROP_Y, CROP_X = slice(6, 134), slice(9, 201)  # central 128 x 192 of 140 x 210
OUT = ROOT / "src" / "weather_sr" / "sample_data" / "safrica_sample.nc"


def grid_keys(grib: Path) -> dict[str, float]:
    """Projection keys of the first GRIB message (eccodes)."""
    import eccodes

    keys = ("DxInMetres", "DyInMetres", "LaDInDegrees", "orientationOfTheGridInDegrees",
            "shapeOfTheEarth")
    with open(grib, "rb") as fh:
        h = eccodes.codes_grib_new_from_file(fh)
        try:
            return {k: float(eccodes.codes_get(h, k)) for k in keys}
        finally:
            eccodes.codes_release(h)


def grid_mapping(keys: dict[str, float]) -> dict[str, float | str] | None:
    """CF polar_stereographic attributes of the GRIB grid (None: earth shape not a known sphere)."""
    radius = EARTH_RADIUS.get(int(keys["shapeOfTheEarth"]))
    if radius is None:
        return None
    return {
        "grid_mapping_name": "polar_stereographic",
        "latitude_of_projection_origin": -90.0,
        "standard_parallel": keys["LaDInDegrees"],
        "straight_vertical_longitude_from_pole": keys["orientationOfTheGridInDegrees"],
        "false_easting": 0.0,
        "false_northing": 0.0,
        "earth_radius": radius,
    }


def projected_xy(
    lat: np.ndarray, lon: np.ndarray, mapping: dict[str, float | str]
) -> tuple[np.ndarray, np.ndarray] | None:
    """1-D x [nx], y [ny] (metres) of the 2-D lat/lon [ny, nx] in ``mapping``; None unless the
    projected points form a regular grid (to :data:`REGULAR_TOLERANCE`)."""
    crs = pyproj.CRS.from_cf(dict(mapping))
    to_xy = pyproj.Transformer.from_crs(crs.geodetic_crs, crs, always_xy=True)
    px, py = to_xy.transform(lon, lat)
    x, y = px.mean(axis=0), py.mean(axis=1)
    off = max(np.abs(px - x[None, :]).max(), np.abs(py - y[:, None]).max())
    steps = np.concatenate([np.diff(x), np.diff(y)])
    if off > REGULAR_TOLERANCE or np.ptp(steps) > REGULAR_TOLERANCE:
        return None
    return x, y


def with_true_projection(ds: xr.Dataset, mapping: dict[str, float | str] | None) -> xr.Dataset:
    """``ds`` with x/y replaced by the projected coordinates of its 2-D latitude/longitude and
    ``mapping`` as its grid mapping; without a grid mapping when that fails. Values, times and
    latitude/longitude are kept as they are."""
    xy = None if mapping is None else projected_xy(
        ds["latitude"].values, ds["longitude"].values, mapping)
    ds = ds.drop_vars("polar_stereographic", errors="ignore")
    for name in VARIABLES:
        ds[name].attrs.pop("grid_mapping", None)
        ds[name].attrs["standard_name"] = STANDARD_NAMES[name]
    if xy is None:
        print("the grid does not fit the polar stereographic mapping: no grid mapping written")
        return ds
    x, y = xy
    ds = ds.assign_coords(
        x=("x", x, {"standard_name": "projection_x_coordinate", "long_name": "x coordinate of "
                    "projection", "units": "m", "axis": "X"}),
        y=("y", y, {"standard_name": "projection_y_coordinate", "long_name": "y coordinate of "
                    "projection", "units": "m", "axis": "Y"}),
    )
    ds["polar_stereographic"] = ((), np.int32(0), dict(mapping))
    for name in VARIABLES:
        ds[name].attrs["grid_mapping"] = "polar_stereographic"
    return ds


def write(ds: xr.Dataset, output: Path) -> None:
    """Compressed NetCDF, atomically; no _FillValue on coordinates."""
    enc: dict[str, dict] = {v: {"zlib": True, "complevel": 9, "shuffle": True} for v in VARIABLES}
    enc.update({c: {"_FillValue": None} for c in ("x", "y", "latitude", "longitude") if c in ds})
    enc["time"] = {"dtype": "int32"}  # whole hours; CF-1.8 has no int64
    with atomic_output(output, overwrite=True, what="sample file") as tmp:
        ds.to_netcdf(tmp, encoding=enc, engine="netcdf4")


def read_variable(grib: Path, name: str) -> xr.DataArray:
    ds = xr.open_dataset(
        grib,
        engine="cfgrib",
        backend_kwargs={"indexpath": "", "filter_by_keys": {"shortName": name}},
    )
    da = ds[name].load()
    valid = ds["valid_time"].values
    da = da.drop_vars(["time", "valid_time"], errors="ignore").rename(step="time")
    da = da.assign_coords(time=valid)
    return da.isel(y=CROP_Y, x=CROP_X)


def build(grib: Path) -> xr.Dataset:
    keys = grid_keys(grib)
    parts = {v: read_variable(grib, v) for v in VARIABLES}
    first = parts[VARIABLES[0]]
    coords = {
        "time": ("time", first["time"].values, {"standard_name": "time", "axis": "T"}),
        "latitude": (
            ("y", "x"),
            first["latitude"].values,
            {"standard_name": "latitude", "units": "degrees_north"},
        ),
        "longitude": (
            ("y", "x"),
            first["longitude"].values,
            {"standard_name": "longitude", "units": "degrees_east"},
        ),
    }
    data_vars = {}
    for name, da in parts.items():
        attrs = {k: da.attrs[k] for k in ("long_name", "units") if k in da.attrs}
        attrs.update(coordinates="latitude longitude")
        data_vars[name] = (("time", "y", "x"), da.values.astype(np.float32), attrs)
    attrs = {
        "title": "weather-sr sample: NCEP forecast over southern Africa (pwat, btmp)",
        "institution": "US National Weather Service - NCEP (GRIB centre kwbc, subcentre 12)",
        "source": "pygrib 2.1.6 sdist, sampledata/safrica.grib2 (MIT-licensed package)",
        "forecast_reference_time": "2010-03-08T12:00:00Z",
        "history": "scripts/make_sample_data.py: central 128x192 crop, valid time as time axis",
        "Conventions": "CF-1.8",
    }
    return with_true_projection(xr.Dataset(data_vars, coords=coords, attrs=attrs),
                                grid_mapping(keys))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pygrib_sdist", type=Path, help="unpacked pygrib source distribution")
    parser.add_argument("--output", type=Path, default=OUT)
    args = parser.parse_args(argv)
    grib = args.pygrib_sdist / "sampledata" / "safrica.grib2"
    if not grib.is_file():
        parser.error(f"{grib} not found: unpack the pygrib sdist and give its folder")
    ds = build(grib)
    write(ds, args.output)
    size = args.output.stat().st_size / 1e6
    print(f"wrote {args.output} ({size:.2f} MB): {dict(ds.sizes)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
