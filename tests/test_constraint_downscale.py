"""``--constrain`` and the consistency with the LR input end to end, on tiny trained checkpoints:
``downscale`` (CLI and API, NetCDF and Zarr, chunked, resumed) and ``evaluate``'s sampling.

Two models: the session's (``tests/conftest.py``: t2m and z, CorrDiff-style, plain block means)
and one trained here with cos-latitude weighted block means and a precipitation-like variable
``tp`` under ``log1p`` (the multiplicative, non-negative correction)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr
from conftest import tiny_overrides
from test_streaming import _interrupt_after

import weather_sr
from weather_sr.cli import main
from weather_sr.config import load_config
from weather_sr.data import prepare_condition, synthetic_dataset, write_netcdf
from weather_sr.data.pairs import coarsen
from weather_sr.errors import UserError
from weather_sr.evaluation.consistency import ConsistencyAccumulator
from weather_sr.evaluation.evalset import load_split, model_prediction
from weather_sr.evaluation.pipeline import bundle_for
from weather_sr.inference import partial as store
from weather_sr.inference.ensemble import (
    SamplingOptions,
    model_base,
    options_for,
    sample_ensemble,
    sample_pairs,
    tiled,
)
from weather_sr.inference.lr_consistency import GLOBAL, MAX_ABS, NOT_MEASURED, RMSE
from weather_sr.inference.precision import resolve_precision, with_precision
from weather_sr.model.loading import load_model
from weather_sr.training.loop import train

FAST = ["--members", "3", "--batch-size", "3", "--steps", "3", "--seed", "4", "--device", "cpu",
        "--no-progress"]
S = 4


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def worlds(data_path: Path, checkpoints: dict[str, Path],
           tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    """{name: {hr, ck, names, lat}}: "plain" (the session's model), "weighted" (tp, t2m)."""
    root = tmp_path_factory.mktemp("constrain")
    ds = synthetic_dataset(12, 32, 32, variables=("tp", "t2m"), seed=7)
    ds["tp"] = np.maximum(ds["tp"] - 282.0, 0.0)  # about 2 pixels in 3 dry
    ds["tp"].attrs["units"] = "mm"
    hr = write_netcdf(ds, root / "tp.nc")
    overrides = [o for o in tiny_overrides(hr) if not o.startswith("data.variables")]
    run = train(load_config(None, [*overrides, "data.variables=[tp, t2m]",
                                   "data.area_weighted=true", "data.transforms={tp: log1p}"]),
                root / "run", progress=False)
    return {"plain": {"hr": data_path, "ck": checkpoints["diffusion"], "names": ["t2m", "z"],
                      "weighted": False},
            "weighted": {"hr": hr, "ck": Path(run.checkpoint), "names": ["tp", "t2m"],
                         "weighted": True}}


def _downscale(world: dict, out: Path, *extra: str) -> xr.Dataset:
    assert main(["downscale", "--checkpoint", str(world["ck"]), "--input", str(world["hr"]),
                 "--coarsen", "--output", str(out), *FAST, *extra]) == 0
    opener = xr.open_zarr if out.suffix == ".zarr" else xr.open_dataset
    with opener(out) as ds:
        return ds.load()


def _lr_and_lat(world: dict) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """The LR the model is conditioned on with --coarsen ([N, h, w] per variable), the lat
    weights of its block mean."""
    with xr.open_dataset(world["hr"]) as hr:
        lat = hr["lat"].values if world["weighted"] else None
        return {v: coarsen(torch.from_numpy(hr[v].values.astype(np.float32)), S, lat).numpy()
                for v in world["names"]}, lat


def _members(ds: xr.Dataset, name: str) -> np.ndarray:
    return ds[name].transpose("time", "member", ...).values.astype(np.float64)  # [N, M, H, W]


@pytest.mark.parametrize("name", ["plain", "weighted"])
@pytest.mark.parametrize("constrain", ["lr-mean", "lr-mean-x0"])
def test_every_member_averages_back_to_the_lr(worlds: dict, tmp_path: Path, name: str,
                                              constrain: str) -> None:
    world = worlds[name]
    ds = _downscale(world, tmp_path / "out.nc", "--constrain", constrain)
    free = _downscale(world, tmp_path / "free.nc")
    lr, lat = _lr_and_lat(world)
    assert list(ds.data_vars) == world["names"] and ds.attrs["constrain"] == constrain
    for v in world["names"]:
        got = coarsen(torch.from_numpy(_members(ds, v)), S, lat).numpy()
        scale = np.abs(lr[v]).max()
        np.testing.assert_allclose(got, np.broadcast_to(lr[v][:, None], got.shape), rtol=0,
                                   atol=2e-7 * scale)  # float32 output
        away = coarsen(torch.from_numpy(_members(free, v)), S, lat).numpy() - lr[v][:, None]
        assert np.abs(away).max() > 1e3 * 2e-7 * scale  # unconstrained: far from it
    if name == "weighted":
        assert (_members(ds, "tp") >= 0).all() and (_members(ds, "tp") == 0).any()


def _accumulated(ds: xr.Dataset, world: dict) -> dict[str, dict[str, float | None]]:
    lr, lat = _lr_and_lat(world)
    acc = ConsistencyAccumulator(S, lat)
    acc.update(np.stack([lr[v] for v in world["names"]], axis=1),
               np.stack([_members(ds, v) for v in world["names"]], axis=2))
    return acc.result(world["names"])


@pytest.mark.parametrize("name", ["plain", "weighted"])
def test_provenance_is_the_consistency_of_the_written_file(worlds: dict, tmp_path: Path,
                                                           name: str) -> None:
    world = worlds[name]
    for constrain in ("none", "lr-mean"):
        ds = _downscale(world, tmp_path / f"{constrain}.nc", "--constrain", constrain)
        want = _accumulated(ds, world)
        for v in world["names"]:
            assert ds[v].attrs[RMSE] == pytest.approx(want[v]["rmse"], rel=1e-12, abs=1e-300)
            assert ds[v].attrs[MAX_ABS] == want[v]["max_abs"]
        weighted = "cos-latitude weighted 4x4 block mean" in ds.attrs[GLOBAL]
        assert weighted == world["weighted"] and "conditioned on" in ds.attrs[GLOBAL]
    assert ds["t2m"].attrs[RMSE] < 1e-5  # lr-mean: to float32 rounding


def _attrs(ds: xr.Dataset, names: list[str]) -> dict[str, str]:
    out = {v + k: str(ds[v].attrs.get(k)) for v in names for k in (RMSE, MAX_ABS)}
    return {**out, GLOBAL: ds.attrs[GLOBAL], "constrain": ds.attrs["constrain"]}


def test_chunks_the_api_and_a_resumed_zarr_give_the_same_attributes(
        worlds: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    world, names = worlds["plain"], worlds["plain"]["names"]
    opts = ["--constrain", "lr-mean", "--batch-size", "1"]  # the same network batches, any chunks
    whole = _downscale(world, tmp_path / "whole.nc", *opts, "--chunk-fields", "20")
    ref = _attrs(whole, names)
    assert ref["t2mlr_consistency_rmse"] != "None"
    one = _downscale(world, tmp_path / "one.nc", *opts, "--chunk-fields", "1")
    assert _attrs(one, names) == ref
    np.testing.assert_array_equal(one["z"].values, whole["z"].values)
    with xr.open_dataset(world["hr"]) as hr:
        api = weather_sr.downscale(hr, world["ck"], members=3, batch_size=1, steps=3, seed=4,
                                   coarsen=True, device="cpu", chunk_fields=3,
                                   constrain="lr-mean")
    assert _attrs(api, names) == ref
    # Zarr, interrupted after its second chunk was appended but before it was recorded
    out = tmp_path / "out.zarr"
    _interrupt_after(monkeypatch, 3)
    assert main(["downscale", "--checkpoint", str(world["ck"]), "--input", str(world["hr"]),
                 "--coarsen", "--output", str(out), *FAST, *opts, "--chunk-fields", "3"]) == 130
    saved = json.loads((store.partial_path(out) / store.SETTINGS).read_text())
    assert saved["fields_done"] == 3 and saved["constrain"] == "lr-mean"
    assert len(saved[store.TALLY]["sq"]) == 2 and saved[store.TALLY]["count"][0] > 0
    monkeypatch.undo()
    resumed = _downscale(world, out, *opts, "--chunk-fields", "2", "--resume")
    assert _attrs(resumed, names) == ref
    np.testing.assert_array_equal(resumed["t2m"].values, whole["t2m"].values)
    # another constraint is another setting: not resumed
    _interrupt_after(monkeypatch, 3)
    other = tmp_path / "other.zarr"
    assert main(["downscale", "--checkpoint", str(world["ck"]), "--input", str(world["hr"]),
                 "--coarsen", "--output", str(other), *FAST, *opts, "--chunk-fields", "3"]) == 130
    monkeypatch.undo()
    capsys.readouterr()
    assert main(["downscale", "--checkpoint", str(world["ck"]), "--input", str(world["hr"]),
                 "--coarsen", "--output", str(other), *FAST, "--chunk-fields", "3",
                 "--resume"]) == 2
    assert "constrain 'lr-mean' there, 'none' now" in capsys.readouterr().err


def test_none_is_the_sampling_of_before_bit_for_bit(worlds: dict) -> None:
    """``none`` (the default) samples exactly what ``sample_ensemble`` did before the option:
    base + s z0 of the tiled denoiser, nothing wrapped."""
    model = load_model(worlds["plain"]["ck"])
    data = load_split(bundle_for(model, None), "test")
    cond = prepare_condition(torch.from_numpy(data.inputs), model.meta.condition_spec(), S,
                             data.interpolation, data.periodic)
    options = options_for(model, SamplingOptions(members=2, steps=3, seed=1, batch_size=2),
                          periodic=data.periodic)
    got = sample_ensemble(model, cond, options)
    parts = [(c, model_base(model, c, options)) for c in cond.split(options.batch_size)]
    base = torch.cat([b for _, b in parts])
    y = torch.cat([model.condition(c, b) for c, b in parts])
    pairs = [(f, k) for f in range(cond.shape[0]) for k in range(2)]
    denoiser = with_precision(model.denoiser, resolve_precision("auto", "cpu"), "cpu")
    z0 = sample_pairs(tiled(denoiser, options), y, model.schedule, pairs, channels=2,
                      options=options, process=model.spectral)
    before = model.unscale_target(z0).view(cond.shape[0], 2, 2, *z0.shape[-2:]) + base[:, None]
    assert options.constrain == "none" and torch.equal(got, before)


@pytest.mark.parametrize("name", ["plain", "weighted"])
def test_evaluate_constrains_its_members_to_the_split_lr(worlds: dict, name: str) -> None:
    """``evaluate``'s sampling gets the condition alone: the LR recovered from it."""
    model = load_model(worlds[name]["ck"])
    data = load_split(bundle_for(model, None), "test")
    for constrain in ("lr-mean", "lr-mean-x0"):
        options = SamplingOptions(members=2, steps=3, seed=1, constrain=constrain)
        pred = model_prediction(model, data, options)
        got = coarsen(torch.from_numpy(pred.astype(np.float64)), S, data.coarsen_lat).numpy()
        scale = np.abs(data.lr).max()
        np.testing.assert_allclose(got, np.broadcast_to(data.lr[:, None], got.shape), rtol=0,
                                   atol=1e-6 * scale)


def test_tiles_with_the_x0_constraint(worlds: dict, tmp_path: Path) -> None:
    """lr-mean-x0 with --tile corrects the stitched x0 of the whole field at every step."""
    world = worlds["plain"]
    ds = _downscale(world, tmp_path / "tiled.nc", "--constrain", "lr-mean-x0", "--tile", "16",
                    "--overlap", "8")
    lr, _ = _lr_and_lat(world)
    got = coarsen(torch.from_numpy(_members(ds, "z")), S).numpy()
    np.testing.assert_allclose(got, np.broadcast_to(lr["z"][:, None], got.shape), rtol=0,
                               atol=2e-7 * np.abs(lr["z"]).max())


def test_a_bad_constraint_is_one_line(worlds: dict, tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    world = worlds["plain"]
    for command in (["downscale", "--input", str(world["hr"]), "--output", str(tmp_path / "o.nc")],
                    ["evaluate", "--out", str(tmp_path / "report")]):
        with pytest.raises(SystemExit) as info:
            main([command[0], "--checkpoint", str(world["ck"]), *command[1:], "--constrain",
                  "lr_mean"])
        assert info.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "--constrain" in err[0] and "lr-mean-x0" in err[0], err
    with xr.open_dataset(world["hr"]) as hr, pytest.raises(UserError, match="--constrain 'x'"):
        weather_sr.downscale(hr, world["ck"], coarsen=True, constrain="x")
    assert not list(tmp_path.iterdir())


def test_no_lr_on_the_blocks_is_said_not_measured() -> None:
    from weather_sr.inference.lr_consistency import ConsistencyTally

    ds = xr.Dataset({"t2m": ("x", [1.0])})
    tally = ConsistencyTally(["t2m"], S, measured=False)
    tally.update(None, np.zeros((1, 1, 1, 4, 4)))
    tally.apply(ds)
    assert ds.attrs[GLOBAL] == NOT_MEASURED and ds["t2m"].attrs == {}
