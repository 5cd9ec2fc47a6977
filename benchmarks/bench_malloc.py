"""Allocation churn on the CPU: ``weather-sr downscale`` with and without the malloc tuning.

Runs the same small downscale (a random-weight base-32 UNet of the sample config, 2 channels,
2 fields x 8 members, DPM-Solver++(2M) with 10 steps, a 144 x 192 HR field) in fresh
subprocesses, once with ``WEATHER_SR_NO_MALLOC_TUNING=1`` (glibc's default thresholds) and once
by default (:mod:`weather_sr.runtime` raises them), and prints wall time, user and system CPU
time and peak RSS of each child (``os.wait4``: the child's own ``getrusage``) with their ratios.

    python benchmarks/bench_malloc.py [--size 144x192] [--repeat 1] [--threads N]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def make_checkpoint(path: Path) -> Path:
    """Random-weight base-32 UNet (the sample config's model) for t2m, u10, scale factor 2."""
    from weather_sr.config import config_to_dict, load_config, model_config_from_dict
    from weather_sr.data import Normalizer
    from weather_sr.model.checkpoint import save_checkpoint
    from weather_sr.model.downscaling_model import build_unet

    cfg = config_to_dict(load_config("sample", ["data.variables=[t2m, u10]"]))
    cfg["data"]["scale_factor"] = 2
    torch.manual_seed(0)
    net = build_unet(model_config_from_dict(cfg["model"]), 2, 2, True)
    state = net.state_dict()
    norm = Normalizer("channel", ["t2m", "u10"], np.full((2, 1, 1), 280.0),
                      np.full((2, 1, 1), 5.0))
    save_checkpoint(path, {"step": 0, "model": state, "ema": state, "config": cfg,
                           "channels": ["t2m", "u10"], "units": ["K", "K"],
                           "normalizer": norm.to_dict(), "scale_factor": 2,
                           "interpolation": "bicubic", "grid": None, "regression": None})
    return path


def make_input(path: Path, ny: int, nx: int) -> Path:
    from weather_sr.data import synthetic_dataset

    ds = synthetic_dataset(2, ny, nx, variables=("t2m", "u10"), seed=1)
    for name in ("t2m", "u10"):
        ds[name].attrs["units"] = "K"
    ds.to_netcdf(path)
    return path


def run_once(ckpt: Path, inp: Path, out: Path, *, tuned: bool, threads: int | None
             ) -> dict[str, float]:
    env = dict(os.environ)
    env.pop("WEATHER_SR_NO_MALLOC_TUNING", None)
    for name in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_"):
        env.pop(name, None)  # measure the product, not the user's environment
    if not tuned:
        env["WEATHER_SR_NO_MALLOC_TUNING"] = "1"
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    cmd = [sys.executable, "-m", "weather_sr", "downscale", "--checkpoint", str(ckpt),
           "--input", str(inp), "--output", str(out), "--members", "8", "--steps", "10",
           "--sampler", "dpmpp_2m", "--device", "cpu", "--no-progress", "--overwrite"]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"downscale failed with exit status {proc.returncode}")
    scale = 1024.0 if sys.platform.startswith("linux") else 1.0  # ru_maxrss: kB on Linux
    return {"wall_s": wall, "user_s": usage.ru_utime, "sys_s": usage.ru_stime,
            "peak_rss_mb": usage.ru_maxrss * scale / 2**20}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="144x192", help="HR field HxW (default: %(default)s)")
    parser.add_argument("--repeat", type=int, default=1, help="runs per mode (median)")
    parser.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS")
    args = parser.parse_args()
    h, w = (int(v) for v in args.size.lower().split("x"))
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        ckpt = make_checkpoint(folder / "model.pt")
        inp = make_input(folder / "lr.nc", h // 2, w // 2)
        runs: dict[str, list[dict[str, float]]] = {"untuned": [], "tuned": []}
        for _ in range(args.repeat):  # alternate, so a load change hits both alike
            for mode in runs:
                runs[mode].append(run_once(ckpt, inp, folder / "out.nc", tuned=mode == "tuned",
                                           threads=args.threads))
    med = {mode: {k: float(np.median([r[k] for r in rs])) for k in rs[0]}
           for mode, rs in runs.items()}
    print(f"downscale, random-weight base-32 UNet, 2 fields x 8 members, dpmpp_2m 10 steps, "
          f"{h}x{w} HR, torch threads {args.threads or torch.get_num_threads()}, "
          f"median of {args.repeat}")
    print(f"{'':14s}{'untuned':>10s}{'tuned':>10s}{'ratio':>8s}")
    for key in ("wall_s", "user_s", "sys_s", "peak_rss_mb"):
        a, b = med["untuned"][key], med["tuned"][key]
        print(f"{key:14s}{a:10.2f}{b:10.2f}{b / a if a else float('nan'):8.2f}")


if __name__ == "__main__":
    main()
