"""`weather-sr score` and ``weather_sr.score``: any output file scored with evaluate's code."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr
from test_evaluation import _assert_close

import weather_sr
from weather_sr.cli import main
from weather_sr.evaluation.evalset import load_split
from weather_sr.evaluation.pipeline import bundle_for
from weather_sr.model.loading import load_model

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def truth(data_path: Path) -> xr.Dataset:
    with xr.open_dataset(data_path) as ds:
        return ds.load()


def _metrics(out: Path) -> dict:
    return json.loads((out / "metrics.json").read_text())


def test_score_of_downscale_output_equals_evaluate(checkpoints: dict[str, Path], data_path: Path,
                                                   tmp_path: Path, truth: xr.Dataset) -> None:
    """The test split downscaled by ``downscale --coarsen`` (a Zarr store) and scored by
    ``score`` with its LR gives evaluate's numbers for the same checkpoint and seed: every score
    of the ensemble, the baselines and the consistency with the input."""
    ckpt = checkpoints["diffusion"]
    sampling = ["--members", "3", "--steps", "2", "--seed", "3", "--precision", "float32",
                "--device", "cpu"]
    assert main(["evaluate", "--checkpoint", str(ckpt), "--out", str(tmp_path / "ev"),
                 *sampling]) == 0
    data = load_split(bundle_for(load_model(ckpt), None), "test")
    split = truth.sel(time=data.time_values)
    split.to_netcdf(tmp_path / "truth.nc")
    lr = split.coarsen(lat=4, lon=4).mean()  # the block grid; the values are evaluate's LR
    for c, name in enumerate(data.channels):
        lr[name].values = data.lr[:, c]
    lr.to_netcdf(tmp_path / "lr.nc")
    pred = tmp_path / "pred.zarr"
    assert main(["downscale", "--checkpoint", str(ckpt), "--input", str(tmp_path / "truth.nc"),
                 "--coarsen", "--output", str(pred), *sampling, "--no-progress"]) == 0
    assert main(["score", "--prediction", str(pred), "--name", "dif", "--truth",
                 str(tmp_path / "truth.nc"), "--lr", str(tmp_path / "lr.nc"), "--seed", "3",
                 "--out", str(tmp_path / "sc"), "--no-progress"]) == 0
    evaluated, scored = _metrics(tmp_path / "ev"), _metrics(tmp_path / "sc")
    assert set(scored["results"]) == {"nearest", "bilinear", "bicubic", "dif"}
    _assert_close(evaluated["results"], scored["results"], rtol=1e-4)
    assert scored["settings"]["n_fields"] == evaluated["settings"]["n_fields"] == len(data.times)
    report = (tmp_path / "sc" / "report.md").read_text()
    assert "an ensemble of 3 members" in report and "Consistency with the input" in report


def test_truth_against_itself_and_a_constant_shift(truth: xr.Dataset) -> None:
    perfect = weather_sr.score(truth, truth)["prediction"]
    for channel in ("t2m", "z"):
        m = perfect["metrics"][channel]
        assert m["rmse"] == 0 and m["mae"] == 0 and m["bias"] == 0 and m["lsd"] == 0
    shifted = truth.copy()
    shifted["t2m"] = truth["t2m"] + 1.5
    m = weather_sr.score(shifted, truth)["prediction"]["metrics"]
    assert m["t2m"]["bias"] == pytest.approx(1.5, abs=1e-5)
    assert m["t2m"]["rmse"] == pytest.approx(1.5, abs=1e-5)
    assert m["z"]["rmse"] == 0


def test_ensemble_dims_units_and_names(truth: xr.Dataset) -> None:
    """A member dim by any recognised name (or --member-dim), convertible units and renamed
    variables are scored as the plain ensemble is."""
    rng = np.random.default_rng(0)
    noise = rng.normal(0, 1, (4, *truth["t2m"].shape)).astype(np.float32)
    ens = xr.Dataset({"t2m": (("member", "time", "lat", "lon"), truth["t2m"].values + noise,
                              {"units": "K"})}, coords=truth.coords)
    ref = weather_sr.score(ens, truth)["prediction"]
    assert ref["kind"] == "ensemble" and ref["n_members"] == 4 and ref["channels"] == ["t2m"]
    celsius = ens.rename(member="realization")
    celsius["t2m"] = (celsius["t2m"] - 273.15).assign_attrs(units="degC")
    other = weather_sr.score(celsius.rename(t2m="tas"), truth, rename={"tas": "t2m"})
    _assert_close(ref, other["prediction"], rtol=1e-4)
    odd = weather_sr.score(ens.rename(member="sample"), truth, member_dim="sample")
    _assert_close(ref, odd["prediction"], rtol=1e-12)


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (lambda p: p.isel(lat=slice(0, 16)), "grid"),
        (lambda p: p.assign_coords(lon=p.lon + 1.0), "grid"),
        (lambda p: p.assign_coords(time=p.time + np.timedelta64(1, "h")), "missing"),
        (lambda p: p.assign(t2m=p.t2m.assign_attrs(units="m")), "cannot be converted"),
        (lambda p: p.expand_dims(sample=2), "--member-dim"),
        (lambda p: p.rename(t2m="x2", z="y2"), "--rename"),
    ],
)
def test_mismatches_are_one_line_errors(truth: xr.Dataset, tmp_path: Path, change,
                                        words: str, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "t.nc").parent.mkdir(exist_ok=True)
    truth.to_netcdf(tmp_path / "t.nc")
    change(truth).to_netcdf(tmp_path / "p.nc")
    out = tmp_path / "r"
    assert main(["score", "--prediction", str(tmp_path / "p.nc"), "--truth",
                 str(tmp_path / "t.nc"), "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert words in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists()


def test_lr_off_the_blocks_and_out_onto_an_input(truth: xr.Dataset, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    truth.to_netcdf(tmp_path / "t.nc")
    truth.coarsen(lat=4, lon=4).mean().isel(lon=slice(0, 6)).to_netcdf(tmp_path / "lr.nc")
    args = ["score", "--prediction", str(tmp_path / "t.nc"), "--truth", str(tmp_path / "t.nc")]
    assert main([*args, "--lr", str(tmp_path / "lr.nc"), "--out", str(tmp_path / "r")]) == 2
    assert "blocks" in capsys.readouterr().err and not (tmp_path / "r").exists()
    before = (tmp_path / "t.nc").read_bytes()
    assert main([*args, "--out", str(tmp_path / "t.nc"), "--overwrite"]) == 2
    assert "--out" in capsys.readouterr().err
    assert (tmp_path / "t.nc").read_bytes() == before


def test_nan_pixels_of_a_prediction_are_left_out_for_every_method(truth: xr.Dataset,
                                                                   tmp_path: Path) -> None:
    """A tool that leaves NaN (e.g. at the edges) is scored where it has values, and so are
    the baselines beside it; an LR block with a NaN pixel leaves the consistency scores."""
    lr = truth.coarsen(lat=4, lon=4).mean()
    edged = truth.copy()
    edged["t2m"] = truth["t2m"].where(truth.lon > truth.lon[3])  # the first 4 columns: NaN
    results = weather_sr.score({"tool": edged, "same": truth}, truth, lr)
    assert results["same"]["metrics"]["t2m"]["rmse"] == 0
    agree = results["tool"]["lr_consistency"]["t2m"]
    assert agree["max_abs"] == pytest.approx(0, abs=1e-4)
    masked = truth.copy()
    masked["t2m"] = edged["t2m"]
    ref = weather_sr.score(truth, masked, lr)
    _assert_close(results["bicubic"]["metrics"], ref["bicubic"]["metrics"], rtol=1e-12)
    _assert_close(results["same"]["metrics"], ref["prediction"]["metrics"], rtol=1e-12)
