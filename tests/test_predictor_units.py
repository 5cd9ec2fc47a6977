"""Units of a predictor named like a target (issue 21, case 8): it is the residual base as it is,
so it must be in the target's units; convertible units (degC for a K target) are converted
wherever the predictor is read (training, evaluate, downscale), others are refused in one line.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import dask.array as dask_array
import numpy as np
import pytest
import torch
import xarray as xr

from weather_sr import downscale
from weather_sr.cli import main
from weather_sr.config import load_config
from weather_sr.data import build_datasets
from weather_sr.data.source import LazyFields
from weather_sr.data.units import conversion, to_target_units
from weather_sr.errors import UserError
from weather_sr.evaluation.evalset import baseline_predictions, load_split
from weather_sr.evaluation.pipeline import bundle_for
from weather_sr.model.loading import load_model
from weather_sr.training.loop import train

torch.set_num_threads(1)

NY = NX = 16
NT = 16
LAT = np.linspace(40.0, 47.5, NY)
LON = np.linspace(5.0, 12.5, NX)
CLAT = np.linspace(39.0, 48.5, 6)  # the predictors' own, coarser grid around the HR domain
CLON = np.linspace(4.0, 13.5, 6)
TIMES = np.datetime64("2022-03-01T00") + np.arange(NT) * np.timedelta64(6, "h")


def _fields(values: np.ndarray, units: list[str], names: list[str]) -> xr.DataArray:
    """Standardised fields as ``open_fields`` returns them (here lazy: dask)."""
    return xr.DataArray(dask_array.from_array(values, chunks=(1, 1, *values.shape[2:])),
                        dims=("sample", "channel", "y", "x"),
                        coords={"channel": names, "y": np.arange(values.shape[2], dtype=float),
                                "x": np.arange(values.shape[3], dtype=float)},
                        attrs={"units": units, "source": ["p.nc"], "periodic": False})


def _values(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(10.0, 8.0, (3, 2, 4, 5)).astype(np.float32)


# ------------------------------------------------------------------------------ the rule


def test_equal_units_pass_unchanged() -> None:
    """Equal strings (blank on both sides too) and spellings cf-units judges equal: the same
    DataArray comes back; a predictor not named like a target is never compared."""
    da = _fields(_values(), ["kelvin", "degC"], ["t2m", "sst"])
    assert to_target_units(da, {"t2m": "K"}, "inputs file p.nc") is da
    for got, want in (("K", "K"), ("", ""), (" K", "K "), ("kelvin", "K"), ("m/s", "m s-1"),
                      ("gpm", "gpm")):  # "gpm": unknown to cf-units but equal
        assert conversion("t2m", got, want, "inputs file p.nc") is None, (got, want)


def test_celsius_predictor_converted_to_kelvin_lazily_and_exactly() -> None:
    """degC -> K: x + 273.15 (computed in float64, as cf-units does), still lazy; the other
    channel untouched; g kg-1 -> kg kg-1 scales by 1e-3."""
    x = _values()
    da = _fields(x, ["degC", "degC"], ["t2m", "sst"])
    out = to_target_units(da, {"t2m": "K", "q": "kg kg-1"}, "inputs file p.nc")
    assert isinstance(out.data, dask_array.Array) and out.dtype == np.float32
    assert out.attrs["units"] == ["K", "degC"] and da.attrs["units"] == ["degC", "degC"]
    assert out.attrs["source"] == ["p.nc"]
    got = out.values
    np.testing.assert_array_equal(got[:, 0], (x[:, 0].astype(np.float64) + 273.15)
                                  .astype(np.float32))
    np.testing.assert_array_equal(got[:, 1], x[:, 1])
    assert conversion("t2m", "degC", "K", "w") == (1.0, 273.15)
    scale, offset = conversion("q", "g kg-1", "kg kg-1", "w")
    assert (scale, offset) == pytest.approx((1e-3, 0.0), rel=1e-12, abs=1e-15)


def test_units_given_explicitly_override_the_attribute() -> None:
    """downscale converts from the training file's units recorded in the checkpoint (the input
    file may lack a units attribute)."""
    x = _values()
    da = _fields(x, ["", "m s-1"], ["t2m", "u10"])
    out = to_target_units(da, {"t2m": "K"}, "input p.nc", units=["degC", "m s-1"])
    np.testing.assert_array_equal(out.values[:, 0], (x[:, 0] + np.float64(273.15))
                                  .astype(np.float32))
    np.testing.assert_array_equal(out.values[:, 1], x[:, 1])


@pytest.mark.parametrize(("got", "want", "words"), [
    ("m/s", "K", ("'m/s'", "'K'", "cannot be converted")),
    ("", "K", ("no units", "'K'")),
    ("K", "", ("'K'", "target has no units")),
    ("bananas", "K", ("'bananas'", "'K'", "unknown to cf-units")),
])
def test_other_units_are_refused_in_one_line(got: str, want: str, words: tuple[str, ...]) -> None:
    da = _fields(_values(), [got, "m s-1"], ["t2m", "u10"])
    with pytest.raises(UserError) as err:
        to_target_units(da, {"t2m": want}, "inputs file /data/p.nc")
    msg = str(err.value)
    assert len(msg.splitlines()) == 1
    for w in ("inputs file /data/p.nc", "predictor t2m", *words):
        assert w in msg, msg


def test_lazy_reader_converts_in_each_process(tmp_path: Path) -> None:
    """``LazyFields`` (the lazy path of coarsened inputs, reopened in each DataLoader worker)
    applies the same conversion, also after pickling."""
    c = np.random.default_rng(1).normal(10.0, 5.0, (NT, NY, NX)).astype(np.float32)
    _write(tmp_path / "p.nc", {"t2m": c}, {"t2m": "degC"}, LAT, LON)
    lazy = LazyFields(tmp_path / "p.nc", ["t2m"], NY - 4, NX, {"t2m": "K"})
    want = (c[:, : NY - 4].astype(np.float64) + 273.15).astype(np.float32)
    for reader in (lazy, pickle.loads(pickle.dumps(lazy))):
        da = reader.get()
        assert da.attrs["units"] == ["K"]
        np.testing.assert_array_equal(da.values[:, 0], want)


# ------------------------------------------------------------------------- end to end


def _write(path: Path, variables: dict[str, np.ndarray], units: dict[str, str],
           lat: np.ndarray, lon: np.ndarray) -> Path:
    coords = {"time": TIMES, "lat": ("lat", lat, {"units": "degrees_north"}),
              "lon": ("lon", lon, {"units": "degrees_east"})}
    xr.Dataset({k: (("time", "lat", "lon"), v.astype(np.float32), {"units": units[k]})
                for k, v in variables.items()}, coords=coords).to_netcdf(path)
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Targets t2m (K) on the HR grid, and the same predictors t2m, u10 on a coarser grid twice:
    t2m in degC, and in K exactly as the conversion gives it (so both runs see equal values)."""
    folder = tmp_path_factory.mktemp("units")
    rng = np.random.default_rng(0)
    celsius = (12.0 + 4.0 * rng.standard_normal((NT, 1, 1))
               + np.sin(CLAT / 3.0)[None, :, None] * np.cos(CLON / 2.0)[None, None, :] * 3.0
               ).astype(np.float32)
    kelvin = (celsius.astype(np.float64) + 273.15).astype(np.float32)
    u10 = rng.normal(0.0, 3.0, celsius.shape).astype(np.float32)
    coarse = xr.DataArray(kelvin, dims=("time", "lat", "lon"), coords={"lat": CLAT, "lon": CLON})
    truth = coarse.interp(lat=LAT, lon=LON).values + 0.3 * rng.standard_normal((NT, NY, NX))
    return {
        "hr": _write(folder / "hr.nc", {"t2m": truth}, {"t2m": "K"}, LAT, LON),
        "C": _write(folder / "in_C.nc", {"t2m": celsius, "u10": u10},
                    {"t2m": "degC", "u10": "m s-1"}, CLAT, CLON),
        "K": _write(folder / "in_K.nc", {"t2m": kelvin, "u10": u10},
                    {"t2m": "K", "u10": "m s-1"}, CLAT, CLON),
        "ms": _write(folder / "in_ms.nc", {"t2m": u10, "u10": u10},
                     {"t2m": "m/s", "u10": "m s-1"}, CLAT, CLON),
    }


def _inputs(path: Path) -> str:
    return f"data.inputs={{path: {path}, variables: [t2m, u10]}}"


def _config(files: dict[str, Path], kind: str) -> list[str]:
    return [
        f"data.path={files['hr']}", "data.variables=[t2m]", "data.scale_factor=4",
        "data.patch_size=16", "data.split=[0.75, 0.0, 0.25]", _inputs(files[kind]),
        "model.base_channels=8", "model.channel_mults=[1, 2]", "model.num_res_blocks=1",
        "model.head_channels=8", "model.mid_attention=false", "diffusion.target=residual",
        "diffusion.timesteps=20", "diffusion.val_sample_steps=2", "training.batch_size=2",
        "training.steps=2", "training.warmup_steps=1", "training.val_every=100000",
        "training.checkpoint_every=100000", "training.val_images=0", "training.precision=fp32",
        "training.device=cpu", "output.tensorboard=false",
    ]


def test_celsius_predictor_gives_the_condition_of_the_kelvin_one(files: dict[str, Path]) -> None:
    """The normalised condition (residual base and the other predictor) built from the degC file
    equals, bit for bit, the one built from the K file; the checkpoint records the file's units."""
    built = {k: build_datasets(files["hr"], ["t2m"], scale_factor=4, patch_size=16,
                               split=(0.75, 0.0, 0.25),
                               inputs={"path": str(files[k]), "variables": ["t2m", "u10"]})
             for k in ("C", "K")}
    c, k = built["C"].condition, built["K"].condition
    assert c.base_index == [0] and c.input_units == ["degC", "m s-1"]
    assert k.input_units == ["K", "m s-1"]
    np.testing.assert_array_equal(c.input_normalizer.mean, k.input_normalizer.mean)
    np.testing.assert_array_equal(c.input_normalizer.std, k.input_normalizer.std)
    for i in range(len(built["C"].test)):
        np.testing.assert_array_equal(built["C"].test[i]["cond"].numpy(),
                                      built["K"].test[i]["cond"].numpy())


def test_celsius_predictor_trains_evaluates_and_downscales_in_kelvin(
    files: dict[str, Path], tmp_path: Path
) -> None:
    """Trained on the degC predictor file, the model equals the one trained on the K file (same
    seed), evaluate's baseline has no -273 K bias, and ``downscale`` of the degC file (accepted:
    the checkpoint records degC) equals the K model's downscale of the K file."""
    ckpt = {k: train(load_config(None, _config(files, k)), tmp_path / k, progress=False
                     ).checkpoint for k in ("C", "K")}
    models = {k: load_model(p) for k, p in ckpt.items()}
    weights_c, weights_k = models["C"].net.state_dict(), models["K"].net.state_dict()
    assert all(torch.equal(weights_c[n], weights_k[n]) for n in weights_k)
    data = load_split(bundle_for(models["C"], None), "test")
    base = baseline_predictions(data)["bilinear"]
    bias = float(np.mean(base[:, 0] - data.truth[:, 0]))
    assert abs(bias) < 0.5, bias  # the unconverted degC base was -273 K off
    out = {}
    for k in ("C", "K"):
        path = tmp_path / f"out_{k}.nc"
        assert main(["downscale", "--checkpoint", str(ckpt[k]), "--input", str(files[k]),
                     "--output", str(path), "--members", "1", "--steps", "2", "--seed", "3",
                     "--device", "cpu", "--no-progress"]) == 0
        with xr.open_dataset(path) as ds:
            out[k] = ds["t2m"].values
    assert np.isfinite(out["C"]).all() and 250.0 < float(np.mean(out["C"])) < 320.0
    np.testing.assert_array_equal(out["C"], out["K"])
    with xr.open_dataset(files["C"]) as ds:  # the Python API reads the degC Dataset the same way
        api = downscale(ds, ckpt["C"], members=1, steps=2, seed=3, device="cpu")
    np.testing.assert_array_equal(api["t2m"].values, out["C"])


def test_train_refuses_a_predictor_in_units_not_convertible(
    files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """t2m in m/s as the predictor of a t2m target in K: exit 2, one line naming both units."""
    argv = ["train", "--run-dir", str(tmp_path / "r"), "--no-progress", *_config(files, "ms")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    for w in (str(files["ms"]), "t2m", "'m/s'", "'K'"):
        assert w in err, err
    assert not (tmp_path / "r").exists()
