"""Part "processes" of bench_sampling.py: ``weather-sr downscale`` in 1 and in N processes.

The same input (synthetic LR fields), untrained checkpoint and options run as one process with
all of the machine's threads and under ``torchrun --nproc_per_node N`` with threads / N each
(the CPU is shared out, not added to), side by side: wall time per field (process start-up
included, as a user sees it) and the largest difference between the two outputs.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch


def _downscale(nproc: int, threads: int, argv: list[str]) -> float:
    """Wall seconds of one ``weather-sr downscale`` run (``torchrun`` when ``nproc`` > 1)."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    launch = ([sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc_per_node={nproc}"] if nproc > 1 else [sys.executable])
    t0 = time.perf_counter()
    proc = subprocess.run([*launch, "-m", "weather_sr", *argv], env=env, capture_output=True,
                          text=True, check=False)
    if proc.returncode:
        raise RuntimeError(f"downscale with {nproc} processes failed: {proc.stderr[-2000:]}")
    return time.perf_counter() - t0


def bench_processes(args: argparse.Namespace, device: torch.device, root: Path,
                    checkpoint: Path, lr: Path, n_fields: int) -> None:
    """Print the table; ``lr`` holds ``n_fields`` LR fields for ``checkpoint``."""
    import xarray as xr

    threads = torch.get_num_threads()
    nproc = max(2, min(args.processes, threads))
    per = max(1, threads // nproc)
    common = ["downscale", "--checkpoint", str(checkpoint), "--input", str(lr),
              "--members", str(args.members), "--sampler", "ddim", "--steps", "5",
              "--batch-size", str(args.members), "--device", str(device), "--no-progress"]
    print(f"\nprocesses ({n_fields} fields, {args.members} members, DDIM 5 steps, untrained "
          f"base-32 UNet, device {device}; wall time per field, process start-up included)")
    print(f"{'processes':>9s} {'threads each':>12s} {'s/field':>8s} {'speed-up':>8s}")
    runs = []
    for n, t in ((1, threads), (nproc, per)):
        out = root / f"procs{n}.nc"
        wall = _downscale(n, t, [*common, "--output", str(out)])
        runs.append((n, t, wall / n_fields, out))
        print(f"{n:9d} {t:12d} {wall / n_fields:8.2f} {runs[0][2] / (wall / n_fields):8.2f}",
              flush=True)
    with xr.open_dataset(runs[0][3]) as a, xr.open_dataset(runs[1][3]) as b:
        diff = max(float(np.nanmax(np.abs(a[v].values - b[v].values))) for v in a.data_vars)
        scale = max(float(np.nanstd(a[v].values)) for v in a.data_vars)
    print(f"max |{nproc} processes - 1 process| = {diff:.2e} (field std {scale:.2f}; the "
          "thread counts differ, so float rounding may; tests/test_distributed.py: bit for bit "
          "at equal threads)")
