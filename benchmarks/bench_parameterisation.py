"""Ensemble quality vs the denoiser's parameterisation and the target scale, side by side.

Trains the demo's λ = 0 diffusion run (same data, budget, seed and regression base) four times:
``prediction`` epsilon | v crossed with ``scale_target`` false | true, then scores 8-member
DPM-Solver++(2M) ensembles of the test split: ensemble-mean RMSE, bias, fair CRPS, spread/skill and
the members' high-frequency log-spectral distance, per variable. It is the measurement behind the
defaults (v, scaled) and the parameterisation table of docs/results.md. About 15 minutes
on 2 CPU cores (``--quick``: a minute, numbers meaningless).

    .venv/bin/python benchmarks/bench_parameterisation.py [--quick] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from weather_sr.config import load_config
from weather_sr.demo import FULL, QUICK, DemoBudget, run_overrides
from weather_sr.evaluation.evalset import load_split, model_prediction, score
from weather_sr.evaluation.pipeline import bundle_for
from weather_sr.inference.ensemble import SamplingOptions
from weather_sr.model.loading import load_model
from weather_sr.training.loop import train

VARIANTS = [(p, s) for p in ("epsilon", "v") for s in (False, True)]
COLUMNS = ("rmse", "bias", "crps", "spread_skill", "member_lsd_high")


def train_run(name: str, budget: DemoBudget, root: Path, regression: Path | None,
              device: str, extra: list[str]) -> Path:
    cfg = load_config("sample", run_overrides(name, budget, regression, device) + extra)
    result = train(cfg, root / name, progress=False)
    assert result.checkpoint is not None
    return Path(result.checkpoint)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    budget = QUICK if args.quick else FULL
    root = Path(tempfile.mkdtemp(prefix="bench_parameterisation_"))
    t0 = time.perf_counter()
    regression = train_run("regression", budget, root, None, args.device, [])
    print(f"regression trained in {time.perf_counter() - t0:.0f} s", flush=True)
    options = SamplingOptions(sampler="dpmpp_2m", steps=budget.sampler_steps,
                              members=budget.members, batch_size=16)
    rows = []
    for prediction, scaled in VARIANTS:
        t0 = time.perf_counter()
        extra = [f"diffusion.prediction={prediction}", f"diffusion.scale_target={scaled}"]
        ckpt = train_run("diffusion_lam0", budget, root / f"{prediction}_{scaled}", regression,
                         args.device, extra)
        model = load_model(ckpt, args.device)
        data = load_split(bundle_for(model, None), "test", budget.max_fields)
        result = score(data, model_prediction(model, data, options, device=args.device))
        rows.append((prediction, scaled, model.target_scale.tolist(), result["metrics"]))
        print(f"{prediction}, scale_target={scaled}: {time.perf_counter() - t0:.0f} s",
              flush=True)
    channels = list(rows[0][3])
    print(f"\nλ = 0 demo run, test split, {options.members} members, DPM-Solver++(2M) "
          f"{options.steps} steps; columns: " + ", ".join(COLUMNS))
    for channel in channels:
        print(f"\n{channel}")
        header = " ".join(f"{c:>15s}" for c in COLUMNS)
        print(f"{'prediction':10s} {'scaled':>6s} {'s':>7s} {header}")
        for prediction, scaled, scale, metrics in rows:
            s = scale[channels.index(channel)]
            values = " ".join(f"{metrics[channel][c]:15.3f}" for c in COLUMNS)
            print(f"{prediction:10s} {scaled!s:>6s} {s:7.3f} {values}")


if __name__ == "__main__":
    main()
