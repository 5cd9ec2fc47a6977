"""Regional grids: latitude/longitude predictors regridded onto projected and rotated-pole HR
grids (against a pyproj + scipy reference), end to end on the shipped polar-stereographic
sample, and lazy predictors read window by window."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyproj
import pytest
import xarray as xr
from scipy.interpolate import RegularGridInterpolator

from weather_sr.cli import main
from weather_sr.config import load_config
from weather_sr.data import build_datasets, grid_of, open_fields
from weather_sr.data import source as source_module
from weather_sr.data.projection import latlon_of_mapping
from weather_sr.data.regrid import regrid_to, target_points
from weather_sr.data.sample import sample_data_path
from weather_sr.errors import UserError
from weather_sr.evaluation.evalset import load_split, model_prediction
from weather_sr.evaluation.pipeline import bundle_for
from weather_sr.inference.ensemble import SamplingOptions
from weather_sr.model.loading import load_model

pytestmark = pytest.mark.usefixtures("one_thread")

ROTATED = {"grid_mapping_name": "rotated_latitude_longitude", "grid_north_pole_latitude": 39.25,
           "grid_north_pole_longitude": -162.0}  # EURO-CORDEX
LAMBERT = {"grid_mapping_name": "lambert_conformal_conic", "standard_parallel": [35.0, 65.0],
           "longitude_of_central_meridian": 10.0, "latitude_of_projection_origin": 50.0,
           "earth_radius": 6371229.0}
AXES = {  # (y, x, axis attributes) of a grid in each mapping, over Europe
    "rotated": (np.arange(-20.0, 20.0, 0.88), np.arange(-25.0, 16.0, 0.88),
                {"units": "degrees", "standard_name": "grid_latitude"},
                {"units": "degrees", "standard_name": "grid_longitude"}),
    "lambert": (np.arange(-1.5e6, 1.5e6, 5e4), np.arange(-1.8e6, 1.8e6, 5e4),
                {"units": "m", "standard_name": "projection_y_coordinate"},
                {"units": "m", "standard_name": "projection_x_coordinate"}),
}


def _base(crs: pyproj.CRS) -> pyproj.CRS:
    """The geographic CRS a projected or rotated-pole CRS is defined on."""
    return crs.source_crs or crs.geodetic_crs


def _latlon_field(lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    """A smooth field of latitude/longitude with several wavelengths."""
    la, lo = np.radians(lat)[:, None], np.radians(lon)[None, :]
    return (280 + 10 * np.sin(3 * lo) * np.cos(2 * la) + 4 * np.cos(7 * lo + 5 * la)
            + 0.2 * np.degrees(la))


def _write_target(path: Path, kind: str, with_latlon: bool) -> Path:
    y, x, ya, xa = AXES[kind]
    mapping = ROTATED if kind == "rotated" else LAMBERT
    ds = xr.Dataset(
        {"t2m": (("time", "y", "x"), np.zeros((2, y.size, x.size), np.float32),
                 {"units": "K", "grid_mapping": "crs"}),
         "crs": ((), np.int32(0), mapping)},
        coords={"time": np.array(["2020-01-01", "2020-01-02"], "datetime64[ns]"),
                "y": ("y", y, ya), "x": ("x", x, xa)})
    if with_latlon:  # CF's auxiliary coordinates, from pyproj directly
        crs = pyproj.CRS.from_cf(mapping)
        lon, lat = pyproj.Transformer.from_crs(crs, _base(crs), always_xy=True).transform(
            *np.meshgrid(x, y))
        ds = ds.assign_coords(lat=(("y", "x"), lat, {"standard_name": "latitude",
                                                     "units": "degrees_north"}),
                              lon=(("y", "x"), lon, {"standard_name": "longitude",
                                                     "units": "degrees_east"}))
        ds["t2m"].attrs["coordinates"] = "lat lon"
    ds.to_netcdf(path)
    return path


def _predictors(lat: np.ndarray, lon: np.ndarray, values: np.ndarray) -> xr.DataArray:
    da = xr.DataArray(values[None, None], dims=("sample", "channel", "y", "x"),
                      coords={"channel": ["t2m"],
                              "y": ("y", lat, {"units": "degrees_north"}),
                              "x": ("x", lon, {"units": "degrees_east"})})
    da.attrs.update(lat_name="lat", lon_name="lon", periodic=False)
    return da


@pytest.mark.parametrize("kind", ["rotated", "lambert"])
@pytest.mark.parametrize("with_latlon", [True, False])
def test_onto_rotated_pole_and_lambert_equals_pyproj_and_scipy(kind: str, with_latlon: bool,
                                                               tmp_path: Path) -> None:
    """A target file with 2-D latitude/longitude, or with its grid mapping alone: bilinear to
    1e-6 of the field's range of scipy at pyproj's points; nearest equal."""
    lat, lon = np.arange(20.0, 75.0, 0.5), np.arange(-45.0, 65.0, 0.5)
    values = _latlon_field(lat, lon)
    targets = open_fields(_write_target(tmp_path / "t.nc", kind, with_latlon), ["t2m"])
    grid = grid_of(targets)
    ty, tx = target_points(grid, _predictors(lat, lon, values), "test")
    assert ty.shape == tx.shape == (targets.sizes["y"], targets.sizes["x"])
    y, x, _, _ = AXES[kind]
    crs = pyproj.CRS.from_cf(ROTATED if kind == "rotated" else LAMBERT)
    plon, plat = pyproj.Transformer.from_crs(crs, _base(crs), always_xy=True).transform(
        *np.meshgrid(x, y))
    points = np.stack([plat, plon], -1)
    for method, scipy_method, tol in (("bilinear", "linear", 1e-6), ("nearest", "nearest", 0)):
        got = regrid_to(_predictors(lat, lon, values), ty, tx, method, False, "test").values
        want = RegularGridInterpolator((lat, lon), values, method=scipy_method)(points)
        span = float(values.max() - values.min())
        assert np.abs(got[0, 0] - want).max() <= tol * span, method
    # bicubic has no weights for points off the inputs' axes: one line naming the fix
    with pytest.raises(UserError, match=r"bicubic.*bilinear or nearest"):
        regrid_to(_predictors(lat, lon, values), ty, tx, "bicubic", False, "test")


def test_grid_mapping_gives_the_sample_its_latitude_longitude() -> None:
    """pyproj on the sample's grid mapping reproduces its stored 2-D latitude/longitude."""
    with xr.open_dataset(sample_data_path()) as ds:
        lat, lon = latlon_of_mapping({"attrs": dict(ds["polar_stereographic"].attrs)},
                                     ds["y"].values, ds["x"].values, ds["y"].attrs,
                                     ds["x"].attrs, "test")
        np.testing.assert_allclose(lat, ds["latitude"].values, atol=1e-4)
        dlon = (lon - ds["longitude"].values + 180.0) % 360.0 - 180.0
        assert np.abs(dlon).max() < 1e-4


def test_unknown_grid_mapping_is_a_one_line_error() -> None:
    with pytest.raises(UserError, match=r"grid mapping 'bogus'.*latitude/longitude"):
        latlon_of_mapping({"grid_mapping_name": "bogus"}, np.arange(3.0), np.arange(3.0), {},
                          {}, "targets")


# ------------------------------------------------------------------ the shipped sample


LAT, LON = np.arange(-52.0, 0.5, 1.0), np.arange(-21.0, 77.0, 1.0)  # covers the sample


@pytest.fixture(scope="module")
def latlon_inputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sample's pwat and btmp on a regular 1° latitude/longitude grid (ERA5-like
    predictors): the sample interpolated at each point's polar-stereographic x/y (pyproj),
    its edge values beyond its edges."""
    with xr.open_dataset(sample_data_path()) as ds:
        crs = pyproj.CRS.from_cf(dict(ds["polar_stereographic"].attrs))
        x, y = pyproj.Transformer.from_crs(_base(crs), crs, always_xy=True).transform(
            *np.meshgrid(LON, LAT))
        out = {}
        for name in ("pwat", "btmp"):
            yy, xx = ds["y"].values, ds["x"].values
            at = (np.clip(y, yy[0], yy[-1]), np.clip(x, xx[0], xx[-1]))
            rows = [RegularGridInterpolator((yy, xx), f)(at)
                    for f in ds[name].values.astype(np.float64)]
            out[name] = (("time", "lat", "lon"), np.stack(rows).astype(np.float32),
                         {"units": ds[name].attrs["units"]})
        latlon = xr.Dataset(out, coords={
            "time": ds["time"].values, "lat": ("lat", LAT, {"units": "degrees_north"}),
            "lon": ("lon", LON, {"units": "degrees_east"})})
    path = tmp_path_factory.mktemp("regional") / "latlon.nc"
    latlon.to_netcdf(path)
    return path


def _inputs(path: Path) -> dict[str, object]:
    return {"path": str(path), "variables": ["pwat", "btmp"], "regrid": "bilinear"}


@pytest.mark.parametrize("index", [0, 5, 11])
def test_lazy_predictors_read_only_their_windows_and_equal_the_loaded_ones(
        latlon_inputs: Path, index: int, monkeypatch: pytest.MonkeyPatch) -> None:
    options = {"scale_factor": 4, "patch_size": 32, "seed": 3, "inputs": _inputs(latlon_inputs)}
    loaded = build_datasets(sample_data_path(), ["pwat", "btmp"], load=True, **options)
    reads: list[tuple[slice, slice]] = []
    read = source_module._read

    def spy(values, i, ys, xs):
        if isinstance(values, source_module.LazyFields) and "latlon" in str(values.path):
            reads.append((ys, xs))
        return read(values, i, ys, xs)

    monkeypatch.setattr(source_module, "_read", spy)
    lazy = build_datasets(sample_data_path(), ["pwat", "btmp"], load=False, **options)
    assert not reads  # statistics and coverage stream through dask, no window read
    a, b = loaded.train[index], lazy.train[index]
    for key in a:
        np.testing.assert_array_equal(np.asarray(a[key]), np.asarray(b[key]), err_msg=key)
    assert reads, "the lazy path read no predictor window"
    for ys, xs in reads:  # a 32x32 patch reads a few 1° cells, not the 53x98 grid
        assert (ys.stop - ys.start) * (xs.stop - xs.start) < 0.2 * LAT.size * LON.size
    np.testing.assert_array_equal(loaded.train.condition.input_normalizer.mean,
                                  lazy.train.condition.input_normalizer.mean)


def test_latlon_predictors_onto_the_sample_train_downscale_evaluate(
        latlon_inputs: Path, tmp_path: Path) -> None:
    from weather_sr.training.loop import train

    overrides = [
        f"data.path={sample_data_path()}", "data.variables=[pwat, btmp]", "data.scale_factor=4",
        "data.patch_size=32", f"data.inputs={{path: {latlon_inputs}, variables: [pwat, btmp]}}",
        "data.features=[lat, lon]", "model.base_channels=8", "model.channel_mults=[1, 2]",
        "model.num_res_blocks=1", "model.head_channels=8", "diffusion.timesteps=20",
        "training.batch_size=2", "training.steps=2", "training.warmup_steps=1",
        "training.val_every=100", "training.checkpoint_every=100", "training.val_images=0",
        "training.precision=fp32", "output.tensorboard=false",
    ]
    result = train(load_config(None, overrides), tmp_path / "run", progress=False)
    ckpt = Path(result.checkpoint)
    model = load_model(ckpt)
    data = load_split(bundle_for(model, None), "test")
    expected = model_prediction(model, data, SamplingOptions(members=2, steps=2, seed=1,
                                                             precision="float32"))
    with xr.open_dataset(latlon_inputs) as ds:
        ds.sel(time=data.time_values).to_netcdf(tmp_path / "test_inputs.nc")
    out = tmp_path / "out.nc"
    assert main(["downscale", "--checkpoint", str(ckpt), "--input",
                 str(tmp_path / "test_inputs.nc"), "--output", str(out), "--members", "2",
                 "--steps", "2", "--seed", "1", "--precision", "float32", "--device", "cpu",
                 "--no-progress"]) == 0
    with xr.open_dataset(out) as ds, xr.open_dataset(sample_data_path()) as sample:
        assert ds["pwat"].dims == ("time", "member", "y", "x") and ds.sizes["y"] == 128
        # downscale regrids the file as training and evaluate did: the same samples
        np.testing.assert_allclose(ds["pwat"].values, expected[:, :, 0], rtol=1e-4, atol=1e-3)
        mapping = ds["pwat"].attrs["grid_mapping"]
        assert dict(ds[mapping].attrs) == dict(sample["polar_stereographic"].attrs)
        # the grid mapping round-trips through pyproj to the stored latitude/longitude
        lat, lon = latlon_of_mapping({"attrs": dict(ds[mapping].attrs)}, ds["y"].values,
                                     ds["x"].values, ds["y"].attrs, ds["x"].attrs, "test")
        np.testing.assert_allclose(lat, ds["latitude"].values, atol=1e-4)
        assert np.abs((lon - ds["longitude"].values + 180) % 360 - 180).max() < 1e-4
    assert main(["evaluate", "--checkpoint", str(ckpt), "--out", str(tmp_path / "ev"),
                 "--members", "2", "--steps", "2", "--device", "cpu"]) == 0
    assert "bilinear" in (tmp_path / "ev" / "report.md").read_text()


def test_regrid_per_variable(latlon_inputs: Path) -> None:
    """``regrid: {btmp: nearest}``: btmp nearest, pwat bilinear (the default), window by window
    as each method onto the whole grid; the choice travels in the condition's checkpoint entry;
    an unknown method or variable is one line."""
    from weather_sr.data.condition import ConditionSpec

    inputs = {**_inputs(latlon_inputs), "regrid": {"btmp": "nearest"}}
    bundle = build_datasets(sample_data_path(), ["pwat", "btmp"], scale_factor=4, patch_size=32,
                            load=False, inputs=inputs)
    spec = bundle.train.condition
    assert ConditionSpec.from_dict(spec.to_dict()).regrid == {"btmp": "nearest"}
    da = open_fields(latlon_inputs, ["pwat", "btmp"], load=True)
    ty, tx = target_points(grid_of(open_fields(sample_data_path(), ["pwat"])), da, "test")
    for c, method in enumerate(("bilinear", "nearest")):
        whole = regrid_to(da.isel(channel=[c]), ty, tx, method, False, "test").values
        window = bundle.train.inputs.window(3, slice(40, 72), slice(8, 40))
        np.testing.assert_array_equal(window[c], whole[bundle.train.inputs.samples[3], 0,
                                                       40:72, 8:40].astype(np.float32))
    with pytest.raises(UserError, match=r"data.inputs.regrid.btmp = 'cubic' is not one of"):
        load_config("sample", [f"data.inputs={{path: {latlon_inputs}, variables: [pwat, btmp], "
                               "regrid: {btmp: cubic}}"])
    for bad, words in (({"btmp": "cubic"}, "data.inputs.regrid.btmp"),
                       ({"tp": "nearest"}, "tp is not among the predictors")):
        with pytest.raises(UserError, match=words):
            build_datasets(sample_data_path(), ["pwat", "btmp"], scale_factor=4,
                           inputs={**_inputs(latlon_inputs), "regrid": bad})
