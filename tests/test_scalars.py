"""Scalar conditions (issue 26, part 1): ``data.scalars`` from the files into the UNet's
embedding, stored in the checkpoint, required at downscale.

A target whose small-scale amplitude depends on the lead time alone (not on the calendar, not
on the LR field) is learned only with ``data.scalars: [lead_time]``. Checkpoints without
scalars load unchanged: tests/test_checkpoint.py's fixture of the first checkpoint format
gives its stored output to the last bit.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr
from test_condition import LAT, LON, NT, NX, NY, TIMES, _last, _test_rmse
from test_condition import _overrides as condition_overrides

from weather_sr.cli import main
from weather_sr.config import load_config
from weather_sr.data import gaussian_random_field
from weather_sr.data.condition import ConditionSpec
from weather_sr.data.normalise import Normalizer
from weather_sr.data.scalars import scalars_at
from weather_sr.errors import UserError
from weather_sr.evaluation.evalset import load_split, model_prediction
from weather_sr.evaluation.pipeline import bundle_for
from weather_sr.inference.ensemble import SamplingOptions
from weather_sr.model.loading import load_model
from weather_sr.nn.unet import UNet
from weather_sr.training.loop import train

torch.set_num_threads(1)

LEAD = np.random.default_rng(3).permutation(NT) * np.timedelta64(3, "h")  # not the calendar


def _write(path: Path, y: np.ndarray, lead: bool = True) -> Path:
    coords = {"time": TIMES, "lat": ("lat", LAT, {"units": "degrees_north"}),
              "lon": ("lon", LON, {"units": "degrees_east"})}
    if lead:
        coords["lead_time"] = ("time", LEAD)
    xr.Dataset({"y": (("time", "lat", "lon"), y.astype(np.float32), {"units": "1"})},
               coords=coords).to_netcdf(path)
    return path


@pytest.fixture(scope="module")
def lead_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """y = amplitude(lead time) x a 4-cell pattern (below the 4x LR grid) + a smooth field."""
    hours = LEAD / np.timedelta64(1, "h")
    pattern = np.sin(np.arange(NX) * np.pi / 2)[None, :] * np.ones((NY, 1))
    smooth = gaussian_random_field(NT, NY, NX, slope=-5.0,
                                   generator=torch.Generator().manual_seed(5)).numpy()
    y = 2.0 * np.cos(2 * np.pi * hours / 144.0)[:, None, None] * pattern[None] + 0.3 * smooth
    return _write(tmp_path_factory.mktemp("lead") / "hr.nc", y)


def _overrides(path: Path, *extra: str) -> list[str]:
    """test_condition's small regression run on ``y``."""
    return condition_overrides(path, "data.variables=[y]", *extra)


def test_a_lead_time_dependent_target_needs_the_scalar(lead_file: Path, tmp_path: Path) -> None:
    plain = _test_rmse(_overrides(lead_file), tmp_path / "plain")
    lead = _test_rmse(_overrides(lead_file, "data.scalars=[lead_time]"), tmp_path / "lead")
    print(f"lead-time test RMSE: without the scalar {plain:.4f}, with it {lead:.4f}")
    assert lead < 0.5 * plain


def test_scalar_reaches_the_embedding_and_the_checkpoint(lead_file: Path) -> None:
    """The UNet's output moves with the scalar plane's value (through its embedding), the
    layout puts the scalars last, and the spec survives its checkpoint dict."""
    torch.manual_seed(0)
    net = UNet(1, 1, cond_channels=3, base_channels=8, channel_mults=(1, 2), num_res_blocks=1,
               mid_attention=False, scalars=(2, 1))
    x, cond = torch.randn(1, 1, 8, 8), torch.randn(1, 3, 8, 8)
    cond[:, 2] = 0.5
    other = cond.clone()
    other[:, 2] = -0.5
    level = torch.tensor([0.3])
    assert not torch.allclose(net(x, level, cond), net(x, level, other))
    with torch.no_grad():  # with the embedding's map zero, only the conv sees the plane
        net.map_scalars.weight.zero_()
        net.conv_in.conv.weight[:, 3].zero_()
    torch.testing.assert_close(net(x, level, cond), net(x, level, other), rtol=0, atol=0)

    norm = Normalizer("channel", ["y"], np.zeros((1, 1, 1)), np.ones((1, 1, 1)))
    spec = ConditionSpec(["y"], ["y"], norm, scalar_names=["lead_time"],
                         scalar_mean=np.array([6.0]), scalar_std=np.array([2.0]))
    assert spec.channels == ["y", "scalar:lead_time"] and spec.scalar_channels == (1, 1)
    cond = spec.assemble(np.ones((2, 1, 4, 4), np.float32), scalars=np.array([[6.0], [10.0]]))
    np.testing.assert_array_equal(cond[:, 1], np.stack([np.zeros((4, 4)), np.full((4, 4), 2.0)]))
    again = ConditionSpec.from_dict(spec.to_dict())
    assert again.scalar_names == ["lead_time"] and again.scalar_std.tolist() == [2.0]


def test_scalars_by_time_from_either_file(lead_file: Path) -> None:
    """Values are found by the fields' time, in the first file that has them; durations are
    hours; a missing time or name is one line."""
    with xr.open_dataset(lead_file) as ds:
        ds.load()
    predictors = xr.Dataset({"index": ("time", np.arange(NT, dtype=float))},
                            coords={"time": TIMES})
    times = TIMES[[5, 1, 7]]
    got = scalars_at([(ds, "targets"), (predictors, "predictors")], ["lead_time", "index"],
                     times, "add it")
    np.testing.assert_array_equal(got[:, 0], LEAD[[5, 1, 7]] / np.timedelta64(1, "h"))
    np.testing.assert_array_equal(got[:, 1], [5.0, 1.0, 7.0])
    with pytest.raises(UserError, match="'forcing' is in neither targets nor predictors: add"):
        scalars_at([(ds, "targets"), (predictors, "predictors")], ["forcing"], times, "add it")
    with pytest.raises(UserError, match="no value at time"):
        scalars_at([(predictors, "predictors")], ["index"],
                   np.array([np.datetime64("1999-01-01T00", "ns")]), "add it")


def test_downscale_with_the_scalar_equals_evaluate_and_needs_it(
        lead_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A diffusion model with a scalar: downscale of the test times gives evaluate's samples;
    an input without the scalar is one line, exit status 2, and writes nothing."""
    cfg = load_config(None, _overrides(
        lead_file, "data.scalars=[lead_time]", "model.kind=diffusion", "training.steps=3",
        "diffusion.timesteps=50", "diffusion.val_sample_steps=2"))
    train(cfg, tmp_path / "run", progress=False)
    ckpt = _last(tmp_path / "run")
    model = load_model(ckpt)
    data = load_split(bundle_for(model, None), "test")
    expected = model_prediction(model, data, SamplingOptions(members=2, steps=3, seed=4,
                                                             batch_size=4))
    picked = [np.datetime64(t) for t in data.times]
    with xr.open_dataset(lead_file) as ds:
        ds.sel(time=picked).to_netcdf(tmp_path / "test.nc")
        ds.sel(time=picked).drop_vars("lead_time").to_netcdf(tmp_path / "no_lead.nc")
    argv = ["downscale", "--checkpoint", str(ckpt), "--coarsen", "--members", "2", "--steps",
            "3", "--seed", "4"]
    out = tmp_path / "out.nc"
    assert main([*argv, "--input", str(tmp_path / "test.nc"), "--output", str(out)]) == 0
    with xr.open_dataset(out) as ds:
        got = ds["y"].transpose("time", "member", ...).values
    np.testing.assert_allclose(got, expected[:, :, 0], rtol=0, atol=1e-4)

    bad = tmp_path / "bad.nc"
    capsys.readouterr()
    assert main([*argv, "--input", str(tmp_path / "no_lead.nc"), "--output", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "lead_time" in err and "data.scalars" in err, err
    assert not bad.exists()
