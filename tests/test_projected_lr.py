"""Downscaling an LR file on a projected grid (issue 21, case 13).

A model trained on the shipped sample (polar stereographic y/x with 2-D latitude/longitude) that
needs latitude/longitude (``data.features`` lat/lon, or static fields on its training grid)
downscales the sample's own LR file: on the training grid's LR grid the output's 2-D
latitude/longitude are the checkpoint's, elsewhere the LR file's interpolated onto the HR grid.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr
from safety_helpers import TINY

from weather_sr.cli import main
from weather_sr.config import load_config
from weather_sr.data import coarsen, sample_data_path
from weather_sr.data.pairs import block_centres
from weather_sr.inference.prepare import lr_to_hr_linear, lr_to_hr_lon
from weather_sr.training.loop import train

torch.set_num_threads(1)

S = 4  # the models' scale factor
VARIABLES = ("pwat", "btmp")
FAST = ["--members", "2", "--steps", "2", "--device", "cpu", "--no-progress", "--seed", "3"]
HR_WINDOW = {"y": slice(8, 72), "x": slice(16, 112)}  # not the training grid: LR rows 2..17
LR_WINDOW = {"y": slice(2, 18), "x": slice(4, 28)}


def _wrapped(lon: np.ndarray, ref: float = 28.0) -> np.ndarray:
    """Longitude relative to ``ref`` in [-180, 180): the sample crosses 0/360 degrees."""
    return (lon - ref + 180.0) % 360.0 - 180.0


def _lr(hr: xr.Dataset, latlon: bool) -> xr.Dataset:
    """The sample's own LR file: S x S block means of the HR fields on projected y/x, time kept;
    ``latlon``: with the block means of the 2-D latitude/longitude (longitude averaged across
    the 0/360 jump) as 2-D coordinates. The package's coarsen (float64 inside, as --coarsen
    does) makes the LR values those of --coarsen bit for bit: xarray's float32 mean differs
    from them by one float32 ulp in about a quarter of the cells, which changes the samples."""
    coords: dict[str, xr.DataArray] = {
        "time": hr["time"],
        "y": xr.DataArray(block_centres(hr["y"].values, S), dims="y", attrs=hr["y"].attrs),
        "x": xr.DataArray(block_centres(hr["x"].values, S), dims="x", attrs=hr["x"].attrs)}
    if latlon:
        H, W = hr["latitude"].shape

        def mean(v: np.ndarray) -> np.ndarray:
            return v.reshape(H // S, S, W // S, S).mean(axis=(1, 3))

        lon = (mean(_wrapped(hr["longitude"].values)) + 28.0) % 360.0
        coords["latitude"] = xr.DataArray(mean(hr["latitude"].values), dims=("y", "x"),
                                          attrs=hr["latitude"].attrs)
        coords["longitude"] = xr.DataArray(lon, dims=("y", "x"), attrs=hr["longitude"].attrs)
    out = {v: xr.DataArray(coarsen(torch.from_numpy(hr[v].values), S).numpy(),
                           dims=("time", "y", "x"), attrs=hr[v].attrs) for v in VARIABLES}
    return xr.Dataset({**out, "polar_stereographic": hr["polar_stereographic"]}, coords=coords)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two times of the sample (HR), its LR file with and without 2-D latitude/longitude (whole
    and a window), a static orography on its grid, and two tiny diffusion models (2 steps):
    one with the features lat, lon, doy, hour, one with the static field."""
    root = tmp_path_factory.mktemp("projected")
    with xr.open_dataset(sample_data_path()) as ds:
        hr = ds.isel(time=slice(0, 2)).load()
    hr.to_netcdf(root / "hr.nc")
    hr.isel(HR_WINDOW).to_netcdf(root / "hr_window.nc")
    for latlon, name in ((True, "lr_latlon"), (False, "lr_plain")):
        lr = _lr(hr, latlon)
        lr.to_netcdf(root / f"{name}.nc")
        lr.isel(LR_WINDOW).to_netcdf(root / f"{name}_window.nc")
    lat, lon = np.radians(hr["latitude"].values), np.radians(hr["longitude"].values)
    orog = 1000.0 + 500.0 * np.sin(5.0 * lat) * np.cos(3.0 * lon)  # smooth synthetic terrain
    xr.Dataset({"orog": (("y", "x"), orog.astype(np.float32), {"units": "m"})},
               coords={"y": hr["y"], "x": hr["x"]}).to_netcdf(root / "static.nc")
    base = [f"data.path={sample_data_path()}", *TINY, f"data.scale_factor={S}"]
    feat = train(load_config(None, [*base, "data.features=[lat, lon, doy, hour]"]),
                 root / "features", progress=False)
    static = train(load_config(None, [*base, f"data.static={{path: {root / 'static.nc'}, "
                                             "variables: [orog]}"]),
                   root / "static", progress=False)
    return {"root": root, "hr": root / "hr.nc", "features": Path(feat.checkpoint),
            "static": Path(static.checkpoint)}


def _downscale(checkpoint: Path, path: Path, out: Path, *extra: str) -> xr.Dataset:
    """``weather-sr downscale`` in this process: exit 0, the output loaded."""
    assert main(["downscale", "--checkpoint", str(checkpoint), "--input", str(path),
                 "--output", str(out), *FAST, *extra]) == 0
    with xr.open_dataset(out) as ds:
        return ds.load()


def _same_as_coarsened(got: xr.Dataset, ref: xr.Dataset, hr: Path) -> None:
    """``got`` (from the LR file) has the values of ``ref`` (--coarsen of the HR file) bit for
    bit, the HR file's 2-D latitude/longitude exactly, its y/x and grid mapping."""
    for v in VARIABLES:
        np.testing.assert_array_equal(got[v].values, ref[v].values)
        assert got[v].attrs["grid_mapping"] == "polar_stereographic"
    with xr.open_dataset(hr) as h:
        for c in ("latitude", "longitude"):
            assert got[c].dims == ("y", "x")
            np.testing.assert_array_equal(got[c].values, h[c].values)
        for c in ("y", "x"):  # LR block centres refined again: equal but for float rounding
            np.testing.assert_allclose(got[c].values, h[c].values, rtol=1e-12, atol=0)
        assert got["polar_stereographic"].attrs == h["polar_stereographic"].attrs


@pytest.mark.parametrize("name", ["lr_latlon", "lr_plain"])
def test_features_model_downscales_an_lr_file_as_the_coarsened_hr_file(
        world: dict[str, Path], name: str) -> None:
    """On the training grid the lat/lon features come from the checkpoint (with or without
    latitude/longitude in the LR file), so the condition, hence every sample, is that of
    ``--coarsen`` of the HR file."""
    root, ck = world["root"], world["features"]
    ref = _downscale(ck, world["hr"], root / f"ref_{name}.nc", "--coarsen")
    got = _downscale(ck, root / f"{name}.nc", root / f"out_{name}.nc")
    assert got["pwat"].shape == (2, 2, 128, 192) and np.isfinite(got["pwat"].values).all()
    _same_as_coarsened(got, ref, world["hr"])


def test_static_model_downscales_an_lr_file_as_the_coarsened_hr_file(
        world: dict[str, Path]) -> None:
    """A static-field model on an LR file without latitude/longitude: the samples of --coarsen,
    and the output carries the training grid's latitude/longitude from the checkpoint."""
    root, ck = world["root"], world["static"]
    ref = _downscale(ck, world["hr"], root / "ref_static.nc", "--coarsen")
    got = _downscale(ck, root / "lr_plain.nc", root / "out_static.nc")
    _same_as_coarsened(got, ref, world["hr"])


def test_off_the_training_grid_latlon_is_interpolated_from_the_lr_file(
        world: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    """A window of the LR grid (not the training grid): the LR file's 2-D latitude/longitude
    interpolated onto the HR grid are within 0.05 degrees of the HR file's (S x S block means
    of a projection's latitude/longitude interpolated back); without them, those of the
    training grid's grid mapping."""
    root, ck = world["root"], world["features"]
    got = _downscale(ck, root / "lr_latlon_window.nc", root / "out_window.nc")
    assert np.isfinite(got["pwat"].values).all()
    with xr.open_dataset(root / "hr_window.nc") as h, \
            xr.open_dataset(root / "lr_latlon_window.nc") as lr:
        np.testing.assert_allclose(got["y"].values, h["y"].values, rtol=1e-12, atol=0)
        np.testing.assert_allclose(got["latitude"].values, h["latitude"].values, atol=0.05)
        lon_error = _wrapped(got["longitude"].values - h["longitude"].values, 0.0)
        assert np.abs(lon_error).max() < 0.05
        assert got["longitude"].min() >= 0.0 and got["longitude"].max() < 360.0
        np.testing.assert_array_equal(got["latitude"].values,
                                      lr_to_hr_linear(lr["latitude"].values, S))
    # without them, the grid mapping the checkpoint keeps gives them (pyproj)
    plain = _downscale(ck, root / "lr_plain_window.nc", root / "out_plain.nc")
    assert np.isfinite(plain["pwat"].values).all()


@pytest.mark.parametrize("s", [2, 3, 4])
def test_lr_to_hr_reproduces_a_linear_field_edges_included(s: int) -> None:
    """HR pixel i lies at LR fractional index (i + 0.5) / s - 0.5: a field linear in the LR
    index is that linear function there, on the outer half-cells (extrapolated) too."""
    h, w = 5, 7
    j, k = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    J, K = np.meshgrid((np.arange(h * s) + 0.5) / s - 0.5, (np.arange(w * s) + 0.5) / s - 0.5,
                       indexing="ij")

    def lat(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return -30.0 + 0.4 * a - 0.15 * b

    got = lr_to_hr_linear(lat(j, k), s)
    assert got.shape == (h * s, w * s)
    np.testing.assert_allclose(got, lat(J, K), rtol=0, atol=1e-12)
    assert got[0, 0] < lat(0, 0) and got[-1, 0] > lat(h - 1, 0)  # extrapolated, not clamped
    for start, lo in ((350.0, 0.0), (170.0, -180.0)):  # crossing 360 -> 0 and 180 -> -180

        def lon(a: np.ndarray, b: np.ndarray, start: float = start, lo: float = lo
                ) -> np.ndarray:
            return (start + 3.0 * b + 0.5 * a - lo) % 360.0 + lo

        out = lr_to_hr_lon(lon(j, k), s)
        assert out.min() >= lo and out.max() < lo + 360.0
        assert np.abs(_wrapped(out - lon(J, K), 0.0)).max() < 1e-9
    np.testing.assert_allclose(lr_to_hr_linear(lat(j, k)[:1], s),  # one LR row: constant in y
                               np.repeat(lat(0.0, K[:1]), s, axis=0), rtol=0, atol=1e-12)
