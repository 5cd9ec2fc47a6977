"""The demo: the Fourier-loss ablation on the shipped sample data, end to end.

Trains, with the same budget in network evaluations,

- ``regression``: the deterministic baseline (same backbone, MSE on x0);
- ``diffusion_lam0``: the plain noise-prediction loss (λ = 0);
- ``diffusion_lam1_w1``: the founding derivation's joint loss (λ = 1, W ≡ 1);
- ``diffusion_lam1_radial``: λ = 1 with the radial weight w(ν) = 1 + γ (ν/ν_max)^p;

then downscales the test split with ensembles, scores everything against the nearest, bilinear
and bicubic baselines and writes the report (with the regression network's RMSE by split, which
shows how much harder the test fields are than the training fields). The diffusion models learn
the residual over the regression model's prediction (CorrDiff, Mardani et al. 2023; docs/method.md
§5), so they all share one trained regression model.

Equal budget: a λ = 1 step evaluates the network on 2B fields (two branches), a λ = 0 or
regression step on B; so the λ = 0 and regression runs use batch 2B.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from weather_sr.config import load_config
from weather_sr.core.sampling import DEFAULT_SAMPLER, DEFAULT_STEPS
from weather_sr.errors import UserError
from weather_sr.inference.ensemble import SamplingOptions

IDENTITY = (
    "**What the mathematics says (docs/method.md §4).** F_R is orthogonal, so with W ≡ 1 the "
    "Fourier term equals ‖F_R⁻¹ε_f − ε_θ(x_t^f)‖², and F_R⁻¹ε_f is itself N(0, I): the founding "
    "derivation's objective (λ = 1, W ≡ 1) trains exactly what λ = 0 trains, with twice the "
    "noise draws per field. Any difference between those two rows is sampling noise of training, "
    "not a spectral effect. Only W ≠ 1 (the radial row) can move the model's errors between "
    "scales; whether that helps is measured below, not assumed."
)


@dataclass(frozen=True)
class DemoBudget:
    """Sizes of one demo run (full or --quick)."""

    steps: int
    batch: int  # batch of the λ = 1 runs; the others use 2x
    base_channels: int
    channel_mults: tuple[int, ...]
    patch_size: int
    members: int
    sampler_steps: int
    max_fields: int | None
    val_every: int
    coherence_fields: int | None  # sample times downscaled for the coherence section (None: all)


FULL = DemoBudget(steps=1200, batch=8, base_channels=16, channel_mults=(1, 2, 2),
                  patch_size=32, members=8, sampler_steps=DEFAULT_STEPS, max_fields=None,
                  val_every=400, coherence_fields=None)
QUICK = DemoBudget(steps=4, batch=2, base_channels=8, channel_mults=(1, 2),
                   patch_size=32, members=2, sampler_steps=3, max_fields=2, val_every=4,
                   coherence_fields=4)

RUNS: dict[str, dict[str, Any]] = {
    "regression": {"model.kind": "regression", "diffusion.target": "residual"},
    "diffusion_lam0": {"diffusion.lam": 0.0},
    "diffusion_lam1_w1": {"diffusion.lam": 1.0, "diffusion.weight": "none"},
    "diffusion_lam1_radial": {"diffusion.lam": 1.0, "diffusion.weight": "radial",
                              "diffusion.gamma": 1.0, "diffusion.power": 2.0},
}


def run_overrides(name: str, budget: DemoBudget, regression_ckpt: Path | None,
                  device: str) -> list[str]:
    """``key=value`` overrides of the sample config for one demo run."""
    doubled = name == "regression" or RUNS[name].get("diffusion.lam") == 0.0
    values: dict[str, Any] = {
        "training.steps": budget.steps,
        "training.batch_size": budget.batch * (2 if doubled else 1),
        "training.val_every": budget.val_every,
        "training.checkpoint_every": budget.steps,
        "training.warmup_steps": max(1, budget.steps // 20),
        "training.device": device,
        "model.base_channels": budget.base_channels,
        "model.channel_mults": list(budget.channel_mults),
        "model.head_channels": budget.base_channels,
        "data.patch_size": budget.patch_size,
        "output.tensorboard": False,
        **RUNS[name],
    }
    if name != "regression":
        values["diffusion.target"] = "regression_residual"
        values["diffusion.regression_checkpoint"] = str(regression_ckpt)
    return [f"{k}={_yaml(v)}" for k, v in values.items()]


def _yaml(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(str(v) for v in value) + "]"
    return str(value)


def run_demo(out: str | Path, *, quick: bool = False, device: str = "auto",
             overwrite: bool = False, sampler: str = DEFAULT_SAMPLER) -> Path:
    """Train the four runs into ``out/runs``, evaluate into ``out/report``; return report.md.

    ``out`` is created with weather-sr's marker; with ``overwrite`` an existing demo folder (it
    must carry the marker) is replaced only once the new one is complete (built beside it).
    A failed or interrupted demo leaves nothing behind.
    """
    from weather_sr.atomic import (
        check_output_path,
        create_folder,
        remove_folder,
        replace_folder,
        sibling_folder,
    )
    from weather_sr.devices import select_device
    from weather_sr.lock import output_lock

    out = Path(out)
    check_demo_target(out)
    with output_lock(out, "demo folder"):  # one demo per folder
        check_output_path(out, overwrite, what="demo folder", marker="demo", option="--out")
        budget = QUICK if quick else FULL
        dev = select_device(device)
        replace = overwrite and out.exists()
        work = (sibling_folder(out, "demo", "demo folder") if replace
                else create_folder(out, "demo", "demo folder", "--out"))
        try:
            report = _run_all(work, budget, dev, sampler)
        except BaseException:
            remove_folder(work)
            raise
        if replace:
            replace_folder(work, out, "demo", "demo folder", "--out")
        report = out / report.relative_to(work)
        print(f"demo finished: {report}")
        return report


def check_demo_target(out: str | Path) -> None:
    """The demo folder is not the current/home folder and holds none of what the demo reads."""
    from weather_sr.config import resolve_config_path
    from weather_sr.data import sample_data_path
    from weather_sr.targets import Source, check_target

    sources = [Source("sample data", sample_data_path(), data=True),
               Source("sample config", resolve_config_path("sample"))]
    check_target(out, "demo folder", "--out", sources, folder=True)


def _run_all(out: Path, budget: DemoBudget, dev: torch.device, sampler: str) -> Path:
    from weather_sr.evaluation.pipeline import evaluate_checkpoints
    from weather_sr.training.loop import train

    torch.manual_seed(0)
    started = time.perf_counter()
    checkpoints: dict[str, Path] = {}
    for k, name in enumerate(RUNS, 1):
        print(f"[demo {k}/{len(RUNS) + 1}] training {name} ({budget.steps} steps)", flush=True)
        overrides = run_overrides(name, budget, checkpoints.get("regression"), str(dev))
        cfg = load_config("sample", overrides)
        result = train(cfg, out / "runs" / name)
        best = out / "runs" / name / "checkpoints" / "best.pt"  # the rule: lowest val. loss
        if result.status != "finished" or not best.is_file():
            raise UserError(f"demo: training of {name} was interrupted; run the demo again")
        checkpoints[name] = best
    print(f"[demo {len(RUNS) + 1}/{len(RUNS) + 1}] downscaling the test split and scoring",
          flush=True)
    options = SamplingOptions(sampler=sampler, steps=budget.sampler_steps,
                              members=budget.members, batch_size=16)
    sections = [IDENTITY, "", _budget_text(budget, time.perf_counter() - started), "",
                shift_text(checkpoints["regression"], dev), "",
                coherence_text(out / "coherence", checkpoints["diffusion_lam0"], budget, dev,
                               sampler)]
    report, _ = evaluate_checkpoints(
        list(checkpoints.values()), out / "report", options=options, device=dev,
        max_fields=budget.max_fields, names=list(checkpoints), sections=sections,
    )
    print(f"demo computed in {time.perf_counter() - started:.0f} s", flush=True)
    return report


def _budget_text(budget: DemoBudget, train_seconds: float) -> str:
    return (
        f"**Budget.** Each run: {budget.steps} optimiser steps; λ = 1 runs at batch "
        f"{budget.batch} (2 network evaluations per field), λ = 0 and regression at batch "
        f"{2 * budget.batch}: {2 * budget.batch * budget.steps} network evaluations on "
        f"{budget.patch_size}x{budget.patch_size} patches per run. UNet base width "
        f"{budget.base_channels}, multipliers {list(budget.channel_mults)}. Training of all four "
        f"runs took {train_seconds:.0f} s."
    )


def shift_text(regression_checkpoint: Path, device: torch.device | str) -> str:
    """How far the regression network's error changes from split to split (RMSE per channel).

    An ensemble can only be calibrated for the errors it saw in training; when the test fields
    are harder (here: later forecast steps), spread/skill falls below 1 by about the train/test
    ratio of these numbers.
    """
    from weather_sr.evaluation.evalset import load_split, model_prediction
    from weather_sr.evaluation.metrics import rmse
    from weather_sr.evaluation.pipeline import bundle_for
    from weather_sr.model.loading import load_model

    model = load_model(regression_checkpoint, device)
    bundle = bundle_for(model, None)
    rows = []
    for split in ("train", "val", "test"):
        data = load_split(bundle, split)
        if len(data.truth) == 0:
            continue
        pred = model_prediction(model, data, SamplingOptions(batch_size=4), device=device)
        scores = rmse(np.nan_to_num(data.truth), pred, mask=data.mask)
        rows.append(f"{split} " + ", ".join(
            f"{c} {v:.3g}" for c, v in zip(data.channels, scores, strict=True)))
    return ("**Distribution shift.** RMSE of the regression network by split (physical units; "
            "an ensemble is calibrated for the errors it saw in training, so harder test fields "
            "lower its spread/skill by about the train/test ratio): " + "; ".join(rows) + ".")


def coherence_text(folder: Path, checkpoint: Path, budget: DemoBudget, device: torch.device,
                   sampler: str) -> str:
    """The members' coherence in time: the λ = 0 model downscales the sample's times
    independently and with ``--coherent noise``; ``weather-sr score`` compares the two
    (written into ``folder``: the two outputs and their report)."""
    import xarray as xr

    from weather_sr.data import sample_data_path
    from weather_sr.evaluation.report_tables import temporal_table
    from weather_sr.evaluation.score_files import score_files
    from weather_sr.inference.api import downscale, load_model

    folder.mkdir()
    model = load_model(checkpoint, device)
    with xr.open_dataset(sample_data_path()) as ds:
        sample = ds.isel(time=slice(0, budget.coherence_fields)).load()
    paths = []
    for name, coherent in (("independent", "off"), ("coherent", "noise")):
        out = downscale(sample, model, members=budget.members, sampler=sampler,
                        steps=budget.sampler_steps, seed=0, coarsen=True, device=device,
                        batch_size=16, coherent=coherent)
        out.to_netcdf(folder / f"{name}.nc")
        paths.append(folder / f"{name}.nc")
    _, results = score_files(paths, sample_data_path(), folder / "report",
                             names=["independent", "coherent"], baselines=False,
                             show_progress=False)
    rho = ", ".join(f"{c} {r:.3g}" for c, r in zip(model.meta.channels, model.meta.detail_lag1
                                                     or (), strict=False))
    tables = [f"{c}:\n\n{temporal_table(results, c)}" for c in model.meta.channels
              if temporal_table(results, c)]
    return (f"**Coherence in time.** The λ = 0 model downscales {sample.sizes['time']} "
            "three-hourly steps of the sample (most of them training times: the machinery, "
            f"not an out-of-sample verification) with {budget.members} members, each time on "
            "its own and with `--coherent noise` (each member's initial noise correlated "
            f"between consecutive times by the training truth's detail lag-1: {rho}), scored "
            "by `weather-sr score` (report in `coherence/report`):\n\n" + "\n\n".join(tables))

