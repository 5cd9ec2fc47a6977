"""Interruptions of real ``python -m weather_sr`` processes: SIGKILL and SIGTERM during training,
SIGKILL during downscaling, and stale temp files left by a killed writer."""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import xarray as xr

from weather_sr.cli import main
from weather_sr.config import config_to_yaml, load_config
from weather_sr.data import synthetic_dataset, write_netcdf
from weather_sr.model.checkpoint import load_checkpoint
from weather_sr.training.checkpoints import STEP_FILE, CheckpointManager

torch.set_num_threads(1)
pytestmark = pytest.mark.skipif(os.name != "posix", reason="POSIX signals")

TINY = [
    "data.variables=[t2m]", "data.scale_factor=4", "data.patch_size=16",
    "model.base_channels=8", "model.channel_mults=[1, 2]", "model.num_res_blocks=1",
    "model.head_channels=8", "model.mid_attention=false", "diffusion.timesteps=20",
    "training.batch_size=2", "training.warmup_steps=1", "training.val_every=100000",
    "training.val_images=0", "training.precision=fp32", "training.log_every=1",
    "output.tensorboard=false",
]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}  # 2 shared CPU cores


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("interrupts")
    data = write_netcdf(synthetic_dataset(12, 32, 32, variables=("t2m",), seed=2),
                        root / "fields.nc")
    path = root / "tiny.yaml"
    path.write_text(config_to_yaml(load_config(None, [f"data.path={data}", *TINY])))
    return path


def start(*args: str, stderr=subprocess.PIPE) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "weather_sr", *args], env=ENV,
                            stdout=subprocess.PIPE, stderr=stderr, text=True)


def wait_for(condition, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            err = proc.stderr.read()[-2000:] if proc.stderr else ""
            pytest.fail(f"process ended early ({proc.returncode}): {err}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("timed out waiting for the process")
        time.sleep(0.02)


def test_sigkill_during_training_then_resume(config: Path, tmp_path: Path) -> None:
    """Killed at a random moment while writing a checkpoint every step: every checkpoint on
    disk loads, temp files are never taken for checkpoints, --resume continues from the last."""
    run = tmp_path / "run"
    manager = CheckpointManager(run, keep_last=3)
    proc = start("train", "--config", str(config), "--run-dir", str(run), "--no-progress",
                 "training.steps=100000", "training.checkpoint_every=1", "training.keep_last=3")
    wait_for(lambda: len(manager.steps()) >= 2, proc)
    time.sleep(random.Random(0).uniform(0.0, 0.3))
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    files = list(manager.dir.iterdir())
    for path in files:
        if STEP_FILE.match(path.name) or path.name == "best.pt":
            load_checkpoint(path)  # never half-written: atomic temp + rename
        else:
            assert path.name.startswith(".") and path.name.endswith(".tmp"), path.name
    last = int(load_checkpoint(manager.latest())["step"])
    assert last >= 2 and manager.latest().name == f"step_{last:08d}.pt"
    stale = manager.dir / f".step_{last + 1:08d}.pt.killed.tmp"  # as a kill mid-write leaves
    stale.write_bytes(b"half a checkpoint")
    assert manager.latest().name == f"step_{last:08d}.pt"
    # --resume with the run's own config.yaml: starts at the last checkpoint, finishes
    assert main(["train", "--run-dir", str(run), "--resume", "--no-progress",
                 f"training.steps={last + 2}"]) == 0
    assert int(load_checkpoint(manager.latest())["step"]) == last + 2
    assert not stale.exists()  # stale temps are cleaned on resume
    with (run / "metrics.csv").open() as fh:
        steps = [int(line.split(",")[0]) for line in fh.readlines()[1:]
                 if line.split(",")[1] == "train"]
    assert steps[-2:] == [last + 1, last + 2]  # nothing redone, nothing skipped
    assert len(steps) == len(set(steps))


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_during_training_saves_and_exits(config: Path, tmp_path: Path, sig) -> None:
    run = tmp_path / "run"
    proc = start("train", "--config", str(config), "--run-dir", str(run), "--no-progress",
                 "training.steps=100000", "training.checkpoint_every=100000")
    wait_for(lambda: (run / "metrics.csv").is_file()
             and len((run / "metrics.csv").read_text().splitlines()) >= 3, proc)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err[-2000:]
    assert f"stopped by {sig.name} at step" in err and "Traceback" not in err
    step = int(err.split(f"stopped by {sig.name} at step ")[1].split(";")[0])
    manager = CheckpointManager(run, keep_last=3)
    assert manager.latest().name == f"step_{step:08d}.pt"
    assert int(load_checkpoint(manager.latest())["step"]) == step >= 2
    assert not [p for p in manager.dir.iterdir() if p.name.endswith(".tmp")]


def test_sigkill_during_downscaling_leaves_no_output(config: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert main(["train", "--config", str(config), "--run-dir", str(run), "--no-progress",
                 "training.steps=1"]) == 0
    ckpt = CheckpointManager(run, 1).latest()
    with xr.open_dataset(load_config(run / "config.yaml").data.path) as ds:
        every4 = {"lat": slice(0, 32, 4), "lon": slice(0, 32, 4)}  # on the LR grid spacing
        ds.isel(time=slice(0, 2), **every4).to_netcdf(tmp_path / "lr.nc")
    out = tmp_path / "out"
    out.mkdir()
    args = ["downscale", "--checkpoint", str(ckpt), "--input", str(tmp_path / "lr.nc"),
            "--members", "64", "--batch-size", "1", "--sampler", "ancestral", "--device", "cpu"]
    log = tmp_path / "stderr.txt"
    with log.open("w") as fh:
        proc = start(*args, "--output", str(out / "hr.nc"), stderr=fh)

    def sampling() -> bool:  # the progress bar has counted a few network evaluations
        text = log.read_text(errors="replace")
        return re.search(r"\| *[1-9]\d*/\d+ \[", text) is not None  # e.g. "| 28/2560 ["

    wait_for(sampling, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    # nothing at the output path, no temp file; only the killed run's lock, now stale
    assert [p.name for p in out.iterdir()] == [".hr.nc.lock"]
    # a temp file as a kill during the final write leaves it does not confuse a rerun
    stale = out / ".hr.nc.killed.tmp"
    stale.write_bytes(b"half a file")
    assert main([*args[:7], "--members", "2", "--steps", "2", "--sampler", "ddim",
                 "--no-progress", "--output", str(out / "hr.nc")]) == 0
    with xr.open_dataset(out / "hr.nc") as ds:
        assert ds.sizes["member"] == 2 and bool(ds["t2m"].notnull().all())
    assert stale.read_bytes() == b"half a file"  # another writer's temp is not touched
    assert sorted(p.name for p in out.iterdir()) == [".hr.nc.killed.tmp", "hr.nc"]  # lock taken
    # over (its PID is dead) and removed
