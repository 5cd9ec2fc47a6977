"""Reading: formats, dim recognition, levels/members, ordering, and the one-line UserErrors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr

from weather_sr.data import (
    build_datasets,
    classify_dims,
    open_fields,
    synthetic_dataset,
    write_netcdf,
    write_zarr,
)
from weather_sr.errors import UserError


def _ds(n_time: int = 8, ny: int = 16, nx: int = 24, seed: int = 0) -> xr.Dataset:
    return synthetic_dataset(n_time, ny, nx, variables=("t2m", "z"), seed=seed)


def _batch(bundle) -> dict[str, torch.Tensor]:
    items = [bundle.val[i] for i in range(len(bundle.val))]
    return {k: torch.stack([it[k] for it in items]) for k in ("hr", "cond", "mask")}


def test_netcdf_and_zarr_give_identical_batches(tmp_path: Path) -> None:
    ds = _ds(n_time=10)
    nc = write_netcdf(ds, tmp_path / "a.nc")
    zr = write_zarr(ds, tmp_path / "a.zarr")
    kw = dict(scale_factor=4, split=(0.6, 0.2, 0.2))
    b_nc = build_datasets(nc, ["t2m", "z"], **kw)
    b_zr = build_datasets(zr, ["t2m", "z"], load=False, **kw)
    for key, value in _batch(b_nc).items():
        assert torch.equal(value, _batch(b_zr)[key]), key
    assert b_nc.normalizer.to_dict() == b_zr.normalizer.to_dict()


def test_list_and_glob_of_files_equal_one_file(tmp_path: Path) -> None:
    ds = _ds(n_time=6)
    write_netcdf(ds, tmp_path / "all.nc")
    write_netcdf(ds.isel(time=slice(0, 3)), tmp_path / "part_1.nc")
    write_netcdf(ds.isel(time=slice(3, 6)), tmp_path / "part_2.nc")
    one = open_fields(tmp_path / "all.nc", ["t2m"], load=True)
    many = open_fields(str(tmp_path / "part_*.nc"), ["t2m"], load=True)
    listed = open_fields([tmp_path / "part_1.nc", tmp_path / "part_2.nc"], ["t2m"], load=True)
    np.testing.assert_array_equal(one.values, many.values)
    np.testing.assert_array_equal(one["time"].values, listed["time"].values)


def test_channels_coords_units_survive(tmp_path: Path) -> None:
    ds = _ds(n_time=4, ny=12, nx=36)
    ds["z"].attrs["units"] = "m**2 s**-2"
    da = open_fields(write_netcdf(ds, tmp_path / "a.nc"), ["z", "t2m"], load=True)
    assert da.dims == ("sample", "channel", "y", "x")
    assert list(da["channel"].values) == ["z", "t2m"]  # order as selected
    assert da.attrs["units"] == ["m**2 s**-2", "K"]
    np.testing.assert_array_equal(da["time"].values, ds["time"].values)
    np.testing.assert_allclose(da["y"].values, ds["lat"].values)
    assert da["y"].attrs["units"] == "degrees_north"
    assert da.attrs["lat_name"] == "lat" and da.attrs["periodic"] is True
    np.testing.assert_array_equal(da.values[:, 0], ds["z"].values)


def test_latitude_made_increasing_and_periodicity(tmp_path: Path) -> None:
    ds = _ds(n_time=2).isel(lat=slice(None, None, -1))
    ds = ds.rename(lat="latitude", lon="longitude")
    ds = ds.assign_coords(longitude=np.linspace(0, 180, ds.sizes["longitude"]))  # regional
    da = open_fields(write_netcdf(ds, tmp_path / "a.nc"), ["t2m"], load=True)
    assert np.all(np.diff(da["y"].values) > 0)
    np.testing.assert_array_equal(da.values[:, 0], ds["t2m"].values[:, ::-1])
    assert da.attrs["periodic"] is False and da.attrs["lat_name"] == "latitude"


def test_levels_become_channels_members_become_samples(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    v = rng.normal(size=(3, 2, 2, 8, 8)).astype(np.float32)  # time, number, level, lat, lon
    ds = xr.Dataset(
        {"t": (("time", "number", "isobaricInhPa", "latitude", "longitude"), v, {"units": "K"})},
        coords={
            "time": np.arange(3) * np.timedelta64(6, "h") + np.datetime64("2017-01-01"),
            "number": [0, 1],
            "isobaricInhPa": [850.0, 500.0],
            "latitude": np.arange(8.0),
            "longitude": np.arange(8.0),
        },
    )
    da = open_fields(write_netcdf(ds, tmp_path / "a.nc"), ["t"], load=True)
    assert list(da["channel"].values) == ["t_500", "t_850"]  # levels increasing
    assert da.sizes["sample"] == 6 and list(da["member"].values) == [0, 1] * 3
    assert da.attrs["units"] == ["K", "K"]
    np.testing.assert_array_equal(da.values[3, 0], v[1, 1, 1])  # time 1, member 1, 500 hPa
    np.testing.assert_array_equal(da["time"].values[2:4], [ds["time"].values[1]] * 2)


def test_cf_attributes_recognise_oddly_named_dims() -> None:
    da = xr.DataArray(np.zeros((2, 3, 4)), dims=("tt", "jj", "ii"))
    da = da.assign_coords(
        tt=("tt", [0, 1], {"axis": "T"}),
        jj=("jj", [0.0, 1, 2], {"standard_name": "latitude"}),
        ii=("ii", [0.0, 1, 2, 3], {"standard_name": "longitude"}),
    )
    assert classify_dims(da, "x") == {"time": "tt", "lat": "jj", "lon": "ii"}


def test_grib_through_cfgrib(tmp_path: Path) -> None:
    eccodes = pytest.importorskip("eccodes")
    pytest.importorskip("cfgrib")
    rng = np.random.default_rng(1)
    values = 280 + rng.normal(size=(3, 4, 8)).round(2)
    path = tmp_path / "t.grib"
    with open(path, "wb") as fh:
        for i, field in enumerate(values):
            h = eccodes.codes_grib_new_from_samples("regular_ll_sfc_grib2")
            for key, val in dict(
                Ni=8,
                Nj=4,
                iDirectionIncrementInDegrees=1.0,
                jDirectionIncrementInDegrees=1.0,
                latitudeOfFirstGridPointInDegrees=3.0,
                latitudeOfLastGridPointInDegrees=0.0,
                longitudeOfFirstGridPointInDegrees=0.0,
                longitudeOfLastGridPointInDegrees=7.0,
                dataTime=600 * i,
                shortName="2t",
                bitsPerValue=24,
            ).items():
                eccodes.codes_set(h, key, val)
            eccodes.codes_set_values(h, field.ravel())
            eccodes.codes_write(h, fh)
            eccodes.codes_release(h)
    da = open_fields(path, ["t2m"], load=True)
    assert da.shape == (3, 1, 4, 8) and list(da["channel"].values) == ["t2m"]
    np.testing.assert_allclose(da.values[:, 0], values[:, ::-1], atol=1e-3)  # N->S becomes S->N
    assert not list(tmp_path.glob("*.idx"))  # no index files written beside the data


def _err(tmp_path: Path, path, variables, match: str) -> str:
    with pytest.raises(UserError, match=match) as info:
        open_fields(path, variables, load=True)
    msg = str(info.value)
    assert "\n" not in msg
    return msg


def test_user_errors(tmp_path: Path) -> None:
    nc = write_netcdf(_ds(n_time=2), tmp_path / "a.nc")
    msg = _err(tmp_path, nc, ["nope"], "variable 'nope' not found")
    assert "t2m" in msg and "z" in msg and "a.nc" in msg
    _err(tmp_path, tmp_path / "missing.nc", ["t2m"], "missing.nc not found")
    _err(tmp_path, str(tmp_path / "none_*.nc"), ["t2m"], "matches no file")
    text = tmp_path / "notes.nc"
    text.write_text("this is not a netcdf file\n")
    _err(tmp_path, text, ["t2m"], "not a readable NetCDF, Zarr or GRIB")
    bad = xr.Dataset({"v": (("time", "band", "lat", "lon"), np.zeros((2, 3, 4, 4)))})
    msg = _err(tmp_path, write_netcdf(bad, tmp_path / "b.nc"), ["v"], "unrecognised dims band")
    assert "latitude" in msg  # says which names are recognised


def test_all_nan_and_inf_fields_are_errors(tmp_path: Path) -> None:
    ds = _ds(n_time=4)
    ds["z"][:] = np.nan
    _err(tmp_path, write_netcdf(ds, tmp_path / "nan.nc"), ["t2m", "z"], "z is entirely missing")
    with pytest.raises(UserError, match="z is entirely missing"):  # lazy path: in the stats pass
        build_datasets(tmp_path / "nan.nc", ["t2m", "z"], scale_factor=2, load=False)
    ds = _ds(n_time=4)
    ds["t2m"][1, 2, 3] = np.inf
    _err(tmp_path, write_netcdf(ds, tmp_path / "inf.nc"), ["t2m"], "t2m contains Inf")
    with pytest.raises(UserError, match="t2m contains Inf"):
        build_datasets(tmp_path / "inf.nc", ["t2m"], scale_factor=2, load=False)


def test_opening_a_file_reads_none_of_its_values(tmp_path: Path) -> None:
    """``open_fields`` stays lazy on one NetCDF file (it once read the whole variable to ask
    whether it was a dask array): opening a 12.5 MiB variable allocates a small part of it
    (the task graph, coordinates)."""
    import tracemalloc

    values = np.zeros((200, 128, 128), np.float32)
    xr.Dataset({"t2m": (("time", "lat", "lon"), values, {"units": "K"})},
               coords={"time": np.arange(200), "lat": np.linspace(-10, 10, 128),
                       "lon": np.linspace(0, 20, 128)}).to_netcdf(tmp_path / "big.nc")
    tracemalloc.start()
    da = open_fields(tmp_path / "big.nc", ["t2m"])
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert da.chunks is not None and peak < values.nbytes / 8, peak
