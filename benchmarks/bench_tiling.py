"""What tiled sampling costs in ensemble quality, on the demo's trained λ = 0 diffusion model.

Tiling (``SamplingOptions.tile`` / ``overlap``, :mod:`weather_sr.inference.tiling`) is not exact
for the shipped UNet: GroupNorm statistics and the middle self-attention are taken per tile. This
benchmark measures the effect on a trained model (issue 14, point 1). It trains the demo's
``regression`` and ``diffusion_lam0`` runs (:mod:`weather_sr.demo`: same widths, batch, learning
rate schedule and seed; λ = 0 on the residual over the regression prediction) on the shipped
sample data, or reuses a ``diffusion_lam0`` checkpoint (``--checkpoint``). Then it downscales the
test split with the default sampler, the same seed and the same members in every arm:

- ``whole``: the whole field in one network call per sample (no tiling, the CLI default);
- tile = P (the model's training patch size, ``data.patch_size``) with overlap P/4 and P/2;
- tile = 2P with overlap P/2 and P.

The regression base is tiled like the denoiser, as ``weather-sr downscale`` does. Per arm and
channel it prints fair CRPS, spread/skill, ensemble-mean RMSE, the members' log-spectral distance
(all frequencies and the upper half), and ``Δ/err`` = mean |tiled − whole| / mean |whole − truth|
of the ensemble mean (0 for ``whole``): how large the change tiling makes is, next to the error
of the untiled ensemble mean. ``cpu s`` is the process CPU time of the arm's sampling (all
threads; scoring excluded).

Training: the demo's budget is 1200 steps on 32 x 32 patches; here the training patch is
``--patch-size`` (default 64, the sample config's ``data.patch_size``, so the arms are tiles 64
and 128) and the default number of steps keeps the demo's number of training pixels
(1200 x (32 / P)²: 300 steps at P = 64); no preview images are drawn while training (they do not
change the weights). The issue-14 figures come from ``--train-steps 200 --threads 1``: 6 CPU
minutes of training and 10 of sampling (23 minutes wall on 2 shared cores). ``--quick``: the demo's
tiny quick budget, 2 members, 3 sampler steps, 2 fields, about a CPU minute; numbers meaningless.

    .venv/bin/python benchmarks/bench_tiling.py [--quick] [--out DIR] [--overwrite] [--threads 1]
    .venv/bin/python benchmarks/bench_tiling.py --checkpoint RUN/checkpoints/best.pt

Writes ``bench_tiling.json`` (every metric of every arm) and the trained runs (``runs/``) to
--out (default ``bench_tiling_out``); an existing non-empty --out is refused unless --overwrite.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import torch

from weather_sr.config import load_config
from weather_sr.core.sampling import DEFAULT_SAMPLER, DEFAULT_STEPS
from weather_sr.demo import FULL, QUICK, DemoBudget, run_overrides
from weather_sr.evaluation.evalset import EvalSet, load_split, model_prediction, score
from weather_sr.evaluation.pipeline import bundle_for
from weather_sr.inference.ensemble import SamplingOptions
from weather_sr.inference.tiling import tile_starts
from weather_sr.model.downscaling_model import DownscalingModel
from weather_sr.model.loading import load_model
from weather_sr.training.loop import train

RESULTS = "bench_tiling.json"
METRICS = (("crps", "crps"), ("spread_skill", "ss"), ("rmse", "rmse"),
           ("member_lsd", "lsd"), ("member_lsd_high", "lsd_hi"))
WIDTH = 8  # characters per number column
NO_PREVIEW = ["training.val_images=0"]  # no preview PNGs (they do not change the weights)


@dataclasses.dataclass(frozen=True)
class Arm:
    """One way of sampling: the whole field (tile None) or tiles of ``tile`` with ``overlap``."""

    name: str
    tile: int | None
    overlap: int


def arms_for(patch: int) -> list[Arm]:
    """Whole field; tiles of the training patch P (overlap P/4, P/2) and of 2P (P/2, P)."""
    sizes = [(patch, patch // 4), (patch, patch // 2), (2 * patch, patch // 2),
             (2 * patch, patch)]
    return [Arm("whole", None, 0)] + [Arm(f"tile {t} / ov {o}", t, o) for t, o in sizes]


def fail(message: str) -> NoReturn:
    """One line on stderr, exit status 2 (bad input), nothing written."""
    print(f"bench_tiling: {message}", file=sys.stderr)
    raise SystemExit(2)


def check_out(out: Path, overwrite: bool, checkpoint: Path | None) -> None:
    """Refuse a non-empty --out unless --overwrite (then only one this benchmark wrote)."""
    if not out.exists():
        return
    if not out.is_dir():
        fail(f"--out {out}: exists and is not a folder")
    if not any(out.iterdir()):
        return
    if not overwrite:
        fail(f"--out {out}: exists and is not empty; give --overwrite or another --out")
    if not ((out / RESULTS).exists() or (out / "runs").is_dir()):
        fail(f"--out {out}: not written by this benchmark (no {RESULTS} or runs/); "
                 "refusing to replace it")
    if checkpoint is not None and out.resolve() in checkpoint.resolve().parents:
        fail(f"--checkpoint {checkpoint} lies inside --out {out}, which --overwrite would "
                 "delete; copy it elsewhere or use another --out")
    shutil.rmtree(out)


def train_demo(budget: DemoBudget, root: Path, device: str) -> tuple[Path, float]:
    """Train the demo's regression and λ = 0 diffusion runs; (diffusion checkpoint, CPU s)."""
    c0 = time.process_time()
    checkpoint: Path | None = None
    for name in ("regression", "diffusion_lam0"):
        t0 = time.perf_counter()
        overrides = run_overrides(name, budget, checkpoint, device) + NO_PREVIEW
        cfg = load_config("sample", overrides)
        result = train(cfg, root / name, progress=False)
        if result.status != "finished" or result.checkpoint is None:
            fail(f"training of {name} did not finish ({result.status})")
        checkpoint = Path(result.checkpoint)
        print(f"trained {name}: {budget.steps} steps on {budget.patch_size}x{budget.patch_size} "
              f"patches in {time.perf_counter() - t0:.0f} s -> {checkpoint}", flush=True)
    assert checkpoint is not None
    return checkpoint, time.process_time() - c0


def delta_ratio(tiled: np.ndarray, whole: np.ndarray, data: EvalSet) -> list[float]:
    """Per channel: mean |tiled − whole| / mean |whole − truth| over valid pixels.

    ``tiled`` and ``whole`` are ``[N, C, H, W]`` (ensemble means or single members stacked into
    N); the truth is repeated to match when N is a multiple of the number of fields.
    """
    truth = np.nan_to_num(data.truth)
    mask = data.mask
    reps = tiled.shape[0] // truth.shape[0]
    truth, mask = np.repeat(truth, reps, axis=0), np.repeat(mask, reps, axis=0)
    valid = np.broadcast_to(mask > 0, tiled.shape)
    out = []
    for c in range(tiled.shape[1]):
        v = valid[:, c]
        change = np.abs(tiled[:, c] - whole[:, c])[v].mean()
        error = np.abs(whole[:, c] - truth[:, c])[v].mean()
        out.append(float(change / error))
    return out


def members_flat(ensemble: np.ndarray) -> np.ndarray:
    """``[N, M, C, H, W]`` -> ``[N * M, C, H, W]`` member-major within each field."""
    n, m = ensemble.shape[:2]
    return ensemble.reshape(n * m, *ensemble.shape[2:])


def run_arms(model: DownscalingModel, data: EvalSet, base: SamplingOptions,
             arms: list[Arm], device: str) -> list[dict[str, Any]]:
    """Sample and score every arm; the first arm must be ``whole``."""
    rows: list[dict[str, Any]] = []
    whole: np.ndarray | None = None
    h, w = data.truth.shape[-2:]
    for arm in arms:
        options = dataclasses.replace(base, tile=arm.tile, overlap=arm.overlap)
        c0, t0 = time.process_time(), time.perf_counter()
        ensemble = model_prediction(model, data, options, device=device)
        cpu, wall = time.process_time() - c0, time.perf_counter() - t0
        result = score(data, ensemble)
        if whole is None:
            whole = ensemble
        mean_ratio = delta_ratio(ensemble.mean(axis=1), whole.mean(axis=1), data)
        member_ratio = delta_ratio(members_flat(ensemble), members_flat(whole), data)
        tiles = 1 if arm.tile is None else (
            len(tile_starts(h, min(arm.tile, h), min(arm.overlap, min(arm.tile, h) - 1)))
            * len(tile_starts(w, min(arm.tile, w), min(arm.overlap, min(arm.tile, w) - 1),
                              periodic=data.periodic)))
        rows.append({
            "arm": arm.name, "tile": arm.tile, "overlap": arm.overlap, "tiles_per_field": tiles,
            "cpu_seconds": cpu, "wall_seconds": wall,
            "delta_over_error_ensemble_mean": dict(zip(data.channels, mean_ratio, strict=True)),
            "delta_over_error_member": dict(zip(data.channels, member_ratio, strict=True)),
            "metrics": result["metrics"],
        })
        print(f"{arm.name}: {tiles} tile(s) per field, {cpu:.0f} CPU s, {wall:.0f} s",
              flush=True)
    return rows


def table(rows: list[dict[str, Any]], channels: list[str]) -> str:
    """One text table: a row per arm, a column group per channel, CPU seconds last."""
    cols = [label for _, label in METRICS] + ["Δ/err"]
    group = len(cols) * (WIDTH + 1) - 1
    lines = [f"{'':16s} | " + " | ".join(f"{c:^{group}s}" for c in channels) + " |",
             f"{'arm':16s} | " + " | ".join(" ".join(f"{c:>{WIDTH}s}" for c in cols)
                                            for _ in channels) + f" | {'cpu s':>{WIDTH}s}"]
    lines.append("-" * len(lines[1]))
    for row in rows:
        groups = []
        for c in channels:
            m = row["metrics"][c]
            values = [m[key] for key, _ in METRICS] + [row["delta_over_error_ensemble_mean"][c]]
            groups.append(" ".join(f"{v:{WIDTH}.4f}" for v in values))
        lines.append(f"{row['arm']:16s} | " + " | ".join(groups)
                     + f" | {row['cpu_seconds']:{WIDTH}.0f}")
    return "\n".join(lines)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="tiny training, 2 members, 3 sampler steps, 2 fields (~1 minute)")
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help="a trained diffusion_lam0 checkpoint (skips training)")
    parser.add_argument("--out", type=Path, default=Path("bench_tiling_out"))
    parser.add_argument("--overwrite", action="store_true")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--patch-size", type=int, default=64,
                        help="training patch size P (default 64: tiles 64 and 128)")
    parser.add_argument("--train-steps", type=int, default=None,
                        help="training steps per run (default: the demo's training pixels)")
    parser.add_argument("--members", type=int, default=None, help="default 8 (--quick: 2)")
    parser.add_argument("--batch-size", type=int, default=16,
                        help="(field, member) pairs per chunk and tile-samples per network call")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's; 1 is faster on a busy machine)")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    check_out(args.out, args.overwrite, args.checkpoint)
    if args.threads is not None:
        if args.threads < 1:
            fail(f"--threads {args.threads}: give a positive integer")
        torch.set_num_threads(args.threads)
    demo = QUICK if args.quick else FULL
    pixels = demo.steps * demo.patch_size**2
    steps = args.train_steps or max(1, round(pixels / args.patch_size**2))
    budget = dataclasses.replace(demo, steps=steps, patch_size=args.patch_size, val_every=steps)
    started = time.process_time()
    train_cpu = 0.0
    if args.checkpoint is None:
        args.out.mkdir(parents=True, exist_ok=True)
        checkpoint, train_cpu = train_demo(budget, args.out / "runs", args.device)
    else:
        checkpoint = args.checkpoint
    model = load_model(checkpoint, args.device)
    if model.kind != "diffusion":
        fail(f"--checkpoint {checkpoint}: a {model.kind} model; give a diffusion checkpoint")
    assert model.meta is not None
    patch = int(model.meta.config.data.patch_size)
    multiple = 2 ** (int(getattr(model.net, "levels", 1)) - 1)
    arms = arms_for(patch)
    for arm in arms[1:]:
        assert arm.tile is not None
        if arm.tile % multiple or not 0 < arm.overlap < arm.tile:
            fail(f"patch size {patch}: tile {arm.tile} / overlap {arm.overlap} do not fit "
                     f"this UNet (multiple of {multiple}, 0 < overlap < tile)")
    data = load_split(bundle_for(model, None), "test", demo.max_fields)
    members = args.members or demo.members
    sampler_steps = demo.sampler_steps if args.quick else DEFAULT_STEPS
    base = SamplingOptions(sampler=DEFAULT_SAMPLER, steps=sampler_steps, seed=args.seed,
                           members=members, batch_size=args.batch_size,
                           pad_multiple=multiple, periodic_x=data.periodic)
    n, _, h, w = data.truth.shape
    print(f"test split: {n} fields of {h}x{w}, {members} members, {DEFAULT_SAMPLER} "
          f"{sampler_steps} steps, seed {args.seed}, training patch {patch}", flush=True)
    rows = run_arms(model, data, base, arms, args.device)
    total_cpu = time.process_time() - started
    text = table(rows, data.channels)
    print(f"\nλ = 0 demo model ({checkpoint}), test split ({n} fields, {h}x{w}), {members} "
          f"members, {DEFAULT_SAMPLER} {sampler_steps} steps, seed {args.seed}; training patch "
          f"{patch}; ss = spread/skill, lsd / lsd_hi = member LSD all / upper half, Δ/err = "
          "mean |tiled - whole| / mean |whole - truth| of the ensemble mean\n")
    print(text)
    print(f"\nCPU time: training {train_cpu / 60:.1f} min, total {total_cpu / 60:.1f} min")
    args.out.mkdir(parents=True, exist_ok=True)
    record = {
        "checkpoint": str(checkpoint), "trained_here": args.checkpoint is None,
        "training": None if args.checkpoint is not None else dataclasses.asdict(budget),
        "training_patch_size": patch, "quick": args.quick, "n_fields": n, "shape": [h, w],
        "members": members, "sampler": DEFAULT_SAMPLER, "sampler_steps": sampler_steps,
        "seed": args.seed, "batch_size": args.batch_size, "device": args.device,
        "torch_threads": torch.get_num_threads(),
        "train_cpu_seconds": train_cpu, "total_cpu_seconds": total_cpu,
        "arms": rows, "table": text,
    }
    (args.out / RESULTS).write_text(json.dumps(record, indent=1, default=float) + "\n")
    print(f"wrote {args.out / RESULTS}")


if __name__ == "__main__":
    main()
