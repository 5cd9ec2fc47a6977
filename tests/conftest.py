"""Shared fixtures: a small synthetic data file and two tiny trained checkpoints on it (a
regression model and a diffusion model on its residual), trained once per test session; one
torch thread for a module (``pytestmark = pytest.mark.usefixtures("one_thread")``)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from weather_sr.config import load_config
from weather_sr.data import synthetic_dataset, write_netcdf
from weather_sr.training.loop import train


@pytest.fixture(scope="module")
def one_thread():
    """Tiny tensors: one thread is faster, and much faster on a shared CPU; the count is
    restored after the module."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def data_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data") / "fields.nc"
    return write_netcdf(synthetic_dataset(20, 32, 32, variables=("t2m", "z"), seed=5), path)


def tiny_overrides(data_path: Path, *extra: str) -> list[str]:
    return [
        f"data.path={data_path}", "data.variables=[t2m, z]", "data.scale_factor=4",
        "data.patch_size=16", "model.base_channels=8", "model.channel_mults=[1, 2]",
        "model.num_res_blocks=1", "model.head_channels=8", "diffusion.timesteps=50",
        "training.batch_size=2", "training.steps=2", "training.warmup_steps=1",
        "training.val_every=100", "training.checkpoint_every=100", "training.val_images=0",
        "training.precision=fp32", "output.tensorboard=false", *extra,
    ]


@pytest.fixture(scope="session")
def checkpoints(data_path: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("runs")
    reg = train(load_config(None, tiny_overrides(data_path, "model.kind=regression")),
                root / "reg", progress=False)
    dif = train(load_config(None, tiny_overrides(
        data_path, "diffusion.target=regression_residual",
        f"diffusion.regression_checkpoint={reg.checkpoint}")), root / "dif", progress=False)
    return {"regression": Path(reg.checkpoint), "diffusion": Path(dif.checkpoint)}


