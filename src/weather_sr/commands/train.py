"""`weather-sr train --config C [--run-dir D] [--resume] [--overwrite] [key=value ...]`.

Trains a diffusion or regression model from one YAML config (see configs/). Overrides are dotted
keys with YAML values, e.g. ``training.steps=200 diffusion.lam=0``. ``--dry-run`` prints the
resolved config and exits. Under ``torchrun --nproc_per_node N -m weather_sr train ...`` the run
is data-parallel (DDP).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from weather_sr.errors import UserError


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        "-c",
        help="YAML run config, or 'sample' (default: with --resume the run's config.yaml)",
    )
    parser.add_argument("--run-dir", help="run folder (default: output.run_dir of the config)")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --run-dir from its latest checkpoint",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing run folder (one weather-sr created) once the new run ends",
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="print the resolved config (YAML) and exit"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY=VALUE",
        help="config overrides, e.g. training.steps=200 diffusion.lam=0",
    )


def run(args: argparse.Namespace) -> int:
    from weather_sr.config import config_to_yaml, load_config

    bad = [o for o in args.overrides if "=" not in o]
    if bad:
        raise UserError(f"override {bad[0]!r} must look like section.key=value")
    config = args.config
    if config is None and args.resume and args.run_dir:
        saved = Path(args.run_dir) / "config.yaml"
        config = saved if saved.is_file() else None  # resume with the run's own config
    cfg = load_config(config, args.overrides)
    if args.run_dir:
        cfg.output.run_dir = args.run_dir
    if args.dry_run:
        sys.stdout.write(config_to_yaml(cfg))
        return 0
    from weather_sr.training.loop import train

    result = train(
        cfg,
        cfg.output.run_dir,
        resume=args.resume,
        overwrite=args.overwrite,
        progress=not args.no_progress,
        config_file=config,
    )
    if result.status == "interrupted":
        return 130
    if os.environ.get("RANK", "0") == "0":  # under torchrun only rank 0 reports
        print(finished_line(result, cfg.model.kind))
    return 0


def finished_line(result: Any, kind: str) -> str:
    """The last line of a finished run: its folder and the checkpoint to use (``best.pt``, the
    lowest validation loss; the last step's checkpoint when no validation ran)."""
    run_dir = Path(result.run_dir)
    best = run_dir / "checkpoints" / "best.pt"
    ckpt = best if best.is_file() else result.checkpoint
    why = "lowest validation loss" if ckpt == best else "last step"
    use = ("for downscale and evaluate" if kind == "diffusion" else
           "for evaluate, downscale (its deterministic field) and as "
           "diffusion.regression_checkpoint of a diffusion run")
    return (f"weather-sr train: finished at step {result.step}; run folder {run_dir}; "
            f"checkpoint to use {use}: {ckpt} ({why})")
