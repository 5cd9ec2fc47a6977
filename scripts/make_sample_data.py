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
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import xarray as xr

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from weather_sr.atomic import atomic_output  # noqa: E402

VARIABLES = ("pwat", "btmp")
CROP_Y, CROP_X = slice(6, 134), slice(9, 201)  # central 128 x 192 of 140 x 210
OUT = ROOT / "src" / "weather_sr" / "sample_data" / "safrica_sample.nc"


def grid_keys(grib: Path) -> dict[str, float]:
    """Projection keys of the first GRIB message (eccodes)."""
    import eccodes

    keys = ("DxInMetres", "DyInMetres", "LaDInDegrees", "orientationOfTheGridInDegrees")
    with open(grib, "rb") as fh:
        h = eccodes.codes_grib_new_from_file(fh)
        try:
            return {k: float(eccodes.codes_get(h, k)) for k in keys}
        finally:
            eccodes.codes_release(h)


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
    ny, nx = first.sizes["y"], first.sizes["x"]
    y = (np.arange(ny) + CROP_Y.start) * keys["DyInMetres"]
    x = (np.arange(nx) + CROP_X.start) * keys["DxInMetres"]
    coords = {
        "time": ("time", first["time"].values, {"standard_name": "time", "axis": "T"}),
        "y": ("y", y, {"standard_name": "projection_y_coordinate", "units": "m", "axis": "Y"}),
        "x": ("x", x, {"standard_name": "projection_x_coordinate", "units": "m", "axis": "X"}),
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
        attrs.update(grid_mapping="polar_stereographic", coordinates="latitude longitude")
        data_vars[name] = (("time", "y", "x"), da.values.astype(np.float32), attrs)
    data_vars["polar_stereographic"] = (
        (),
        np.int32(0),
        {
            "grid_mapping_name": "polar_stereographic",
            "latitude_of_projection_origin": -90.0,
            "standard_parallel": keys["LaDInDegrees"],
            "straight_vertical_longitude_from_pole": keys["orientationOfTheGridInDegrees"],
            "comment": "x/y are offsets from the first point of the original 140x210 grid",
        },
    )
    attrs = {
        "title": "weather-sr sample: NCEP forecast over southern Africa (pwat, btmp)",
        "institution": "US National Weather Service - NCEP (GRIB centre kwbc, subcentre 12)",
        "source": "pygrib 2.1.6 sdist, sampledata/safrica.grib2 (MIT-licensed package)",
        "forecast_reference_time": "2010-03-08T12:00:00Z",
        "history": "scripts/make_sample_data.py: central 128x192 crop, valid time as time axis",
        "Conventions": "CF-1.8",
    }
    return xr.Dataset(data_vars, coords=coords, attrs=attrs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pygrib_sdist", type=Path, help="unpacked pygrib source distribution")
    parser.add_argument("--output", type=Path, default=OUT)
    args = parser.parse_args(argv)
    grib = args.pygrib_sdist / "sampledata" / "safrica.grib2"
    if not grib.is_file():
        parser.error(f"{grib} not found: unpack the pygrib sdist and give its folder")
    ds = build(grib)
    enc = {v: {"zlib": True, "complevel": 9, "shuffle": True} for v in VARIABLES}
    with atomic_output(args.output, overwrite=True, what="sample file") as tmp:
        ds.to_netcdf(tmp, encoding=enc, engine="netcdf4")
    size = args.output.stat().st_size / 1e6
    print(f"wrote {args.output} ({size:.2f} MB): {dict(ds.sizes)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
