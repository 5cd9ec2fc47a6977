"""`weather-sr export`: an inference-only checkpoint that downscales as the training one does,
is smaller, and is refused by --resume."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
import xarray as xr
from conftest import tiny_overrides

from weather_sr.cli import main
from weather_sr.config import load_config
from weather_sr.errors import UserError
from weather_sr.model.checkpoint import TRAINING_STATE, load_checkpoint
from weather_sr.model.loading import load_model
from weather_sr.training.loop import train

FAST = ["--members", "2", "--steps", "2", "--seed", "1", "--device", "cpu", "--precision",
        "float32", "--no-progress"]


def test_export_downscales_as_the_checkpoint_and_is_smaller(
        checkpoints: dict[str, Path], data_path: Path, tmp_path: Path) -> None:
    src = checkpoints["diffusion"]  # a residual model: its regression base travels with it
    out = tmp_path / "shared.pt"
    assert main(["export", str(src), str(out)]) == 0
    payload = load_checkpoint(out)
    assert not set(TRAINING_STATE) & set(payload) and payload["inference_only"]
    assert out.stat().st_size < 0.6 * src.stat().st_size
    a, b = load_model(src), load_model(out)
    for (k, v), (k2, v2) in zip(a.net.state_dict().items(), b.net.state_dict().items(),
                                strict=True):
        assert k == k2 and torch.equal(v, v2)
    for ck, name in ((src, "a.nc"), (out, "b.nc")):
        assert main(["downscale", "--checkpoint", str(ck), "--input", str(data_path),
                     "--coarsen", "--output", str(tmp_path / name), *FAST]) == 0
    with xr.open_dataset(tmp_path / "a.nc") as x, xr.open_dataset(tmp_path / "b.nc") as y:
        xr.testing.assert_equal(x[["t2m", "z"]], y[["t2m", "z"]])
    with pytest.raises(UserError, match="EMA weights"):
        from weather_sr.model.loading import model_from_payload

        model_from_payload(payload, ema=False)


def test_resume_refuses_an_export_and_export_refuses_its_input(
        checkpoints: dict[str, Path], data_path: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "reg.pt"
    assert main(["export", str(checkpoints["regression"]), str(out)]) == 0
    run = tmp_path / "run"  # a copy of the regression run whose latest step is an export
    shutil.copytree(checkpoints["regression"].parents[1], run)
    step = sorted((run / "checkpoints").glob("step_*.pt"))[-1]
    assert main(["export", str(checkpoints["regression"]), str(step), "--overwrite"]) == 0
    assert main(["train", "--config", str(run / "config.yaml"), "--run-dir", str(run),
                 "--resume", "--no-progress", "training.steps=4"]) == 2
    err = capsys.readouterr().err
    assert "inference-only" in err and len(err.strip().splitlines()) == 1, err
    # an export is a regression base like the training checkpoint
    cfg = load_config(None, tiny_overrides(data_path, "diffusion.target=regression_residual",
                                           f"diffusion.regression_checkpoint={out}"))
    assert Path(train(cfg, tmp_path / "dif", progress=False).checkpoint).is_file()
    before = checkpoints["regression"].read_bytes()
    assert main(["export", str(checkpoints["regression"]), str(checkpoints["regression"]),
                 "--overwrite"]) == 2
    assert "OUT" in capsys.readouterr().err
    assert checkpoints["regression"].read_bytes() == before
    assert main(["export", str(checkpoints["regression"]), str(out)]) == 2  # exists
    (tmp_path / "notes.pt").write_text("my notes")
    assert main(["export", str(checkpoints["regression"]), str(tmp_path / "notes.pt"),
                 "--overwrite"]) == 2
    assert (tmp_path / "notes.pt").read_text() == "my notes"
