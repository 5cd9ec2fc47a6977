#!/usr/bin/env python
"""Rebuild src/weather_sr/sample_data/era5_members_sample.nc from the cfgrib source distribution.

    .venv/bin/pip download --no-deps --no-binary :all: cfgrib==0.9.15.0 -d /tmp/cfg
    tar xzf /tmp/cfg/cfgrib-0.9.15.0.tar.gz -C /tmp/cfg
    .venv/bin/python scripts/make_era5_sample.py /tmp/cfg/cfgrib-0.9.15.0

Source: ``tests/sample-data/era5-levels-members.grib`` of cfgrib 0.9.15.0 (ECMWF, Apache-2.0):
ERA5 analyses of the 10-member ensemble of data assimilations, temperature ``t`` and geopotential
``z`` at 500 and 850 hPa, 4 times (2017-01-01 00 and 12 UTC, 2017-01-02 00 and 12 UTC), on a
regular 3-degree global latitude/longitude grid of 61 x 120 points (90 N to 90 S, 0 E to 357 E).

Reads it with cfgrib through xarray (the project's ``grib`` extra); drops the southernmost row
(90 S), so the grid is 60 x 120 (divisible by 4 for the x4 demo and by 4 for a 3-level UNet);
uses the valid time as the time axis (every step is 0 h: analyses); keeps the members as the
``number`` dim (CF ``realization``, one of the member names weather_sr.data.reading recognises)
and the levels as ``isobaricInhPa`` (CF ``air_pressure``, hPa), so ``t`` and ``z`` become the
channels ``t_500``, ``t_850``, ``z_500``, ``z_850``; keeps CF standard names and units, adds the
provenance and the licence to the global attributes, and writes compressed NetCDF-4 atomically.
The values are the GRIB file's, bit for bit (float32), which the script checks before writing.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

import numpy as np
import xarray as xr

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from weather_sr.atomic import atomic_output  # noqa: E402

GRIB = Path("tests") / "sample-data" / "era5-levels-members.grib"
VARIABLES = ("t", "z")
STANDARD_NAMES = {"t": "air_temperature", "z": "geopotential"}
N_LAT = 60  # of 61: the 90 S row is dropped
OUT = ROOT / "src" / "weather_sr" / "sample_data" / "era5_members_sample.nc"
SDIST_VERSION = "0.9.15.0"

LICENSE = (
    "Data: ERA5 (Hersbach et al. 2020, Q. J. R. Meteorol. Soc. 146, 1999-2049; ERA5 hourly data "
    "on pressure levels, doi:10.24381/cds.bd0915c6), produced by ECMWF for the Copernicus Climate "
    "Change Service (C3S), redistributed as found in the cfgrib test data. C3S data are provided "
    "under the Licence to use Copernicus Products (the Climate Data Store now lists ERA5 under "
    "CC-BY 4.0), which permits redistribution and modification with attribution. Attribution: "
    "Contains modified Copernicus Climate Change Service information (ERA5, 2017). Neither the "
    "European Commission nor ECMWF is responsible for any use that may be made of the Copernicus "
    "information or data it contains. The cfgrib package that distributes the GRIB file is "
    "Copyright 2017-2021 ECMWF, Apache License 2.0."
)


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read(grib: Path) -> xr.Dataset:
    """The GRIB file as cfgrib reads it, loaded (dims number, time, isobaricInhPa, lat, lon)."""
    ds = xr.open_dataset(grib, engine="cfgrib", backend_kwargs={"indexpath": ""})
    return ds.load()


def build(src: xr.Dataset, grib: Path) -> xr.Dataset:
    import cfgrib
    import eccodes

    if set(src.sizes.values()) != {10, 4, 2, 61, 120} or src.sizes["latitude"] != 61:
        raise SystemExit(f"{grib}: unexpected sizes {dict(src.sizes)}")
    steps = src["step"].values
    if np.any(steps.astype("timedelta64[s]").astype(np.int64) != 0):
        raise SystemExit(f"{grib}: expected analyses (step 0), got steps {steps}")
    valid = src["valid_time"].values
    lat = src["latitude"].values[:N_LAT]  # 90 N .. 87 S, as stored (north to south)
    levels = src["isobaricInhPa"].values
    coords = {
        "time": ("time", valid, {"standard_name": "time", "long_name": "time", "axis": "T"}),
        "number": ("number", src["number"].values.astype(np.int32),
                   {"standard_name": "realization", "long_name": "ensemble member numerical id",
                    "units": "1"}),
        "isobaricInhPa": ("isobaricInhPa", levels,
                          {"standard_name": "air_pressure", "long_name": "pressure",
                           "units": "hPa", "positive": "down", "axis": "Z"}),
        "latitude": ("latitude", lat, {"standard_name": "latitude", "long_name": "latitude",
                                       "units": "degrees_north", "axis": "Y"}),
        "longitude": ("longitude", src["longitude"].values,
                      {"standard_name": "longitude", "long_name": "longitude",
                       "units": "degrees_east", "axis": "X"}),
    }
    dims = ("time", "number", "isobaricInhPa", "latitude", "longitude")
    data_vars = {}
    for name in VARIABLES:
        da = src[name].isel(latitude=slice(0, N_LAT)).transpose(*dims)
        values = da.values.astype(np.float32)
        attrs = {"standard_name": STANDARD_NAMES[name], "long_name": da.attrs["long_name"],
                 "units": da.attrs["units"], "GRIB_paramId": int(da.attrs["GRIB_paramId"])}
        data_vars[name] = (dims, values, attrs)
    attrs = {
        "title": "weather-sr sample: ERA5 ensemble members, t and z at 500 and 850 hPa, 3-degree "
                 "global grid",
        "institution": "European Centre for Medium-Range Weather Forecasts (ECMWF), for the "
                       "Copernicus Climate Change Service (C3S)",
        "source": f"cfgrib {SDIST_VERSION} source distribution (PyPI cfgrib-{SDIST_VERSION}"
                  f".tar.gz), file {GRIB.as_posix()} (sha256 {sha256(grib)}): ERA5 analyses of "
                  "the 10-member ensemble of data assimilations",
        "references": "Hersbach, H. et al. (2020): The ERA5 global reanalysis. Q. J. R. Meteorol. "
                      "Soc. 146, 1999-2049, doi:10.1002/qj.3803; cfgrib: "
                      "https://github.com/ecmwf/cfgrib",
        "license": LICENSE,
        "history": f"scripts/make_era5_sample.py: read with cfgrib {cfgrib.__version__} / ecCodes "
                   f"{eccodes.codes_get_api_version()}; 90 S row dropped (61 -> 60 latitudes); "
                   "valid time as time axis; values unchanged (float32)",
        "Conventions": "CF-1.8",
    }
    out = xr.Dataset(data_vars, coords=coords, attrs=attrs)
    for name in VARIABLES:  # bitwise the GRIB values
        ref = src[name].isel(latitude=slice(0, N_LAT)).transpose(*dims).values
        if not np.array_equal(out[name].values, ref):
            raise SystemExit(f"{name}: the values changed on the way: not written")
    return out


def write(ds: xr.Dataset, output: Path) -> None:
    """Compressed NetCDF-4, atomically; no _FillValue on coordinates; time in int32 hours."""
    enc: dict[str, dict] = {v: {"zlib": True, "complevel": 9, "shuffle": True} for v in VARIABLES}
    enc.update({c: {"_FillValue": None} for c in ("latitude", "longitude", "isobaricInhPa")})
    enc["time"] = {"dtype": "int32", "units": "hours since 2017-01-01 00:00:00",
                   "calendar": "proleptic_gregorian"}
    with atomic_output(output, overwrite=True, what="sample file") as tmp:
        ds.to_netcdf(tmp, encoding=enc, engine="netcdf4")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cfgrib_sdist", type=Path, help="unpacked cfgrib source distribution")
    parser.add_argument("--output", type=Path, default=OUT)
    args = parser.parse_args(argv)
    grib = args.cfgrib_sdist / GRIB
    if not grib.is_file():
        parser.error(f"{grib} not found: unpack the cfgrib {SDIST_VERSION} sdist and give its "
                     "folder")
    ds = build(read(grib), grib)
    write(ds, args.output)
    with xr.open_dataset(args.output) as back:  # read back: same values and times
        for name in VARIABLES:
            if not np.array_equal(back[name].values, ds[name].values):
                raise SystemExit(f"{args.output}: {name} differs after the round trip")
        if not np.array_equal(back["time"].values, ds["time"].values):
            raise SystemExit(f"{args.output}: the times differ after the round trip")
    size = args.output.stat().st_size / 1e6
    print(f"wrote {args.output} ({size:.2f} MB): {dict(ds.sizes)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
