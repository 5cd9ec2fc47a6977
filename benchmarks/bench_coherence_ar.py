"""Autoregressive coherence on the shipped sample: a model trained with ``data.previous`` at the
demo's budget, sampled over all 25 steps with its own previous fields (``--coherent ar``) and
with zeros for them (``--coherent off``), scored with the demo's independent and
``--coherent noise`` outputs by ``weather-sr score`` (docs/results.md, "Coherent ensembles in
time").

    .venv/bin/python benchmarks/bench_coherence_ar.py --demo demo_output --out /tmp/coherence_ar

``--demo``: a finished demo folder (its ``coherence/`` outputs). The model is the demo's
``diffusion_lam0`` run with ``data.previous=true`` and ``diffusion.target=residual``
(``data.previous`` does not combine with a regression base). Prints the training and sampling
times and the report's "Temporal coherence" tables; the report is in ``--out/report``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import xarray as xr

import weather_sr
from weather_sr.config import load_config
from weather_sr.data import sample_data_path
from weather_sr.demo import FULL, run_overrides
from weather_sr.evaluation.report_tables import temporal_table
from weather_sr.evaluation.score_files import score_files
from weather_sr.training.loop import train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo", type=Path, required=True, help="a finished demo folder")
    parser.add_argument("--out", type=Path, required=True, help="folder to create")
    args = parser.parse_args()
    args.out.mkdir()
    torch.manual_seed(0)
    started = time.perf_counter()
    overrides = run_overrides("diffusion_lam0", FULL, None, "cpu")
    train(load_config("sample", [*overrides, "data.previous=true", "diffusion.target=residual"]),
          args.out / "run", progress=False)
    print(f"training: {time.perf_counter() - started:.0f} s", flush=True)
    model = weather_sr.load_model(args.out / "run" / "checkpoints" / "best.pt")
    with xr.open_dataset(sample_data_path()) as ds:
        sample = ds.load()
    for name, coherent in (("ar", True), ("ar_off", False)):
        started = time.perf_counter()
        out = weather_sr.downscale(sample, model, members=FULL.members, steps=FULL.sampler_steps,
                                   seed=0, coarsen=True, device="cpu", batch_size=16,
                                   coherent=coherent)
        out.to_netcdf(args.out / f"{name}.nc")
        print(f"sampling {name}: {time.perf_counter() - started:.0f} s", flush=True)
    folder = args.demo / "coherence"
    paths = [folder / "independent.nc", folder / "coherent.nc", args.out / "ar.nc",
             args.out / "ar_off.nc"]
    _, results = score_files(paths, sample_data_path(), args.out / "report",
                             names=["independent", "noise", "ar", "ar, previous as zeros"],
                             baselines=False, show_progress=False)
    for channel in model.meta.channels:
        print(f"{channel}\n{temporal_table(results, channel)}")


if __name__ == "__main__":
    main()
