"""Sampling side by side: samplers, tiling, streaming memory, processes, precision.

Part 1, samplers: on test fields of the shipped sample data, with a small model trained here in
a minute or two (or ``--checkpoint``), each sampler at several step counts: network evaluations
(NFE), wall time relative to 1000-step ancestral sampling, fair CRPS and log-spectral distance to
the truth (:mod:`weather_sr.evaluation.metrics` / :mod:`weather_sr.evaluation.spectra`).
Target: some sampler at <= 25 NFE within 5% of the 1000-step ancestral CRPS.

Part 2, tiling: a few DDIM steps on domains of 1x, 4x and 16x the area with a fixed tile, each in a
fresh subprocess: time per step and peak memory (CUDA: ``max_memory_allocated``; CPU: the
process's peak RSS above a baseline process that only builds the model), plus the largest network
input. Targets: time ratio <= 1.1 x area ratio; model memory flat.

Part 3, streaming memory: ``weather-sr downscale`` (an untrained UNet: memory does not depend on
the weights) on 1, 8 and 32 LR fields, each run in a fresh process: its peak RSS (``ru_maxrss`` and
``VmHWM``) and wall time. Target: the 32-field peak within 1.2x of the 1-field peak (the fields
are read, sampled and written ``--chunk-fields`` at a time). Also 1 field with 4x the members:
memory grows with ``--chunk-fields`` x ``--members``, the ensemble held for one chunk.

Part 4, processes (``sampling_processes.py``): the same ``downscale`` in one process and under
``torchrun`` with the threads shared out: time per field and the difference of the outputs.

Part 5, precision (``sampling_precision.py``): float32 against bf16 autocast, seconds per
network evaluation, system-time share, and CRPS / spread-skill / LSD for the same seeds.

Part 6, tiling-quality: runs ``bench_tiling.py`` (what tiling costs in CRPS, spread-skill and
LSD on the demo's trained model; ``--checkpoint``, ``--out`` and ``--quick`` passed on).

    .venv/bin/python benchmarks/bench_sampling.py --quick   # a few minutes on an idle laptop CPU
    .venv/bin/python benchmarks/bench_sampling.py --device cuda --checkpoint runs/x/best.pt
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from weather_sr.devices import select_device
from weather_sr.inference.ensemble import SamplingOptions, sample_ensemble
from weather_sr.inference.tiling import tile_starts

# ---------------------------------------------------------------- part 1: samplers


def train_small(quick: bool, device: str, steps: int | None) -> Path:
    """Train a small residual diffusion model on the sample data; return its checkpoint."""
    from weather_sr.config import config_from_dict
    from weather_sr.training.loop import train

    run_dir = Path(tempfile.mkdtemp(prefix="bench_sampling_"))
    raw = {
        "data": {"path": "sample", "variables": ["pwat", "btmp"], "scale_factor": 4,
                 "patch_size": 32 if quick else 64},
        "model": {"base_channels": 16 if quick else 32, "channel_mults": [1, 2, 2],
                  "num_res_blocks": 1},
        "diffusion": {"timesteps": 1000, "target": "residual", "lam": 1.0},
        "training": {"steps": steps or (150 if quick else 3000), "batch_size": 8, "lr": 1e-3,
                     "warmup_steps": 20, "val_every": 10**6, "checkpoint_every": 10**6,
                     "device": device, "ema_decay": 0.99},
        "output": {"run_dir": str(run_dir), "tensorboard": False},
    }
    t0 = time.perf_counter()
    result = train(config_from_dict(raw, "bench"), run_dir, progress=False)
    print(f"trained {result.step} steps in {time.perf_counter() - t0:.0f} s -> {result.checkpoint}")
    assert result.checkpoint is not None
    return Path(result.checkpoint)


class CountingModel:
    """Proxy of a DownscalingModel whose denoiser counts network calls."""

    def __init__(self, model: Any) -> None:
        self.model, self.calls = model, 0
        self.channels, self.schedule = model.channels, model.schedule
        self.target, self.regression = model.target, model.regression

    @property
    def denoiser(self):
        inner = self.model.denoiser

        def eps(x: torch.Tensor, y: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            self.calls += 1
            return inner(x, y, t)

        return eps

    def base(self, cond: torch.Tensor) -> torch.Tensor:
        return self.model.base(cond)

    def condition(self, cond: torch.Tensor, base: torch.Tensor | None = None) -> torch.Tensor:
        return self.model.condition(cond, base)

    def unscale_target(self, z0: torch.Tensor) -> torch.Tensor:
        return self.model.unscale_target(z0)


def load_test_fields(model: Any, n_fields: int, crop: tuple[int, int] | None):
    """(truth [N, C, H, W] physical, cond [N, C, H, W] normalised, normalizer): test split of
    the checkpoint's own training data, built as for its training run."""
    from weather_sr.evaluation.pipeline import bundle_for

    bundle = bundle_for(model, None)
    normalizer = model.meta.make_normalizer()
    items = [bundle.test[i] for i in range(min(n_fields, len(bundle.test)))]
    hr = torch.stack([it["hr"] for it in items])
    cond = torch.stack([it["cond"] for it in items])
    if crop is not None:
        h, w = hr.shape[-2:]
        y0, x0 = (h - crop[0]) // 2, (w - crop[1]) // 2
        hr = hr[..., y0 : y0 + crop[0], x0 : x0 + crop[1]]
        cond = cond[..., y0 : y0 + crop[0], x0 : x0 + crop[1]]
    return normalizer.denormalise(hr.double()).numpy(), cond, normalizer


def scores(truth: np.ndarray, ens: np.ndarray) -> tuple[float, float, float]:
    """Fair CRPS, log-spectral distance (dB, members vs truth) and spread-skill ratio, each
    averaged over channels."""
    from weather_sr.evaluation.metrics import crps_fair, spread_skill
    from weather_sr.evaluation.spectra import log_spectral_distance, radial_psd

    crps = float(np.mean(crps_fair(truth, ens)))
    lsd = []
    for c in range(truth.shape[1]):
        p_true = radial_psd(truth[:, c], window="hann")
        p_pred = radial_psd(ens[:, :, c], window="hann")
        lsd.append(log_spectral_distance(p_pred.power, p_true.power, p_true.freq))
    ssr = float(np.mean(spread_skill(truth, ens)["spread_skill"]))
    return crps, float(np.mean(lsd)), ssr


def bench_samplers(args: argparse.Namespace, device: torch.device) -> None:
    from weather_sr.model.loading import load_model

    ckpt = (Path(args.checkpoint) if args.checkpoint
            else train_small(args.quick, str(device), args.train_steps))
    model = load_model(ckpt, device)
    crop = (32, 32) if args.quick else None
    truth, cond, normalizer = load_test_fields(model, args.fields, crop)
    # normalised CRPS: divide by each channel's std so that channels weigh alike
    std = normalizer.channel_std()[None, :, None, None]
    members = args.members
    ks = (10, 20, 50) if args.quick else (10, 20, 50, 100)
    # (name, sampler, steps, eta); DDIM eta = 1 is the stochastic (ancestral-like) DDIM
    plan = [("ancestral", "ancestral", 1000, 0.0)] + [
        (name, s, k, eta) for name, s, eta in
        (("ddim", "ddim", 0.0), ("ddim_eta1", "ddim", 1.0), ("dpmpp_2m", "dpmpp_2m", 0.0))
        for k in ks]
    rows = []
    for name, sampler, steps, eta in plan:
        proxy = CountingModel(model)
        opts = SamplingOptions(sampler=sampler, steps=steps, eta=eta, seed=0, members=members,
                               batch_size=len(truth) * members)
        t0 = time.perf_counter()
        x = sample_ensemble(proxy, cond, opts, device=device)
        wall = time.perf_counter() - t0
        ens = normalizer.denormalise(x.double()).numpy()
        crps, lsd, ssr = scores(truth / std, ens / std[:, None])
        rows.append((name, steps, proxy.calls, wall, crps, lsd, ssr))
        print(f"  {name:9s} {steps:5d} steps: NFE {proxy.calls:5d}  {wall:7.1f} s  "
              f"CRPS {crps:.4f}  LSD {lsd:.2f} dB  spread/skill {ssr:.2f}", flush=True)
    ref = rows[0]
    print(f"\nsamplers ({len(truth)} test fields {truth.shape[-2]}x{truth.shape[-1]}, "
          f"{members} members, device {device}; CRPS in channel-std units)")
    print(f"{'sampler':10s} {'steps':>5s} {'NFE':>5s} {'time/anc':>9s} {'CRPS':>8s} "
          f"{'CRPS/anc':>9s} {'LSD dB':>7s} {'spread/skill':>12s}")
    best = None
    for name, steps, nfe, wall, crps, lsd, ssr in rows:
        print(f"{name:10s} {steps:5d} {nfe:5d} {wall / ref[3]:9.3f} {crps:8.4f} "
              f"{crps / ref[4]:9.3f} {lsd:7.2f} {ssr:12.2f}")
        if nfe <= 25 and name != "ancestral" and (best is None or crps < best[4]):
            best = (name, steps, nfe, wall, crps, lsd)
    if best is not None:
        ok = best[4] <= 1.05 * ref[4]
        print(f"target (<= 25 NFE within 5% of 1000-step ancestral CRPS): "
              f"{'MET' if ok else 'NOT MET'} by {best[0]} {best[1]} steps "
              f"(CRPS ratio {best[4] / ref[4]:.3f})")
    if device.type != "cpu":  # same seed, same members on the CPU (noise is drawn on the CPU)
        opts = SamplingOptions(sampler="ddim", steps=10, eta=1.0, seed=3, members=2)
        a = sample_ensemble(model, cond[:1], opts, device=device)
        b = sample_ensemble(load_model(ckpt, "cpu"), cond[:1], opts)
        print(f"{device} vs cpu, DDIM eta=1 10 steps, same seed: max |diff| "
              f"{float((a - b).abs().max()):.2e} (normalised units; member std "
              f"{float(a.std()):.2f})")


# ---------------------------------------------------------------- part 2: tiling


def child(spec: dict[str, Any]) -> dict[str, Any]:
    """One domain in a fresh process: time per DDIM step and peak memory."""
    from weather_sr.config import model_config_from_dict
    from weather_sr.model.downscaling_model import DownscalingModel, build_unet
    from weather_sr.model.loading import load_model

    device = torch.device(spec["device"])
    torch.set_num_threads(spec["threads"])
    if spec.get("checkpoint"):
        model = load_model(spec["checkpoint"], device)
    else:  # untrained UNet of the sample-config size
        from weather_sr.core.schedule import make_schedule

        cfg = {"base_channels": spec["base"], "channel_mults": [1, 2, 2], "num_res_blocks": 1,
               "attention_levels": [], "mid_attention": True, "head_channels": 32,
               "dropout": 0.0, "groups": 8, "padding_y": "zeros", "padding_x": "zeros"}
        net = build_unet(model_config_from_dict(cfg), 2, 2, False).to(device).eval()
        model = DownscalingModel(net, kind="diffusion", target="residual", channels=2,
                                 schedule=make_schedule("linear", 1000))
    h, w = spec["h"], spec["w"]
    if h == 0:  # baseline: model built, nothing sampled
        return {"rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    cond = torch.randn(1, 2, h, w, generator=torch.Generator().manual_seed(0))
    opts = SamplingOptions(sampler="ddim", steps=spec["steps"], members=spec["members"],
                           batch_size=spec["batch"], tile=spec["tile"], overlap=spec["overlap"],
                           pad_multiple=4)
    # warm-up: one step on the whole domain (allocator, kernel selection for every batch shape)
    sample_ensemble(model, cond, SamplingOptions(**{**opts.__dict__, "steps": 1}), device=device)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    best = math.inf
    for _ in range(spec["repeats"]):  # best of n: the machine may be shared
        t0 = time.perf_counter()
        sample_ensemble(model, cond, opts, device=device)
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, (time.perf_counter() - t0) / spec["steps"])
    out = {"time": best, "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if device.type == "cuda":
        out["cuda_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def run_child(spec: dict[str, Any]) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)],
                          capture_output=True, text=True, check=False)
    if proc.returncode:
        raise RuntimeError(f"child failed: {proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def bench_tiling(args: argparse.Namespace, device: torch.device) -> None:
    side, tile, overlap = (64, 32, 8) if args.quick else (128, 64, 16)
    common = {"device": str(device), "threads": torch.get_num_threads(), "tile": tile,
              "overlap": overlap, "steps": 2 if args.quick else 5, "members": 2, "batch": 8,
              "repeats": 2 if args.quick else 3,
              "base": 16 if args.quick else 32, "checkpoint": args.checkpoint}
    base = run_child({**common, "h": 0, "w": 0})
    print(f"\ntiling (tile {tile}, overlap {overlap}, 2 members, batch 8, device {device}; "
          f"baseline process RSS {base['rss_mb']:.0f} MB)")
    print(f"{'domain':>9s} {'area x':>6s} {'tiles':>5s} {'s/step':>8s} {'time x':>7s} "
          f"{'time x / area x':>15s} {'RSS-base MB':>11s} {'CUDA MB':>8s}")
    first = None
    for k in (1, 2, 4):
        h = w = side * k
        r = run_child({**common, "h": h, "w": w})
        tiles = len(tile_starts(h, tile, overlap)) * len(tile_starts(w, tile, overlap))
        first = first or r
        tx = r["time"] / first["time"]
        cuda = f"{r['cuda_mb']:8.1f}" if "cuda_mb" in r else f"{'-':>8s}"
        print(f"{h:4d}x{w:<4d} {k * k:6d} {tiles:5d} {r['time']:8.3f} {tx:7.2f} "
              f"{tx / (k * k):15.2f} {r['rss_mb'] - base['rss_mb']:11.0f} {cuda}", flush=True)
    untiled = run_child({**common, "h": side * 4, "w": side * 4, "tile": None})
    cuda = f", CUDA {untiled['cuda_mb']:.1f} MB" if "cuda_mb" in untiled else ""
    print(f"untiled {side * 4}x{side * 4}: {untiled['time']:.3f} s/step, RSS-base "
          f"{untiled['rss_mb'] - base['rss_mb']:.0f} MB{cuda}")
    print("(the field buffers themselves, x_t, cond, output, grow with the area: "
          f"{16 * 2 * 2 * 4 * side * side * 4 / 2**20:.1f} MB at 16x)")


# ---------------------------------------------------------------- part 3: streaming memory


def untrained_checkpoint(path: Path, base: int) -> Path:
    """An untrained diffusion checkpoint (channels t2m, u10 in K, scale 4, T = 1000)."""
    from weather_sr.config import RunConfig, config_to_dict, model_config_from_dict
    from weather_sr.data import Normalizer
    from weather_sr.model.checkpoint import save_checkpoint
    from weather_sr.model.downscaling_model import build_unet

    ch = ["t2m", "u10"]
    cfg = config_to_dict(RunConfig())
    cfg["data"].update(variables=ch, scale_factor=4)
    cfg["model"].update(base_channels=base, channel_mults=[1, 2, 2], num_res_blocks=1)
    torch.manual_seed(0)
    state = build_unet(model_config_from_dict(cfg["model"]), 2, 2, False).state_dict()
    norm = Normalizer("channel", ch, np.full((2, 1, 1), 280.0), np.full((2, 1, 1), 5.0))
    save_checkpoint(path, {"step": 0, "model": state, "ema": state, "config": cfg,
                           "channels": ch, "units": ["K", "K"], "normalizer": norm.to_dict(),
                           "scale_factor": 4, "interpolation": "bicubic", "grid": None,
                           "regression": None})
    return path


def _vmhwm_mb() -> float:
    """Peak resident set size of this process from /proc (MB; 0 where there is no /proc)."""
    try:
        line = next(x for x in Path("/proc/self/status").read_text().splitlines()
                    if x.startswith("VmHWM:"))
    except (OSError, StopIteration):
        return 0.0
    return float(line.split()[1]) / 1024


def child_downscale(spec: dict[str, Any]) -> dict[str, Any]:
    """One ``weather-sr downscale`` in this fresh process: exit status, peak memory, time."""
    from weather_sr.cli import main as cli

    torch.set_num_threads(spec["threads"])
    t0 = time.perf_counter()
    code = cli(spec["argv"])
    return {"rc": code, "wall": time.perf_counter() - t0, "hwm_mb": _vmhwm_mb(),
            "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def bench_memory(args: argparse.Namespace, device: torch.device) -> None:
    from weather_sr.data import synthetic_dataset

    root = Path(tempfile.mkdtemp(prefix="bench_stream_"))
    ny, nx = (24, 32) if args.quick else (36, 48)
    steps, base = (2, 16) if args.quick else (5, 32)
    ckpt = untrained_checkpoint(root / "model.pt", base)
    synthetic_dataset(32, ny, nx, variables=("t2m", "u10"), seed=0).to_netcdf(root / "lr.nc")
    common = ["downscale", "--checkpoint", str(ckpt),
              "--sampler", "ddim", "--steps", str(steps), "--batch-size", str(args.members),
              "--device", str(device), "--no-progress"]
    print(f"\nstreaming memory (downscale of {ny}x{nx} -> {4 * ny}x{4 * nx}, 2 channels, "
          f"{args.members} members, DDIM {steps} steps, base {base} untrained UNet, "
          f"batch size {args.members}: the same network batches whatever the number of fields; "
          f"--chunk-fields 8, device {device})")
    print(f"{'fields':>6s} {'format':>6s} {'members':>7s} {'peak RSS MB':>11s} {'VmHWM MB':>9s} "
          f"{'s/field':>8s} {'ensemble MB':>11s}")
    peaks = {}
    m4 = 4 * args.members
    for n, fmt, members in ((1, "nc", args.members), (8, "nc", args.members),
                            (32, "nc", args.members), (32, "zarr", args.members), (1, "nc", m4)):
        with xr_open(root / "lr.nc") as ds:
            ds.isel(time=slice(0, n)).to_netcdf(root / f"lr{n}.nc")
        argv = [*common, "--input", str(root / f"lr{n}.nc"), "--output",
                str(root / f"out{n}_{members}.{fmt}"), "--members", str(members)]
        r = run_child({"kind": "downscale", "threads": torch.get_num_threads(), "argv": argv})
        if r["rc"] != 0:
            raise RuntimeError(f"downscale of {n} fields failed with exit status {r['rc']}")
        whole = n * members * 2 * (4 * ny) * (4 * nx) * 4 / 2**20  # float32, at once
        peaks[(n, fmt, members)] = r["rss_mb"]
        print(f"{n:6d} {fmt:>6s} {members:7d} {r['rss_mb']:11.0f} {r['hwm_mb']:9.0f} "
              f"{r['wall'] / n:8.2f} {whole:11.1f}", flush=True)
    one = peaks[(1, "nc", args.members)]
    ratio = peaks[(32, "nc", args.members)] / one
    print(f"peak RSS 32 fields / 1 field: {ratio:.3f} (target <= 1.2: "
          f"{'MET' if ratio <= 1.2 else 'NOT MET'}); 8 fields / 1 field: "
          f"{peaks[(8, 'nc', args.members)] / one:.3f}; 1 field with {m4} members / "
          f"{args.members}: {peaks[(1, 'nc', m4)] / one:.3f} (memory grows with the members of "
          "a chunk)")


def xr_open(path: Path):  # -> xarray.Dataset (xarray imported only by the parts that need it)
    import xarray as xr

    return xr.open_dataset(path)


PARTS = ("all", "samplers", "tiling", "memory", "precision", "processes", "tiling-quality")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=None, help="use this checkpoint (else train one)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--quick", action="store_true", help="small model, crops, fewer steps")
    parser.add_argument("--train-steps", type=int, default=None,
                        help="training steps of the model trained here (150 quick, 3000 full)")
    parser.add_argument("--members", type=int, default=4)
    parser.add_argument("--fields", type=int, default=2)
    parser.add_argument("--part", choices=PARTS, default="all")
    parser.add_argument("--repeats", type=int, default=3,
                        help="precision part: timed network evaluations per precision")
    parser.add_argument("--processes", type=int, default=2,
                        help="processes part: torchrun processes against one")
    parser.add_argument("--out", default=None,
                        help="tiling-quality part: bench_tiling.py's --out (default its own)")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        spec = json.loads(args.child)
        print(json.dumps(child_downscale(spec) if spec.get("kind") == "downscale"
                         else child(spec)))
        return
    device = select_device(args.device)
    torch.manual_seed(0)
    if args.part in ("all", "samplers"):
        bench_samplers(args, device)
    if args.part in ("all", "tiling"):
        bench_tiling(args, device)
    if args.part in ("all", "memory"):
        bench_memory(args, device)
    if args.part in ("all", "processes"):
        from sampling_processes import bench_processes

        from weather_sr.data import synthetic_dataset

        root = Path(tempfile.mkdtemp(prefix="bench_procs_"))
        n = 2 if args.quick else 8
        synthetic_dataset(n, 36, 48, variables=("t2m", "u10"), seed=0).to_netcdf(root / "lr.nc")
        bench_processes(args, device, root, untrained_checkpoint(root / "model.pt", 32),
                        root / "lr.nc", n)
    if args.part in ("all", "tiling-quality"):  # bench_tiling.py: what tiling costs in quality
        forward = [*(["--quick"] if args.quick else []),
                   *(["--checkpoint", args.checkpoint] if args.checkpoint else []),
                   *(["--out", args.out, "--overwrite"] if args.out else [])]
        subprocess.run([sys.executable, str(Path(__file__).with_name("bench_tiling.py")),
                        *forward], check=True)
    if args.part in ("all", "precision"):
        from sampling_precision import bench_precision

        from weather_sr.model.loading import load_model
        from weather_sr.runtime import tune_malloc

        tune_malloc()  # as every weather-sr command does (the system-time share depends on it)
        ckpt = (Path(args.checkpoint) if args.checkpoint
                else train_small(args.quick, str(device), args.train_steps))
        model = load_model(ckpt, device)
        truth, cond, normalizer = load_test_fields(model, args.fields,
                                                   (32, 32) if args.quick else None)
        bench_precision(args, device, model, truth, cond, normalizer, scores)


if __name__ == "__main__":
    main()
