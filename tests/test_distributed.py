"""Data-parallel training with 2 gloo processes on CPU: disjoint data, identical weights."""

from __future__ import annotations

import csv
import os
import socket
from pathlib import Path

import torch
import torch.multiprocessing as mp

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

    def record(trainer) -> None:
        seen.append(list(trainer.last_indices))
        holder["net"] = trainer.net

    result = train(cfg, run_dir, progress=False, callback=record)
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
