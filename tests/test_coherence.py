"""Temporally coherent ensembles by correlated noise (issue 26, part 2 b).

The chain's statistics and closed form; ``rho = 0`` is the independent ensemble bit for bit;
chunked, unchunked and resumed coherent runs are equal bit for bit; and a diffusion model
trained on a field whose small scales are an AR(1) in time gives members whose details keep
the truth's lag-1 autocorrelation when coherent, and lose it when independent.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr
from test_streaming import FAST, _assert_same, _interrupt_after, make_world

import weather_sr
from weather_sr.cli import main
from weather_sr.config import load_config
from weather_sr.data import coarsen, gaussian_random_field, upsample
from weather_sr.errors import UserError
from weather_sr.evaluation.evalset import load_split, model_prediction
from weather_sr.evaluation.pipeline import bundle_for
from weather_sr.inference.coherence import NoiseChain, time_stride
from weather_sr.inference.ensemble import SamplingOptions, member_seed
from weather_sr.training.loop import train

pytestmark = pytest.mark.usefixtures("one_thread")


def test_chain_is_a_standard_normal_ar1_in_time() -> None:
    rho = torch.tensor([0.9, 0.5])
    chain = NoiseChain(7, rho)
    pairs = [(f, 0) for f in range(600)]
    eps = torch.stack([torch.randn((2, 4, 4), generator=torch.Generator().manual_seed(
        member_seed(7, f, 0))) for f, _ in pairs])
    x = torch.cat([chain.initial_noise(pairs[a : a + 50], eps[a : a + 50])
                   for a in range(0, 600, 50)]).double()
    lag = (x[1:] * x[:-1]).mean((0, 2, 3)) / x.pow(2).mean((0, 2, 3))
    np.testing.assert_allclose(lag.numpy(), rho.numpy(), atol=0.03)
    np.testing.assert_allclose(x.var((0, 2, 3)).numpy(), [1.0, 1.0], atol=0.1)
    # the closed form of the first fields, from each pair's own draw
    c = torch.sqrt(1 - rho**2).view(-1, 1, 1)
    torch.testing.assert_close(x[2].float(), rho.view(-1, 1, 1) ** 2 * eps[0]
                               + rho.view(-1, 1, 1) * c * eps[1] + c * eps[2])


def test_a_chain_asked_for_a_later_field_rebuilds_it_exactly() -> None:
    """Two fields per time (input members): field f follows f - 2; a fresh chain starting at a
    later field (a resumed run) gives the continuous chain's noise bit for bit."""
    rho = torch.tensor([0.8])
    pairs = [(f, m) for f in range(9) for m in range(3)]
    eps = torch.stack([torch.randn((1, 3, 5), generator=torch.Generator().manual_seed(
        member_seed(1, f, m))) for f, m in pairs])
    whole = NoiseChain(1, rho, stride=2).initial_noise(pairs, eps)
    late = NoiseChain(1, rho, stride=2).initial_noise(pairs[15:], eps[15:])
    torch.testing.assert_close(late, whole[15:], rtol=0, atol=0)
    c = float(np.sqrt(1 - 0.8**2))
    torch.testing.assert_close(whole[2 * 3 + 1], 0.8 * whole[0 * 3 + 1] + c * eps[2 * 3 + 1])
    assert time_stride(np.array(["a", "a", "b", "b"])) == 2 and time_stride(None) == 1


def test_options_are_checked() -> None:
    for kwargs, words in (({"coherent": "yes"}, "--coherent 'yes'"),
                          ({"coherent": "noise", "rho": 1.0}, "--rho 1.0"),
                          ({"rho": 0.5}, "add --coherent noise")):
        with pytest.raises(UserError, match=words):
            SamplingOptions(**kwargs)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """test_streaming's world, its reference output coherent."""
    return make_world(tmp_path_factory.mktemp("coherent"), _run)


def _run(world: dict[str, Path], out: Path, *extra: str, coherent: bool = True) -> int:
    more = ["--coherent", "--rho", "0.8"] if coherent else []
    return main(["downscale", "--checkpoint", str(world["ck"]), "--input", str(world["lr"]),
                 "--output", str(out), *FAST, *more, *extra])


def test_rho_zero_is_the_independent_ensemble(world: dict[str, Path], tmp_path: Path) -> None:
    assert _run(world, tmp_path / "off.nc", coherent=False) == 0
    assert main(["downscale", "--checkpoint", str(world["ck"]), "--input", str(world["lr"]),
                 "--output", str(tmp_path / "zero.nc"), *FAST, "--coherent", "--rho",
                 "0"]) == 0
    with xr.open_dataset(tmp_path / "off.nc") as a, xr.open_dataset(tmp_path / "zero.nc") as b:
        for name in ("t2m", "u10"):
            np.testing.assert_array_equal(a[name].values, b[name].values)
        assert (a.attrs["coherent"], b.attrs["coherent"]) == ("off", "noise")
    with xr.open_dataset(world["ref"]) as ref, xr.open_dataset(tmp_path / "off.nc") as off:
        assert not np.array_equal(ref["t2m"].values, off["t2m"].values)  # rho 0.8 did change it


@pytest.mark.parametrize("chunk", ["1", "2"])
def test_chunked_coherent_equals_one_chunk(world: dict[str, Path], tmp_path: Path,
                                           chunk: str) -> None:
    out = tmp_path / "out.nc"
    assert _run(world, out, "--chunk-fields", chunk) == 0
    with xr.open_dataset(out) as a, xr.open_dataset(world["ref"]) as b:
        _assert_same(a.load(), b.load())


def test_resumed_coherent_run_equals_an_uninterrupted_one(
        world: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "out.zarr"
    _interrupt_after(monkeypatch, 3)  # 2 of 5 fields recorded complete
    assert _run(world, out, "--chunk-fields", "2") == 130
    monkeypatch.undo()
    assert _run(world, out, "--chunk-fields", "3", "--resume", "--rho", "0.5") == 2  # other rho
    assert _run(world, out, "--chunk-fields", "3", "--resume") == 0
    with xr.open_zarr(out) as z, xr.open_dataset(world["ref"]) as ref:
        _assert_same(z.load(), ref)


def test_api_coherent_equals_the_cli(world: dict[str, Path]) -> None:
    with xr.open_dataset(world["lr"]) as ds, xr.open_dataset(world["ref"]) as ref:
        out = weather_sr.downscale(ds.load(), world["ck"], members=2, batch_size=2,
                                   sampler="ddim", steps=2, eta=0.5, seed=3, device="cpu",
                                   chunk_fields=2, coherent=True, rho=0.8)
        for name in ("t2m", "u10"):
            np.testing.assert_array_equal(out[name].values, ref[name].values)


# ------------------------------------------------------------------ a trained model

NY = NX = 32
NT = 96
PHI = 0.8


def _lag1(x: np.ndarray) -> float:
    """Pooled lag-1 autocorrelation of series ``x [T, ...]`` (mean removed per point)."""
    a = x - x.mean(0)
    return float((a[1:] * a[:-1]).sum() / np.sqrt((a[1:] ** 2).sum() * (a[:-1] ** 2).sum()))


@pytest.fixture(scope="module")
def ar1(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """Small scales an AR(1) in time (phi 0.8) on a large-scale field independent in time; a
    diffusion model trained on it plain and one trained on the previous time's field too."""
    root = tmp_path_factory.mktemp("ar1")
    g = torch.Generator().manual_seed(0)
    eta = gaussian_random_field(NT, NY, NX, slope=2.0, generator=g).numpy()  # small scales
    detail = np.empty_like(eta)
    detail[0] = eta[0]
    for t in range(1, NT):
        detail[t] = PHI * detail[t - 1] + np.sqrt(1 - PHI**2) * eta[t]
    smooth = gaussian_random_field(NT, NY, NX, slope=-6.0, generator=g).numpy()
    times = np.datetime64("2021-01-01T00") + np.arange(NT) * np.timedelta64(3, "h")
    coords = {"time": times, "lat": ("lat", np.linspace(30, 45.5, NY), {"units": "degrees_north"}),
              "lon": ("lon", np.linspace(0, 15.5, NX), {"units": "degrees_east"})}
    y = (3.0 * smooth + detail).astype(np.float32)
    path = root / "hr.nc"
    xr.Dataset({"y": (("time", "lat", "lon"), y, {"units": "1"})}, coords=coords).to_netcdf(path)
    models = {}
    for name, extra in (("plain", []), ("previous", ["data.previous=true"])):
        cfg = load_config(None, [
            f"data.path={path}", "data.variables=[y]", "data.scale_factor=4",
            "data.patch_size=32", "data.split=[0.75, 0.0, 0.25]", "model.base_channels=16",
            "model.channel_mults=[1, 2]", "model.num_res_blocks=1", "model.head_channels=16",
            "model.mid_attention=false", "diffusion.timesteps=200", "training.batch_size=8",
            "training.steps=300", "training.lr=2e-3", "training.warmup_steps=20",
            "training.ema_decay=0.95", "training.val_every=1000",
            "training.checkpoint_every=1000", "training.log_every=100",
            "training.precision=fp32", "output.tensorboard=false", *extra])
        train(cfg, root / name, progress=False)
        models[name] = sorted((root / name / "checkpoints").glob("step_*.pt"))[-1]
    test = slice(int(0.75 * NT), NT)
    with xr.open_dataset(path) as ds:
        ds.isel(time=test).to_netcdf(root / "test.nc")
    truth = y[test]
    # the detail as training measures it: minus the block means interpolated back (bicubic)
    base = upsample(coarsen(torch.from_numpy(truth[:, None]), 4), 4)[:, 0].numpy()
    return {"root": root, "test": root / "test.nc", "truth": truth, "base": base, **models}


def _detail_lag1(ar1: dict, ckpt: Path, **options: object) -> float:
    """The members' mean lag-1 autocorrelation of their details on the test times."""
    with xr.open_dataset(ar1["test"]) as ds:
        out = weather_sr.downscale(ds.load(), ckpt, members=4, steps=10, seed=1, coarsen=True,
                                   device="cpu", precision="float32", **options)
    members = out["y"].transpose("member", "time", ...).values
    return float(np.mean([_lag1(m - ar1["base"]) for m in members]))


def test_coherent_members_keep_the_truths_lag1(ar1: dict) -> None:
    """The training data's detail lag-1 is stored; the sampled details of coherent members
    (correlated noise, and autoregressive) have the truth's lag-1 within 0.1, independent
    members' are near 0."""
    assert abs(weather_sr.load_model(ar1["plain"]).meta.detail_lag1[0] - PHI) < 0.1
    truth = _lag1(ar1["truth"] - ar1["base"])
    lags = {"independent": _detail_lag1(ar1, ar1["plain"], coherent=False),
            "noise": _detail_lag1(ar1, ar1["plain"], coherent=True),
            "ar": _detail_lag1(ar1, ar1["previous"], coherent=True),
            "ar, previous as zeros": _detail_lag1(ar1, ar1["previous"], coherent=False)}
    print(f"detail lag-1: truth {truth:.3f}, "
          + ", ".join(f"{k} {v:.3f}" for k, v in lags.items()))
    assert abs(lags["noise"] - truth) < 0.1 and abs(lags["ar"] - truth) < 0.1
    assert lags["independent"] < truth - 0.3 and lags["ar, previous as zeros"] < truth - 0.3


def _ar_run(ar1: dict, out: Path, *extra: str) -> int:
    return main(["downscale", "--checkpoint", str(ar1["previous"]), "--input", str(ar1["test"]),
                 "--coarsen", "--output", str(out), "--members", "2", "--batch-size", "2",
                 "--steps", "3", "--seed", "2", "--device", "cpu", "--no-progress", *extra])


def test_autoregressive_runs_chunked_resumed_and_evaluated_alike(
        ar1: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An autoregressive model (data.previous) in chunks of 1 and 5 fields, resumed after an
    interruption (its previous members read back from the partial store), and through
    evaluate's model_prediction: the same members bit for bit (evaluate: to 1e-4)."""
    ref = tmp_path / "ref.nc"
    assert _ar_run(ar1, ref, "--chunk-fields", "30") == 0
    assert _ar_run(ar1, tmp_path / "one.nc", "--chunk-fields", "1") == 0
    with xr.open_dataset(ref) as a, xr.open_dataset(tmp_path / "one.nc") as b:
        _assert_same(a.load(), b.load())
        assert a.attrs["coherent"] == "ar"
    out = tmp_path / "out.zarr"
    _interrupt_after(monkeypatch, 3)  # 10 of the 24 fields recorded complete
    assert _ar_run(ar1, out, "--chunk-fields", "5") == 130
    monkeypatch.undo()
    assert _ar_run(ar1, out, "--chunk-fields", "7", "--resume") == 0
    with xr.open_zarr(out) as z, xr.open_dataset(ref) as a:
        _assert_same(z.load(), a.load())
        expected = a["y"].transpose("time", "member", ...).values
    model = weather_sr.load_model(ar1["previous"])
    data = load_split(bundle_for(model, None), "test")
    got = model_prediction(model, data, SamplingOptions(members=2, steps=3, seed=2,
                                                        batch_size=2))
    np.testing.assert_allclose(got[:, :, 0], expected, rtol=0, atol=1e-4)


def test_coherence_options_follow_the_model(ar1: dict, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    """ar needs a model trained with data.previous, noise one without; each refusal is one
    line, exit 2, nothing written."""
    for ckpt, value, words in ((ar1["plain"], "ar", "data.previous: true"),
                               (ar1["previous"], "noise", "use --coherent ar")):
        out = tmp_path / "out.nc"
        capsys.readouterr()
        assert main(["downscale", "--checkpoint", str(ckpt), "--input", str(ar1["test"]),
                     "--coarsen", "--output", str(out), "--coherent", value, "--steps",
                     "2"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and words in err[-1], err
        assert not out.exists()


def test_previous_needs_a_diffusion_model_without_regression_base() -> None:
    for extra, words in ((["model.kind=regression"], "is for diffusion models"),
                         (["data.previous_dropout=1.0"], "data.previous_dropout = 1.0")):
        with pytest.raises(UserError, match=words):
            load_config(None, ["data.variables=[y]", "data.previous=true", *extra])
