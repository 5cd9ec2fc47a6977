"""Several processes with gloo on CPU: data-parallel training (disjoint data, identical
weights) and ``torchrun`` downscaling (the output of one process, bit for bit)."""

from __future__ import annotations

import csv
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
import xarray as xr

from weather_sr.model.checkpoint import load_checkpoint


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, data: str, run_dir: str, out: str) -> None:
    os.environ.update(
        {
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
            "RANK": str(rank),
            "WORLD_SIZE": str(world),
            "LOCAL_RANK": str(rank),
        }
    )
    torch.set_num_threads(1)
    from weather_sr.config import load_config
    from weather_sr.training.loop import train

    cfg = load_config(
        None,
        [
            f"data.path={data}",
            "data.variables=[t2m]",
            "data.patch_size=16",
            "model.base_channels=8",
            "model.channel_mults=[1, 2]",
            "model.num_res_blocks=1",
            "model.head_channels=8",
            "model.dropout=0.1",
            "diffusion.timesteps=50",
            "diffusion.val_sample_steps=2",
            "training.batch_size=2",
            "training.steps=3",
            "training.log_every=1",
            "training.val_every=3",
            "training.val_batches=1",
            "training.val_images=1",
            "training.precision=fp32",
            "training.device=cpu",
            "output.tensorboard=false",
        ],
    )
    seen: list[list[int]] = []
    holder = {}
    from weather_sr.training.trainer import Trainer

    step = Trainer.train_step

    def recording_step(trainer, batches):  # the items of this rank's batches, step by step
        seen.append([int(i) for batch in batches for i in batch["index"]])
        holder["net"] = trainer.net
        return step(trainer, batches)

    Trainer.train_step = recording_step  # in this spawned worker only
    result = train(cfg, run_dir, progress=False)
    torch.save(
        {"indices": seen, "state": holder["net"].state_dict(), "step": result.step},
        Path(out) / f"rank{rank}.pt",
    )


def test_two_gloo_ranks_see_different_data_and_agree(tmp_path: Path) -> None:
    from weather_sr.data import synthetic_dataset, write_zarr

    data = write_zarr(
        synthetic_dataset(24, 32, 32, variables=("t2m",), seed=4), tmp_path / "fields.zarr"
    )
    run_dir = tmp_path / "run"
    mp.spawn(
        _worker, args=(2, _free_port(), str(data), str(run_dir), str(tmp_path)), nprocs=2, join=True
    )
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert r0["step"] == r1["step"] == 3
    for a, b in zip(r0["indices"], r1["indices"], strict=True):
        assert len(a) == len(b) == 2 and a != b  # each rank its own shard of the global batch
    assert r0["indices"] != r1["indices"]
    for key, value in r0["state"].items():
        torch.testing.assert_close(value, r1["state"][key], rtol=0, atol=0, msg=key)
    # rank 0 alone wrote: one metrics row per step, and its checkpoint holds the common weights
    with (run_dir / "metrics.csv").open() as fh:
        steps = [int(r["step"]) for r in csv.DictReader(fh) if r["split"] == "train"]
    assert steps == [1, 2, 3]
    saved = load_checkpoint(run_dir / "checkpoints" / "step_00000003.pt")
    for key, value in r0["state"].items():
        torch.testing.assert_close(saved["model"][key], value, rtol=0, atol=0)


def torchrun(nproc: int, *argv: str) -> subprocess.CompletedProcess[str]:
    """``torchrun --standalone --nproc_per_node nproc -m weather_sr argv`` (1: no torchrun), one
    thread per process so that one and two processes run the same kernels."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone",
              f"--nproc_per_node={nproc}"] if nproc > 1 else [sys.executable]
    return subprocess.run([*launch, "-m", "weather_sr", *argv], env=env, capture_output=True,
                          text=True, timeout=600)


def _ar_checkpoint(path: Path) -> Path:
    """test_infer's tiny checkpoint, its UNet also conditioned on the previous time's field
    (``data.previous``; untrained: what is tested is the order of the work, not the values)."""
    from test_infer import _checkpoint

    from weather_sr.config import model_config_from_dict
    from weather_sr.data import Normalizer
    from weather_sr.data.condition import ConditionSpec
    from weather_sr.model.checkpoint import load_checkpoint, save_checkpoint
    from weather_sr.model.downscaling_model import build_unet

    payload = load_checkpoint(_checkpoint(path))
    spec = ConditionSpec(["t2m", "u10"], ["t2m", "u10"],
                         Normalizer.from_dict(payload["normalizer"]), previous=True)
    payload["config"]["data"]["previous"] = True
    torch.manual_seed(0)
    net = build_unet(model_config_from_dict(payload["config"]["model"]), 2, 4, False, spec)
    payload.update(condition=spec.to_dict(), model=net.state_dict(), ema=net.state_dict())
    save_checkpoint(path, payload)
    return path


@pytest.mark.parametrize("coherent", ["off", "noise", "ar"])
def test_torchrun_downscale_equals_one_process(tmp_path: Path, coherent: str) -> None:
    """2 ranks split the (field, member) batches; rank 0 writes the file one process writes;
    so do coherent ensembles (the noise chain followed on every rank; autoregressive members
    field after field)."""
    from test_infer import _checkpoint, _input

    ckpt = (_ar_checkpoint if coherent == "ar" else _checkpoint)(tmp_path / "model.pt")
    inp = _input(tmp_path / "lr.nc")
    extra = {"off": [], "noise": ["--coherent", "noise", "--rho", "0.7"], "ar": []}[coherent]
    outputs = {}
    for n in (1, 2):
        out = tmp_path / f"out{n}.nc"
        # 3 fields x 3 members in batches of 2: 5 batches, ranks take 3 and 2; two chunks
        run = torchrun(n, "downscale", "--checkpoint", str(ckpt), "--input", str(inp),
                       "--output", str(out), "--members", "3", "--steps", "2",
                       "--batch-size", "2", "--chunk-fields", "2", "--device", "cpu",
                       "--no-progress", *extra)
        assert run.returncode == 0, run.stderr[-2000:]
        assert run.stdout.count("wrote ") == 1  # rank 0 alone reports (and writes)
        outputs[n] = xr.load_dataset(out)
    one, two = outputs[1], outputs[2]
    for name in one.data_vars:
        np.testing.assert_array_equal(two[name].values, one[name].values, err_msg=name)
    assert {k for k in one.attrs if one.attrs[k] != two.attrs.get(k)} <= {
        "date_created", "history", "command_line"}  # the output names differ
    assert one.attrs["coherent"] == coherent
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lr.nc", "model.pt", "out1.nc",
                                                          "out2.nc"]


def test_torchrun_downscale_error_on_every_rank_writes_nothing(tmp_path: Path) -> None:
    """A bad option found while sampling fails every rank alike: one-line error, no output."""
    from test_infer import _checkpoint, _input

    ckpt, inp = _checkpoint(tmp_path / "model.pt"), _input(tmp_path / "lr.nc")
    out = tmp_path / "out.nc"
    run = torchrun(2, "downscale", "--checkpoint", str(ckpt), "--input", str(inp), "--output",
                   str(out), "--steps", "2", "--tile", "3", "--device", "cpu", "--no-progress")
    assert run.returncode != 0
    assert run.stderr.count("weather-sr downscale: error: --tile 3: must be a multiple") == 2
    assert "Traceback" not in run.stderr.split("weather-sr downscale: error")[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lr.nc", "model.pt"]
