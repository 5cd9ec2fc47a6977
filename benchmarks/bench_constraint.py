"""Does ``--constrain`` help? Each checkpoint evaluated on its test split with ``--constrain
none``, ``lr-mean`` and ``lr-mean-x0`` side by side (docs/method.md §8, "The constraint").

Every run is ``weather-sr evaluate`` itself (``evaluation.pipeline.evaluate_checkpoints`` on the
checkpoint's own training data and split, the same seed, members and sampler for every
constraint), so the scores are those of ``metrics.json``: per variable the fair CRPS, the RMSE of
the ensemble mean, spread/skill, the members' log-spectral distance over the upper half of the
frequencies (``member_lsd_high``, dB) and the consistency with the LR input (RMSE of the members
averaged back onto the LR grid, ``lr_consistency``). Sampling is seeded per (field, member), so
the three rows of a checkpoint start from the same noise.

    .venv/bin/python benchmarks/bench_constraint.py --out /tmp/constraint \\
        --checkpoint sample=/tmp/demo_full/runs/diffusion_lam0/checkpoints/best.pt \\
        --checkpoint era5=/tmp/constrain_era5/run/checkpoints/best.pt [--members 8 --steps 20]

Writes one report folder per (checkpoint, constraint) and ``results.json`` to --out, and prints
the table (docs/results.md, "Constraining the members to the LR input").
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import time
from pathlib import Path
from typing import Any

import torch

from weather_sr.core.sampler_defaults import CONSTRAINTS, DEFAULT_SAMPLER, DEFAULT_STEPS
from weather_sr.evaluation.pipeline import evaluate_checkpoints
from weather_sr.inference.ensemble import SamplingOptions

COLUMNS = (("CRPS", "crps"), ("RMSE", "rmse"), ("spread/skill", "spread_skill"),
           ("member LSD-high dB", "member_lsd_high"))


def cpu_model() -> str:
    """The CPU's model name (``lscpu``; the platform's name where there is none)."""
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return platform.processor() or "unknown"
    names = [line.split(":", 1)[1].strip() for line in text.splitlines()
             if line.startswith("Model name")]
    return names[0] if names else "unknown"


def run(label: str, checkpoint: str, constrain: str, args: argparse.Namespace) -> dict[str, Any]:
    """One ``evaluate`` of ``checkpoint`` with ``constrain``: its scores per variable."""
    options = SamplingOptions(sampler=args.sampler, steps=args.steps, seed=args.seed,
                              members=args.members, batch_size=args.batch_size,
                              constrain=constrain)
    t0 = time.perf_counter()
    _, results = evaluate_checkpoints([checkpoint], Path(args.out) / f"{label}_{constrain}",
                                      options=options, max_fields=args.max_fields,
                                      device=args.device, overwrite=True, names=[label])
    seconds = time.perf_counter() - t0
    scores = results[label]
    out = {"seconds": seconds, "n_fields": scores["n_fields"], "variables": {}}
    for name in scores["channels"]:
        m = scores["metrics"][name]
        out["variables"][name] = {key: m[key] for _, key in COLUMNS}
        out["variables"][name]["lr_consistency"] = (scores.get("lr_consistency") or {}).get(
            name, {}).get("rmse")
    return out


def table(results: dict[str, dict[str, dict[str, Any]]]) -> str:
    """Markdown table: one row per (checkpoint, variable, constraint)."""
    head = ["data", "variable", "--constrain", *[c for c, _ in COLUMNS], "LR consistency RMSE",
            "eval s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label, by_constraint in results.items():
        names = next(iter(by_constraint.values()))["variables"]
        for name in names:
            for constrain, res in by_constraint.items():
                v = res["variables"][name]
                cells = [label, name, constrain, *[f"{v[k]:.4g}" for _, k in COLUMNS],
                         "-" if v["lr_consistency"] is None else f"{v['lr_consistency']:.3g}",
                         f"{res['seconds']:.0f}"]
                lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", action="append", required=True, metavar="LABEL=PATH",
                        help="a diffusion checkpoint and its label; repeat for several")
    parser.add_argument("--out", required=True, help="folder for the reports and results.json")
    parser.add_argument("--constraints", nargs="+", choices=CONSTRAINTS, default=list(CONSTRAINTS))
    parser.add_argument("--members", type=int, default=8)
    parser.add_argument("--sampler", default=DEFAULT_SAMPLER)
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-fields", type=int, default=None)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    Path(args.out).mkdir(parents=True, exist_ok=True)
    setup = {"cpu": cpu_model(), "torch_threads": torch.get_num_threads(),
             "members": args.members, "sampler": args.sampler, "steps": args.steps,
             "seed": args.seed, "max_fields": args.max_fields, "checkpoints": args.checkpoint}
    print(json.dumps(setup))
    results: dict[str, dict[str, dict[str, Any]]] = {}
    for item in args.checkpoint:
        label, _, path = item.partition("=")
        if not path:
            parser.error(f"--checkpoint {item!r}: give LABEL=PATH")
        for constrain in args.constraints:
            results.setdefault(label, {})[constrain] = run(label, path, constrain, args)
            print(f"{label} {constrain}: {results[label][constrain]['seconds']:.0f} s", flush=True)
    (Path(args.out) / "results.json").write_text(json.dumps({"setup": setup,
                                                             "results": results}, indent=1))
    print(table(results))


if __name__ == "__main__":
    main()
