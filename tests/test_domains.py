"""Models that move between domains: static fields on a larger domain than the targets are cut
by coordinates to the domain trained on or downscaled, so a model trained on one sub-domain
downscales another inside the static domain; outside it, one line; the lat/lon features
follow the domain."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr

from weather_sr.cli import main
from weather_sr.config import load_config
from weather_sr.data import gaussian_random_field
from weather_sr.errors import UserError
from weather_sr.model.loading import load_model
from weather_sr.training.loop import train

pytestmark = pytest.mark.usefixtures("one_thread")

NY, NX, NT = 32, 64, 40  # the static domain; the targets of training are its west half
LAT = np.linspace(30.0, 45.5, NY)
LON = np.linspace(0.0, 31.5, NX)
TIMES = np.datetime64("2021-01-01T00") + np.arange(NT) * np.timedelta64(3, "h")
WEST, EAST = slice(0, 32), slice(32, 64)


def _write(path: Path, values: dict[str, np.ndarray], lon: slice, times: bool = True) -> Path:
    dims = ("time", "lat", "lon") if times else ("lat", "lon")
    coords = {"lat": ("lat", LAT, {"units": "degrees_north"}),
              "lon": ("lon", LON[lon], {"units": "degrees_east"})}
    if times:
        coords["time"] = TIMES
    units = {"t2m": "K", "orog": "m"}
    xr.Dataset({k: (dims, v[..., lon].astype(np.float32), {"units": units[k]})
                for k, v in values.items()}, coords=coords).to_netcdf(path)
    return path


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """t2m = weather - 6.5 K/km x orography, whose fine scales only the static field carries:
    HR files of the west and east halves, the orography over both."""
    root = tmp_path_factory.mktemp("domains")
    g = torch.Generator().manual_seed(7)
    orog = 1000.0 + 600.0 * gaussian_random_field(1, NY, NX, slope=-1.0, generator=g)[0].numpy()
    weather = 3.0 * gaussian_random_field(NT, NY, NX, slope=-7.0,
                                          generator=torch.Generator().manual_seed(1)).numpy()
    t2m = 285.0 + weather - 6.5e-3 * orog[None]
    coarse = xr.Dataset({"t2m": (("time", "lat", "lon"), t2m, {"units": "K"})},
                        coords={"time": TIMES, "lat": LAT, "lon": LON})
    lat, lon = np.arange(29.0, 47.5, 2.0), np.arange(-1.0, 33.5, 2.0)  # ERA5-like, both halves
    coarse = coarse.interp(lat=np.clip(lat, LAT[0], LAT[-1]), lon=np.clip(lon, LON[0], LON[-1]))
    coarse = coarse.assign_coords(lat=lat, lon=lon)  # the edge values beyond the edges
    coarse["t2m"].attrs["units"] = "K"
    coarse.to_netcdf(root / "era5.nc")
    return {"root": root, "era5": root / "era5.nc",
            "west": _write(root / "west.nc", {"t2m": t2m}, WEST),
            "east": _write(root / "east.nc", {"t2m": t2m}, EAST),
            "static": _write(root / "static.nc", {"orog": orog}, slice(None), times=False)}


def _train(world: dict[str, Path], static: bool, *extra: str, name: str | None = None,
           steps: int = 300) -> Path:
    name = name or ("with" if static else "without")
    overrides = [
        f"data.path={world['west']}", "data.variables=[t2m]", "data.scale_factor=4",
        "data.patch_size=16", "data.split=[0.9, 0.0, 0.1]", "model.kind=regression",
        "model.base_channels=16", "model.channel_mults=[1, 2]", "model.num_res_blocks=1",
        "model.head_channels=16", "model.mid_attention=false", "training.batch_size=8",
        f"training.steps={steps}", "training.lr=2e-3", "training.warmup_steps=20",
        "training.ema_decay=0.9", "training.val_every=1000", "training.checkpoint_every=1000",
        "training.precision=fp32", "output.tensorboard=false", "data.features=[lat, lon]",
        *([f"data.static={{path: {world['static']}, variables: [orog]}}"] if static else []),
        *extra,
    ]
    run = world["root"] / name
    train(load_config(None, overrides), run, progress=False)
    return sorted((run / "checkpoints").glob("step_*.pt"))[-1]


@pytest.fixture(scope="module")
def models(world: dict[str, Path]) -> dict[str, Path]:
    return {"with": _train(world, True), "without": _train(world, False)}


def _east_rmse(world: dict[str, Path], ckpt: Path, out: Path) -> float:
    assert main(["downscale", "--checkpoint", str(ckpt), "--input", str(world["east"]),
                 "--coarsen", "--output", str(out), "--device", "cpu", "--no-progress"]) == 0
    with xr.open_dataset(out) as ds, xr.open_dataset(world["east"]) as truth:
        np.testing.assert_array_equal(ds["lon"].values, LON[EAST])
        return float(np.sqrt(((ds["t2m"].values - truth["t2m"].values) ** 2).mean()))


def test_a_model_trained_on_one_sub_domain_downscales_another(
        world: dict[str, Path], models: dict[str, Path], tmp_path: Path) -> None:
    """Trained on the west half, the model reads the east half's orography from the static
    domain stored in its checkpoint: the lapse-rate detail it adds there beats the same model
    trained without orography."""
    spec = load_model(models["with"]).meta.condition_spec()
    assert spec.static_values.shape == (1, NY, NX)  # the whole static domain travels
    with xr.open_dataset(world["static"]) as st:
        east = spec.on_grid(LAT, LON[EAST], "test").static_values
        np.testing.assert_array_equal(east[0], st["orog"].values[:, EAST].astype(np.float32))
    with_static = _east_rmse(world, models["with"], tmp_path / "with.nc")
    without = _east_rmse(world, models["without"], tmp_path / "without.nc")
    print(f"east RMSE: with the orography {with_static:.3f} K, without {without:.3f} K")
    assert with_static < 0.6 * without, (with_static, without)


def test_outside_the_static_domain_is_one_line(world: dict[str, Path], models: dict[str, Path],
                                               tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    with xr.open_dataset(world["east"]) as ds:
        shifted = ds.assign_coords(lon=ds["lon"] + 8.0)  # half of it beyond 31.5°E
        shifted.to_netcdf(tmp_path / "beyond.nc")
    out = tmp_path / "o.nc"
    assert main(["downscale", "--checkpoint", str(models["with"]), "--input",
                 str(tmp_path / "beyond.nc"), "--coarsen", "--output", str(out),
                 "--device", "cpu", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "static" in err and "0..31.5" in err, err
    assert not out.exists()


def test_on_grid_cuts_by_coordinates_and_refuses_other_points() -> None:
    spec = _spec()
    cut = spec.on_grid(LAT[4:12], LON[10:30], "here")
    np.testing.assert_array_equal(cut.static_values, spec.static_values[:, 4:12, 10:30])
    assert spec.on_grid(LAT, LON, "here") is spec
    with pytest.raises(UserError, match=r"here: .*not on the grid of the static fields"):
        spec.on_grid(LAT[4:12] + 0.1, LON[10:30], "here")  # between the static points
    with pytest.raises(UserError, match=r"here: .*beyond the static fields' domain"):
        spec.on_grid(LAT, LON + 20.0, "here")


def _spec():
    from weather_sr.data.condition import ConditionSpec
    from weather_sr.data.normalise import Normalizer

    norm = Normalizer("channel", ["t2m"], np.zeros((1, 1, 1)), np.ones((1, 1, 1)))
    values = np.arange(NY * NX, dtype=np.float32).reshape(1, NY, NX)
    return ConditionSpec(["t2m"], ["t2m"], norm, static_names=["orog"], static_values=values,
                         static_mean=np.zeros(1), static_std=np.ones(1),
                         static_y=LAT, static_x=LON)


def test_domain_moves_a_model_with_predictors_on_their_own_grid(
        world: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Predictors regridded from their own grid: ``--domain`` downscales the east half of the
    static domain (mean mode) exactly as the condition built by hand there: the predictors
    regridded onto the east grid, the east orography and the east latitude/longitude
    features."""
    from weather_sr.data import open_fields, prepare_condition
    from weather_sr.data.regrid import regrid_to

    ckpt = _train(world, True, f"data.inputs={{path: {world['era5']}, variables: [t2m]}}",
                  name="regrid", steps=2)
    out = tmp_path / "east.nc"
    east = ["--domain", f"30,45.5,{LON[EAST][0]},{LON[EAST][-1]}"]
    assert main(["downscale", "--checkpoint", str(ckpt), "--input", str(world["era5"]),
                 "--output", str(out), *east, "--device", "cpu", "--no-progress"]) == 0
    model = load_model(ckpt)
    meta = model.meta
    inputs = regrid_to(open_fields(world["era5"], ["t2m"], load=True), LAT, LON[EAST],
                       "bilinear", False, "reference").values
    spec = meta.condition_spec().on_grid(LAT, LON[EAST], "reference")
    cond = prepare_condition(torch.from_numpy(inputs).float(), spec, 4, lat=LAT, lon=LON[EAST],
                             times=TIMES)
    with torch.no_grad():
        want = meta.make_normalizer().denormalise(model.predict(cond).double()).numpy()
    with xr.open_dataset(out) as ds:
        np.testing.assert_array_equal(ds["lon"].values, LON[EAST])
        np.testing.assert_allclose(ds["t2m"].values, want[:, 0], rtol=1e-5, atol=1e-4)
    # beyond the static domain, or a model whose output grid is its input's: one line each
    assert main(["downscale", "--checkpoint", str(ckpt), "--input", str(world["era5"]),
                 "--output", str(tmp_path / "x.nc"), "--domain", "30,45.5,40,50",
                 "--device", "cpu", "--no-progress"]) == 2
    assert "--domain 30,45.5,40,50 holds 32x0 points" in capsys.readouterr().err
    assert main(["downscale", "--checkpoint", str(_train(world, False, name="own", steps=1)),
                 "--input", str(world["east"]), "--coarsen", "--output", str(tmp_path / "y.nc"),
                 *east, "--device", "cpu", "--no-progress"]) == 2
    assert "--domain: this model's output grid is its input's" in capsys.readouterr().err
    assert not (tmp_path / "x.nc").exists() and not (tmp_path / "y.nc").exists()


def test_domain_grid_of_a_projected_training_grid() -> None:
    """``--domain`` on a projected grid: the points within the bounds, their latitude/longitude
    from the grid mapping (pyproj) when there is one, else cut from the training grid's own
    (inside it only: beyond, one line)."""
    import pyproj

    from weather_sr.data.grid import Grid
    from weather_sr.inference.domain import domain_grid

    mapping = {"grid_mapping_name": "lambert_conformal_conic", "standard_parallel": [35.0, 65.0],
               "longitude_of_central_meridian": 10.0, "latitude_of_projection_origin": 50.0}
    y, x = np.arange(-4e5, 4e5, 5e4), np.arange(-6e5, 6e5, 5e4)
    crs = pyproj.CRS.from_cf(mapping)
    to_geo = pyproj.Transformer.from_crs(crs, crs.source_crs, always_xy=True)
    lon, lat = to_geo.transform(*np.meshgrid(x, y))
    metres = {"units": "m"}
    trained = Grid(y, x, "y", "x", metres, metres, False,
                   {"lat": (lat, {"units": "degrees_north"}), "lon": (lon, {})},
                   {"name": "crs", "attrs": mapping})
    spec = _spec()  # its static fields lie on another grid: take the training grid's points
    spec.static_names = []
    got = domain_grid(trained, spec, (0.0, 2e5, -1e5, 1e5), "here")
    np.testing.assert_array_equal(got.lat, y[(y >= 0) & (y <= 2e5)])
    np.testing.assert_array_equal(got.lon, x[(x >= -1e5) & (x <= 1e5)])
    glon, glat = to_geo.transform(*np.meshgrid(got.lon, got.lat))
    np.testing.assert_allclose(got.aux["lat"][0], glat, atol=1e-9)
    np.testing.assert_allclose(got.aux["lon"][0], glon, atol=1e-9)
    assert got.aux["lat"][1]["units"] == "degrees_north" and got.mapping == trained.mapping
    unmapped = Grid(y, x, "y", "x", metres, metres, False, trained.aux)
    cut = domain_grid(unmapped, spec, (0.0, 2e5, -1e5, 1e5), "here")
    np.testing.assert_array_equal(cut.aux["lat"][0], glat)
    with pytest.raises(UserError, match=r"--domain 0,2e\+06,0,1 holds 8x1 points"):
        domain_grid(unmapped, spec, (0.0, 2e6, 0.0, 1.0), "here")
    spec.static_names = ["orog"]  # a static domain reaching north of the training grid
    spec.static_y, spec.static_x = np.arange(-4e5, 8e5, 5e4), x
    spec.static_values = np.zeros((1, spec.static_y.size, x.size), np.float32)
    north = domain_grid(trained, spec, (5e5, 7e5, -1e5, 1e5), "here")  # the mapping's
    glon, glat = to_geo.transform(*np.meshgrid(north.lon, north.lat))
    np.testing.assert_allclose(north.aux["lat"][0], glat, atol=1e-9)
    with pytest.raises(UserError, match="here: --domain reaches beyond the training grid"):
        domain_grid(unmapped, spec, (5e5, 7e5, -1e5, 1e5), "here")
