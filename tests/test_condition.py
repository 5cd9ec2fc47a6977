"""The network condition (issue 13): static fields, predictors other than the targets, features,
transforms, the checkpoint round trip and the bad-input messages.

Tests (a), (b) and (d) train small regression networks and show that a part of the condition
reaches the network: the test RMSE with it is well below the RMSE without it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr

from weather_sr.cli import main
from weather_sr.config import load_config
from weather_sr.data import build_datasets, gaussian_random_field
from weather_sr.data.condition import ConditionSpec
from weather_sr.errors import UserError
from weather_sr.evaluation.evalset import load_split, model_prediction
from weather_sr.evaluation.pipeline import bundle_for
from weather_sr.inference.ensemble import SamplingOptions
from weather_sr.model.loading import load_model
from weather_sr.training.loop import train

torch.set_num_threads(1)

NY = NX = 32
NT = 48
LAT = np.linspace(30.0, 45.5, NY)
LON = np.linspace(0.0, 15.5, NX)
TIMES = np.datetime64("2021-01-01T00") + np.arange(NT) * np.timedelta64(3, "h")


def _grf(n: int, slope: float, seed: int) -> np.ndarray:
    g = torch.Generator().manual_seed(seed)
    return gaussian_random_field(n, NY, NX, slope=slope, generator=g).numpy()


def _write(path: Path, variables: dict[str, np.ndarray], units: dict[str, str],
           times: bool = True) -> Path:
    dims = ("time", "lat", "lon") if times else ("lat", "lon")
    coords = {"lat": ("lat", LAT, {"units": "degrees_north"}),
              "lon": ("lon", LON, {"units": "degrees_east"})}
    if times:
        coords["time"] = TIMES
    ds = xr.Dataset({k: (dims, v.astype(np.float32), {"units": units[k]})
                     for k, v in variables.items()}, coords=coords)
    ds.to_netcdf(path)
    return path


def _orography() -> np.ndarray:
    """Fine-scale terrain (m): most of its variance lies below the 4x LR grid's scale."""
    return 1000.0 + 500.0 * _grf(1, slope=-1.0, seed=7)[0]


def _overrides(path: Path, *extra: str) -> list[str]:
    return [
        f"data.path={path}", "data.scale_factor=4", "data.patch_size=16",
        "data.split=[0.75, 0.0, 0.25]",
        "model.kind=regression", "model.base_channels=16", "model.channel_mults=[1, 2]",
        "model.num_res_blocks=1", "model.head_channels=16", "model.mid_attention=false",
        "training.batch_size=8", "training.steps=400", "training.lr=2e-3",
        "training.warmup_steps=20", "training.ema_decay=0.9", "training.val_every=1000",
        "training.checkpoint_every=1000", "training.log_every=100", "training.precision=fp32",
        "output.tensorboard=false", *extra,
    ]


def _last(run: Path) -> Path:
    """The run's final checkpoint (these runs do not validate)."""
    return sorted((run / "checkpoints").glob("step_*.pt"))[-1]


def _test_rmse(cfg_overrides: list[str], run: Path) -> float:
    cfg = load_config(None, cfg_overrides)
    train(cfg, run, progress=False)
    model = load_model(_last(run))
    data = load_split(bundle_for(model, None), "test")
    pred = model_prediction(model, data, SamplingOptions(members=1, batch_size=8))
    return float(np.sqrt(np.mean((pred - data.truth) ** 2)))


@pytest.fixture(scope="module")
def lapse_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("lapse")
    orog = _orography()
    rng = np.random.default_rng(0)
    t2m = (285.0 + 3.0 * _grf(NT, slope=-7.0, seed=1) - 6.5e-3 * orog[None]
           + 0.1 * rng.standard_normal((NT, NY, NX)))
    hr = _write(folder / "hr.nc", {"t2m": t2m}, {"t2m": "K"})
    lsm = (orog > 1000.0).astype(np.float32)
    static = _write(folder / "static.nc", {"orog": orog, "lsm": lsm}, {"orog": "m", "lsm": "1"},
                    times=False)
    return hr, static


def test_a_lapse_rate_static_orography_reaches_the_network(lapse_files, tmp_path: Path) -> None:
    """(a) T = smooth field - 6.5 K/km x orography: with ``static: orog`` the test RMSE of the
    same regression model falls by more than half."""
    hr, static = lapse_files
    base = _overrides(hr, "data.variables=[t2m]")
    without = _test_rmse(base, tmp_path / "without")
    with_orog = _test_rmse([*base, f"data.static={{path: {static}, variables: [orog]}}"],
                           tmp_path / "with")
    print(f"lapse-rate test RMSE: without orography {without:.4f} K, with {with_orog:.4f} K")
    assert with_orog < 0.5 * without


def test_b_target_from_two_predictors(tmp_path: Path) -> None:
    """(b) A target that is a nonlinear function of two inputs is learned only with both."""
    a = _grf(NT, slope=-7.0, seed=11)  # smooth: the LR inputs hold almost all of a and b
    b = _grf(NT, slope=-7.0, seed=12)
    y = a * b + 0.5 * a**2
    path = _write(tmp_path / "hr.nc", {"a": a, "b": b, "y": y}, {"a": "1", "b": "1", "y": "1"})
    base = _overrides(path, "data.variables=[y]", "diffusion.target=full")
    one = _test_rmse([*base, "data.inputs={variables: [a]}"], tmp_path / "one")
    both = _test_rmse([*base, "data.inputs={variables: [a, b]}"], tmp_path / "both")
    print(f"two-predictor test RMSE: input a only {one:.4f}, a and b {both:.4f}")
    assert both < 0.6 * one


def test_d_hour_feature_learns_a_diurnal_cycle(tmp_path: Path) -> None:
    """(d) A target with a diurnal cycle varying inside the LR cells needs ``features: [hour]``."""
    hours = (TIMES - TIMES.astype("datetime64[D]")).astype("timedelta64[h]").astype(float)
    pattern = np.sin(np.arange(NX) * np.pi / 2)[None, :] * np.ones((NY, 1))  # 4-cell period
    y = 2.0 * np.cos(2 * np.pi * hours / 24)[:, None, None] * pattern[None] + 0.1 * _grf(
        NT, slope=-3.0, seed=5)
    path = _write(tmp_path / "hr.nc", {"y": y}, {"y": "1"})
    base = _overrides(path, "data.variables=[y]")
    plain = _test_rmse(base, tmp_path / "plain")
    hour = _test_rmse([*base, "data.features=[hour]"], tmp_path / "hour")
    print(f"diurnal test RMSE: without the hour feature {plain:.4f}, with it {hour:.4f}")
    assert hour < 0.5 * plain


def test_condition_layout_and_residual_base(lapse_files) -> None:
    """Static fields and features follow the inputs; a same-named input is the residual base."""
    hr, static = lapse_files
    b = build_datasets(hr, ["t2m"], scale_factor=4, patch_size=16,
                       inputs={"path": None, "variables": ["t2m"]},
                       static={"path": str(static), "variables": ["orog", "lsm"]},
                       features=["lat", "hour"])
    spec = b.condition
    assert spec.channels == ["t2m", "orog", "lsm", "sin_lat", "cos_lat", "sin_hour", "cos_hour"]
    assert spec.base_index == [0]
    item = b.test[0]
    assert item["cond"].shape == (7, NY, NX)
    orog = xr.open_dataset(static)["orog"].values
    z = (orog - orog.mean()) / orog.std()
    np.testing.assert_allclose(item["cond"][1].numpy(), z, rtol=1e-4, atol=1e-4)
    # the same-named input uses the target's statistics, so it is the normalised LR field of
    # the default condition
    default = build_datasets(hr, ["t2m"], scale_factor=4, patch_size=16)
    np.testing.assert_array_equal(item["cond"][0].numpy(), default.test[0]["cond"][0].numpy())
    assert ConditionSpec.from_dict(spec.to_dict()).channels == spec.channels


def test_f_downscale_from_the_checkpoint_reproduces_evaluate(lapse_files, tmp_path: Path
                                                            ) -> None:
    """(f) A diffusion model with static fields and features: ``downscale`` from the checkpoint
    and the HR file (coarsened) gives evaluate's samples for the same seed."""
    hr, static = lapse_files
    cfg = load_config(None, [
        *_overrides(hr, "data.variables=[t2m]", "model.kind=diffusion", "training.steps=3",
                    "diffusion.timesteps=50", "diffusion.val_sample_steps=2"),
        f"data.static={{path: {static}, variables: [orog]}}", "data.features=[lat, doy]",
    ])
    train(cfg, tmp_path / "run", progress=False)
    ckpt = _last(tmp_path / "run")
    model = load_model(ckpt)
    data = load_split(bundle_for(model, None), "test")
    options = SamplingOptions(members=2, steps=3, seed=4, batch_size=4)
    expected = model_prediction(model, data, options)  # [N, M, C, H, W]
    test_file = tmp_path / "test_hr.nc"
    with xr.open_dataset(hr) as ds:
        ds.sel(time=[np.datetime64(t) for t in data.times]).to_netcdf(test_file)
    out = tmp_path / "out.nc"
    assert main(["downscale", "--checkpoint", str(ckpt), "--input", str(test_file), "--coarsen",
                 "--output", str(out), "--members", "2", "--steps", "3", "--seed", "4"]) == 0
    with xr.open_dataset(out) as ds:
        got = ds["t2m"].transpose("time", "member", ...).values
    np.testing.assert_allclose(got, expected[:, :, 0], rtol=0, atol=1e-4)


def _fails(argv: list[str], capsys: pytest.CaptureFixture[str], *words: str) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    for w in words:
        assert w in err, err


def test_g_bad_input_is_one_line_exit_2(lapse_files, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    """(g) Each bad condition setting: one line naming the problem, exit status 2."""
    hr, static = lapse_files
    dry = ["train", "--dry-run", "--run-dir", str(tmp_path / "r"), "--config", "sample"]
    run = ["train", "--run-dir", str(tmp_path / "r"), "--config", "sample", f"data.path={hr}",
           "data.variables=[t2m]", "training.steps=1", "model.base_channels=8",
           "model.head_channels=8"]
    # a missing static variable
    _fails([*run, f"data.static={{path: {static}, variables: [slope]}}"], capsys, "slope")
    # a static field on another grid
    other = tmp_path / "other.nc"
    xr.Dataset({"orog": (("lat", "lon"), np.zeros((NY, NX), np.float32))},
               coords={"lat": LAT + 0.25, "lon": LON}).to_netcdf(other)
    _fails([*run, f"data.static={{path: {other}, variables: [orog]}}"], capsys,
           "static file", "is not on the grid of the static fields", "holding the targets' points")
    # NaN in a static field
    holes = _orography()
    holes[3, 4] = np.nan
    nan_file = _write(tmp_path / "nan.nc", {"orog": holes}, {"orog": "m"}, times=False)
    _fails([*run, f"data.static={{path: {nan_file}, variables: [orog]}}"], capsys, "orog",
           "missing")
    # input times missing
    short = tmp_path / "short.nc"
    with xr.open_dataset(hr) as ds:
        ds.isel(time=slice(0, 10)).coarsen(lat=2, lon=2).mean().to_netcdf(short)
    _fails([*run, "diffusion.target=full", f"data.inputs={{path: {short}, variables: [t2m]}}"],
           capsys, "time")
    # a transform of negative values
    _fails([*run, "data.transforms={t2m: log1p}", "training.steps=1",
            f"data.path={_write(tmp_path / 'neg.nc', {'t2m': _grf(NT, -3.0, 2)}, {'t2m': 'K'})}"],
           capsys, "t2m", "negative")
    # residual target without a same-named input
    _fails([*dry, "data.variables=[pwat]", "data.inputs={variables: [btmp]}"], capsys,
           "residual", "pwat")


def test_g_downscale_refuses_other_predictors(lapse_files, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    """(g) An LR input whose variables differ from the checkpoint's predictors."""
    hr, _ = lapse_files
    a = _grf(NT, slope=-2.0, seed=11)
    path = _write(tmp_path / "hr.nc", {"a": a, "y": a**2}, {"a": "1", "y": "1"})
    cfg = load_config(None, [*_overrides(path, "data.variables=[y]", "training.steps=2",
                                         "diffusion.target=full", "model.kind=diffusion",
                                         "diffusion.timesteps=20", "diffusion.val_sample_steps=2",
                                         "data.inputs={variables: [a]}")])
    train(cfg, tmp_path / "run", progress=False)
    ckpt = _last(tmp_path / "run")
    _fails(["downscale", "--checkpoint", str(ckpt), "--input", str(hr), "--coarsen",
            "--output", str(tmp_path / "o.nc")], capsys, "'a'")
    assert not (tmp_path / "o.nc").exists()
    with pytest.raises(UserError):
        build_datasets(path, ["y"], scale_factor=4, inputs={"path": None, "variables": ["zz"]})


def test_predictors_on_their_own_grid_train_downscale_evaluate(lapse_files, tmp_path: Path
                                                               ) -> None:
    """Inputs on a coarser, shifted grid that does not nest in the HR grid (``inputs.path``):
    training regrids them onto the HR grid; ``downscale`` regrids the same file the same way
    (its samples equal evaluate's); --coarsen is refused; evaluate's baseline is the regridded
    same-named input."""
    hr, _ = lapse_files
    with xr.open_dataset(hr) as ds:
        coarse = ds.interp(lat=np.linspace(29.3, 46.1, 7), lon=np.linspace(-0.7, 16.3, 7),
                           kwargs={"fill_value": None})
        coarse["t2m"].attrs["units"] = "K"
        coarse["u10"] = coarse["t2m"] * 0 + 1.5
        coarse["u10"].attrs["units"] = "m s-1"
        coarse.to_netcdf(tmp_path / "era5.nc")
    cfg = load_config(None, [
        *_overrides(hr, "data.variables=[t2m]", "model.kind=diffusion", "training.steps=2",
                    "diffusion.timesteps=20", "diffusion.val_sample_steps=2"),
        f"data.inputs={{path: {tmp_path / 'era5.nc'}, variables: [t2m, u10]}}",
    ])
    train(cfg, tmp_path / "run", progress=False)
    ckpt = _last(tmp_path / "run")
    model = load_model(ckpt)
    spec = model.meta.condition_spec()
    assert (spec.mode, spec.inputs, spec.base_index) == ("regrid", ["t2m", "u10"], [0])
    bundle = bundle_for(model, None)
    data = load_split(bundle, "test")
    from weather_sr.evaluation.evalset import baseline_predictions

    with xr.open_dataset(tmp_path / "era5.nc") as ds:
        ref = ds["t2m"].sel(time=[np.datetime64(t) for t in data.times]).interp(
            lat=LAT, lon=LON).values
    base = baseline_predictions(data)
    assert list(base) == ["bilinear"]
    np.testing.assert_allclose(base["bilinear"][:, 0], ref, rtol=0, atol=1e-3)
    options = SamplingOptions(members=1, steps=2, seed=1, batch_size=4)
    expected = model_prediction(model, data, options)
    test_inputs = tmp_path / "test_inputs.nc"
    with xr.open_dataset(tmp_path / "era5.nc") as ds:
        ds.sel(time=[np.datetime64(t) for t in data.times]).to_netcdf(test_inputs)
    out = tmp_path / "out.nc"
    assert main(["downscale", "--checkpoint", str(ckpt), "--input", str(test_inputs),
                 "--output", str(out), "--members", "1", "--steps", "2", "--seed", "1"]) == 0
    with xr.open_dataset(out) as ds:
        assert ds["t2m"].shape[-2:] == (NY, NX)
        got = ds["t2m"].transpose("time", "member", ...).values
        # no LR field on the output's blocks: no consistency with it, and said so
        assert ds.attrs["lr_consistency"].startswith("not measured")
        assert not any(k.startswith("lr_consistency") for k in ds["t2m"].attrs)
    np.testing.assert_allclose(got, expected[:, :, 0], rtol=0, atol=1e-4)
    assert main(["downscale", "--checkpoint", str(ckpt), "--input", str(test_inputs),
                 "--output", str(tmp_path / "o3.nc"), "--constrain", "lr-mean"]) == 2
    assert main(["downscale", "--checkpoint", str(ckpt), "--input", str(test_inputs),
                 "--coarsen", "--output", str(tmp_path / "o2.nc")]) == 2
    assert not (tmp_path / "o2.nc").exists()


def test_e_transform_trains_and_outputs_are_never_negative(tmp_path: Path) -> None:
    """(e) ``transforms: {tp: log1p}``: the statistics are those of log1p(tp), the checkpoint
    keeps the transform, and downscaled precipitation is never negative."""
    rain = np.maximum(0.0, 2.0 * _grf(NT, slope=-3.0, seed=9)) ** 2  # many exact zeros
    path = _write(tmp_path / "hr.nc", {"tp": rain}, {"tp": "mm"})
    cfg = load_config(None, [
        *_overrides(path, "data.variables=[tp]", "model.kind=diffusion", "training.steps=2",
                    "diffusion.timesteps=20", "diffusion.val_sample_steps=2"),
        "data.transforms={tp: log1p}",
    ])
    bundle = build_datasets(path, ["tp"], scale_factor=4, patch_size=16,
                            split=(0.75, 0.0, 0.25), transforms={"tp": "log1p"})
    train_rows = bundle.train.samples
    want = np.log1p(rain[train_rows])
    np.testing.assert_allclose(bundle.normalizer.mean.ravel(), [want.mean()], rtol=1e-6)
    np.testing.assert_allclose(bundle.normalizer.std.ravel(), [want.std()], rtol=1e-5)
    train(cfg, tmp_path / "run", progress=False)
    ckpt = _last(tmp_path / "run")
    model = load_model(ckpt)
    assert model.meta.make_normalizer().transforms["tp"].kind == "log1p"
    out = tmp_path / "out.nc"
    assert main(["downscale", "--checkpoint", str(ckpt), "--input", str(path), "--coarsen",
                 "--output", str(out), "--members", "2", "--steps", "2"]) == 0
    with xr.open_dataset(out) as ds:
        values = ds["tp"].values
    assert np.isfinite(values).all() and values.min() >= 0.0
