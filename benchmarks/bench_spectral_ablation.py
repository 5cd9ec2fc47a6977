"""Spectral ablation: does a spectral lever improve the member spectrum above the LR Nyquist
frequency, without a worse CRPS? Several training seeds per arm, paired by seed.

Two suites (``--suite``). **process** (the default; docs/method.md §9): the forward noise, the
schedule per F_R coefficient and the injected noise, every trained arm with the plain loss
(λ = 0):

- ``white``: white noise, shared schedule (the library's default), the reference;
- ``power0.5``, ``power1``, ``power2``: ``diffusion.noise: power:P``;
- ``equal_snr``: ``diffusion.noise: equal_snr`` (the measured spectrum of the target);
- ``power1_field``, ``equal_snr_field``: the same noises with ``diffusion.noise_weighting:
  field`` (the ε-loss on the field's own coloured noise instead of the whitened one);
- ``sched_eqsnr``, ``sched_blur2``: ``diffusion.spectral_schedule: equal_snr`` and ``blur:2``;
- ``white_ddim1``, ``colour_q1``, ``colour_q2``: the white models sampled with DDIM η = 1 (20
  steps), with white injected noise and with ``--noise-colour power:1`` and ``power:2``
  (training-free; sampling-only arms);
- ``--with-lam1 ARM``: ARM with the founding derivation's joint loss (λ = 1, W ≡ 1).

**loss** (the earlier ablation of the Fourier term; docs/method.md §4): every λ > 0 arm divides
its loss by 1 + λ, ``diffusion.loss_divide``, so that its gradient has the scale of the λ = 0 loss
and ``grad_clip`` acts alike; every weight is normalised to mean W² = 1,
``diffusion.weight_normalise``:

- ``lam0``: the plain noise-prediction loss (λ = 0), the reference of the paired differences;
- ``lam1_w1``: λ = 1, W ≡ 1 (the founding derivation's objective; provably the same objective);
- ``radial_g0.5``, ``radial_g1``, ``radial_g2``: λ = 1, radial W = 1 + γ (ν/ν_max)², γ = 0.5, 1, 2;
- ``gated``: the radial γ = 1 weight only at low noise, t ≤ 0.5 T (``diffusion.gate: time``);
- ``band``: W = 1 up to the LR grid's Nyquist frequency, 1 + γ above, γ = 1;
- ``amplitude``: λ = 1, W ≡ 1, plus μ = 0.1 times the binned radial log-power difference of the
  Fourier branch's x0 estimate to the truth, weighted per sample by SNR / (1 + SNR).

**Equal network-evaluation budget.** A λ > 0 step evaluates the network on 2B fields (two
branches in one batched pass), a λ = 0 step on B; so every λ = 0 arm trains at batch 2B for the
same number of steps (as the demo does): every arm sees steps x 2B network evaluations, the same
optimiser steps and learning-rate schedule. Each run trains through the library
(``weather_sr.training.loop.train``) on the dataset's training split with the residual target
(HR minus bicubic) and the default v-parameterisation; the final EMA weights are evaluated.

**Evaluation.** The test split, ensembles of ``members`` members from the library's default
sampler (``core.sampler_defaults``: DPM-Solver++(2M), 20 steps) for every trained arm, scored with
``evaluation.accumulate.evaluate_method`` in physical units (cos-latitude weights on lat/lon grids)
and averaged over channels: fair CRPS and ensemble-mean RMSE, each divided by the channel's
standard deviation over the test fields (so that K and m2 s-2 count alike), spread/skill, member
LSD over all frequencies and above the LR Nyquist frequency (0.5 / scale factor cycles per HR
spacing), and the spread/skill per band of F_R coefficients (``evaluation.bands``). results.json
keeps every per-channel score in physical units. Seeds (training seed = sampling seed = s) are
shared by the arms, so the differences to the reference are paired: mean and standard error over
seeds.

Datasets: ``sample`` (the shipped NCEP sample, pwat and btmp, 32 x 32 training patches) and
``era5`` (the shipped ERA5 members, t and z at 500/850 hPa, global 60 x 120 fields, trained on
full fields with circular longitude padding); ``--data PATH --variables V ...`` runs any dataset.

Budget (``FULL``): 120 optimiser steps per run (batch 4 patches of 32 x 32 on the sample, 1 full
ERA5 field; λ = 0 arms twice that), UNet width 16, multipliers [1, 2], one res block, no
attention, lr 1e-3; 3 members, every test field (sample 4, ERA5 10). ``--steps`` and ``--width``
change it (the larger budget: ``--arms white equal_snr --steps 480 --width 32``). The process
suite with ``--with-lam1 equal_snr`` (13 arms) took 44 CPU minutes (23 wall minutes in one
process) on the 2-core development machine (AMD EPYC) with another benchmark running beside it.
One torch thread per worker: on the busy machine a second thread made each step 2-5x slower.
``--quick`` is a tiny model, 2 seeds, 3 steps, 1 test field, 3 sampler steps (under a minute,
numbers meaningless) and prints the same tables.

    .venv/bin/python benchmarks/bench_spectral_ablation.py --out /tmp/spectral [--quick]
    .venv/bin/python benchmarks/bench_spectral_ablation.py --suite loss --out /tmp/loss
    .venv/bin/python benchmarks/bench_spectral_ablation.py --data f.nc --variables t2m --out DIR

Writes ``results.json`` and one PSD plot per dataset (``psd_<dataset>.png``, every arm) to --out.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from weather_sr.config import load_config
from weather_sr.core.sampler_defaults import DEFAULT_SAMPLER, DEFAULT_STEPS
from weather_sr.data import build_datasets
from weather_sr.data.sample import ERA5_VARIABLES, SAMPLE_VARIABLES, shipped_data_path
from weather_sr.evaluation.accumulate import evaluate_method
from weather_sr.evaluation.evalset import EvalSet, load_split, model_prediction
from weather_sr.inference.ensemble import SamplingOptions
from weather_sr.model.data_setup import data_kwargs
from weather_sr.model.loading import load_model
from weather_sr.training.loop import train

_LAM1 = {"diffusion.lam": 1.0, "diffusion.loss_divide": True}
_NORM = {"diffusion.weight_normalise": True}
# the loss suite (the earlier ablation): weights of the Fourier branch
LOSS_ARMS: dict[str, dict[str, Any]] = {
    "lam0": {"diffusion.lam": 0.0},
    "lam1_w1": {**_LAM1},
    "radial_g0.5": {**_LAM1, **_NORM, "diffusion.weight": "radial", "diffusion.gamma": 0.5},
    "radial_g1": {**_LAM1, **_NORM, "diffusion.weight": "radial", "diffusion.gamma": 1.0},
    "radial_g2": {**_LAM1, **_NORM, "diffusion.weight": "radial", "diffusion.gamma": 2.0},
    "gated": {**_LAM1, **_NORM, "diffusion.weight": "radial", "diffusion.gamma": 1.0,
              "diffusion.gate": "time", "diffusion.gate_t": 0.5},
    "band": {**_LAM1, **_NORM, "diffusion.weight": "band", "diffusion.gamma": 1.0},
    "amplitude": {**_LAM1, "diffusion.amp_mu": 0.1, "diffusion.gate": "snr"},
}
# the process suite (issue 23): the forward noise, the schedule and the injected noise
PROCESS_ARMS: dict[str, dict[str, Any]] = {
    "white": {"diffusion.lam": 0.0},
    "power0.5": {"diffusion.lam": 0.0, "diffusion.noise": "power:0.5"},
    "power1": {"diffusion.lam": 0.0, "diffusion.noise": "power:1"},
    "power2": {"diffusion.lam": 0.0, "diffusion.noise": "power:2"},
    "equal_snr": {"diffusion.lam": 0.0, "diffusion.noise": "equal_snr"},
    "power1_field": {"diffusion.lam": 0.0, "diffusion.noise": "power:1",
                     "diffusion.noise_weighting": "field"},
    "equal_snr_field": {"diffusion.lam": 0.0, "diffusion.noise": "equal_snr",
                        "diffusion.noise_weighting": "field"},
    "sched_eqsnr": {"diffusion.lam": 0.0, "diffusion.spectral_schedule": "equal_snr"},
    "sched_blur2": {"diffusion.lam": 0.0, "diffusion.spectral_schedule": "blur:2"},
}
# sampling-only arms: (the arm whose trained models they sample, sampling options); at the
# same 20 network evaluations as the others, with DDIM eta = 1 (a sampler that injects noise)
SAMPLING_ARMS: dict[str, tuple[str, dict[str, Any]]] = {
    "white_ddim1": ("white", {"sampler": "ddim", "eta": 1.0}),
    "colour_q1": ("white", {"sampler": "ddim", "eta": 1.0, "noise_colour": "power:1"}),
    "colour_q2": ("white", {"sampler": "ddim", "eta": 1.0, "noise_colour": "power:2"}),
}
SUITES = {"process": {**PROCESS_ARMS, **{a: {} for a in SAMPLING_ARMS}}, "loss": LOSS_ARMS}
REFERENCES = {"process": "white", "loss": "lam0"}
ARMS: dict[str, dict[str, Any]] = {**LOSS_ARMS, **PROCESS_ARMS}


def arm_config(arm: str) -> dict[str, Any]:
    """The overrides of a trained arm; ``ARM+lam1`` (``--with-lam1 ARM``) is ARM with the
    founding derivation's joint loss (lam = 1, W = 1)."""
    base, _, extra = arm.partition("+")
    return {**ARMS[base], **(_LAM1 if extra == "lam1" else {})}


SCORES = ("crps", "spread_skill", "rmse", "member_lsd", "member_lsd_above_lr")
RELATIVE = ("crps", "rmse")  # divided by the truth's std per channel before the channel mean
LABELS = {"crps": "CRPS/σ", "spread_skill": "spread/skill", "rmse": "RMSE(ens mean)/σ",
          "member_lsd": "LSD all dB", "member_lsd_above_lr": "LSD>LR-Nyq dB"}


@dataclass(frozen=True)
class Budget:
    """Sizes of every run of one benchmark (full or --quick)."""

    seeds: int
    steps: int
    batch: int  # batch of the λ > 0 arms (2B network evaluations per step); lam0 uses 2 * batch
    era5_batch: int  # the same on ERA5's full 60 x 120 fields
    base_channels: int
    channel_mults: tuple[int, ...]
    patch_size: int  # sample and --data: training patches; era5: full fields
    lr: float
    members: int
    sampler_steps: int
    max_fields: int | None  # test fields scored (None: the whole test split)


FULL = Budget(seeds=3, steps=120, batch=4, era5_batch=1, base_channels=16, channel_mults=(1, 2),
              patch_size=32, lr=1e-3, members=3, sampler_steps=DEFAULT_STEPS, max_fields=None)
QUICK = Budget(seeds=2, steps=3, batch=2, era5_batch=1, base_channels=8, channel_mults=(1, 2),
               patch_size=16, lr=1e-3, members=2, sampler_steps=3, max_fields=1)


@dataclass(frozen=True)
class Dataset:
    name: str
    path: str
    variables: tuple[str, ...]
    patch_size: int | None  # None: full fields
    batch: int
    scale_factor: int = 4


def datasets(args: argparse.Namespace, budget: Budget) -> list[Dataset]:
    """The datasets of this run: ``--data`` (with ``--variables``) or the ``--datasets`` names."""
    if args.data:
        name = Path(args.data).stem if args.data not in ("sample", "era5") else args.data
        return [Dataset(name, args.data, tuple(args.variables), budget.patch_size, budget.batch,
                        args.scale_factor)]
    known = {
        "sample": Dataset("sample", "sample", SAMPLE_VARIABLES, budget.patch_size, budget.batch),
        "era5": Dataset("era5", "era5", ERA5_VARIABLES, None, budget.era5_batch),
    }
    return [known[n] for n in args.datasets]


def overrides(ds: Dataset, arm: str, seed: int, budget: Budget, device: str) -> list[str]:
    """``key=value`` overrides of the packaged sample config for one run."""
    batch = ds.batch * (2 if arm_config(arm).get("diffusion.lam") == 0.0 else 1)
    values: dict[str, Any] = {
        "data.path": ds.path,
        "data.variables": list(ds.variables),
        "data.scale_factor": ds.scale_factor,
        "data.patch_size": "null" if ds.patch_size is None else ds.patch_size,
        "model.base_channels": budget.base_channels,
        "model.channel_mults": list(budget.channel_mults),
        "model.head_channels": budget.base_channels,
        "model.num_res_blocks": 1,
        "model.mid_attention": False,
        "training.steps": budget.steps,
        "training.batch_size": batch,
        "training.lr": budget.lr,
        "training.warmup_steps": max(1, budget.steps // 20),
        "training.seed": seed,
        "training.device": device,
        "training.log_every": budget.steps,
        "training.val_every": budget.steps,
        "training.val_batches": 0,
        "training.val_images": 0,
        "training.checkpoint_every": budget.steps,
        "training.keep_last": 1,
        "output.tensorboard": False,
        **arm_config(arm),
    }
    return [f"{k}={_yaml(v)}" for k, v in values.items()]


def _yaml(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(str(v) for v in value) + "]"
    return str(value).lower() if isinstance(value, bool) else str(value)


def score(data: EvalSet, ensemble: np.ndarray, seed: int) -> dict[str, Any]:
    """``evalset.score`` plus the LSD above the LR Nyquist frequency (``scale_factor``)."""
    return evaluate_method(
        np.nan_to_num(data.truth), ensemble, mask=data.mask,
        lat=data.lat if data.lat_is_degrees else None, channel_names=data.channels, seed=seed,
        window="none" if data.periodic else "hann", scale_factor=data.scale_factor,
    )


def truth_std(data: EvalSet) -> dict[str, float]:
    """Standard deviation of each channel's truth over the scored test fields (valid pixels):
    CRPS and RMSE are divided by it before the channel mean, so that channels in different units
    (K and m2 s-2) count alike."""
    valid = data.mask[:, 0] > 0
    return {c: float(np.std(data.truth[:, i][valid])) for i, c in enumerate(data.channels)}


def run_one(ds: Dataset, arm: str, seed: int, budget: Budget, bundle: Any, root: Path,
            device: str, samplings: Sequence[str] = ()) -> list[dict[str, Any]]:
    """Train one arm with one seed, sample the test split with the default sampler (and with
    each of ``samplings``, sampling-only arms of this model), score each."""
    cfg = load_config("sample", overrides(ds, arm, seed, budget, device))
    t0, c0 = time.perf_counter(), time.process_time()
    result = train(cfg, root / f"{ds.name}_{arm}_{seed}", progress=False, bundle=bundle)
    if result.status != "finished" or result.checkpoint is None:
        raise SystemExit(f"{ds.name} {arm} seed {seed}: training did not finish")
    train_seconds = time.perf_counter() - t0
    model = load_model(result.checkpoint, device)
    data = load_split(bundle, "test", budget.max_fields)
    out = []
    for name, extra in [(arm, {}), *((a, SAMPLING_ARMS[a][1]) for a in samplings)]:
        t1 = time.perf_counter()
        options = SamplingOptions(**{"sampler": DEFAULT_SAMPLER, **extra},
                                  steps=budget.sampler_steps, members=budget.members, seed=seed,
                                  batch_size=16)
        ensemble = model_prediction(model, data, options, device=device)
        run = scored(data, ensemble, seed)
        run.update(dataset=ds.name, arm=name, seed=seed, sampling=extra,
                   train_seconds=train_seconds if name == arm else 0.0,
                   eval_seconds=time.perf_counter() - t1)
        out.append(run)
    out[0]["cpu_seconds"] = time.process_time() - c0
    return out


def scored(data: EvalSet, ensemble: np.ndarray, seed: int) -> dict[str, Any]:
    """Channel means (CRPS and RMSE over the truth's std), per-channel scores, the PSDs and the
    spread/skill per band (channel mean) of one ensemble."""
    scores = score(data, ensemble, seed)
    psd = scores["psd"]
    sigma = truth_std(data)
    per_channel = {c: {k: v[k] for k in SCORES} for c, v in scores["metrics"].items()}
    mean = {k: float(np.mean([per_channel[c][k] / (sigma[c] if k in RELATIVE else 1.0)
                              for c in data.channels])) for k in SCORES}
    bands = scores["bands"]
    band_ss = np.mean([bands["metrics"][c]["spread_skill"] for c in data.channels], axis=0)
    return {
        "mean": mean, "metrics": per_channel, "truth_std": sigma,
        "bands": {"labels": bands["labels"], "spread_skill": band_ss.tolist(),
                  "per_channel": bands["metrics"]},
        "psd": {"freq": psd["freq"], "truth": psd["truth"], "member": psd["member"]},
    }


def summarise(runs: Sequence[dict[str, Any]], arms: Sequence[str], reference: str
              ) -> dict[str, Any]:
    """Per arm and score: mean and std (ddof 1) over seeds; paired difference to ``reference``:
    mean and standard error (std of the per-seed differences / sqrt(n)); and the per-band
    spread/skill, mean and std over seeds."""
    by = {(r["arm"], r["seed"]): r for r in runs}
    seeds = sorted({r["seed"] for r in runs})
    n = len(seeds)
    out: dict[str, Any] = {}
    for arm in arms:
        entry: dict[str, Any] = {}
        for key in SCORES:
            vals = np.array([by[(arm, s)]["mean"][key] for s in seeds], dtype=np.float64)
            ref = np.array([by[(reference, s)]["mean"][key] for s in seeds], dtype=np.float64)
            diff = vals - ref
            entry[key] = {
                "mean": float(vals.mean()), "std": float(vals.std(ddof=1)) if n > 1 else math.nan,
                "diff_mean": float(diff.mean()),
                "diff_se": float(diff.std(ddof=1) / math.sqrt(n)) if n > 1 else math.nan,
                "values": vals.tolist(),
            }
        bands = np.array([by[(arm, s)]["bands"]["spread_skill"] for s in seeds])
        entry["band_spread_skill"] = {
            "labels": by[(arm, seeds[0])]["bands"]["labels"],
            "mean": bands.mean(0).tolist(),
            "std": (bands.std(0, ddof=1) if n > 1 else np.full(bands.shape[1], np.nan)).tolist(),
        }
        out[arm] = entry
    return out


def band_table(summary: dict[str, Any]) -> list[str]:
    """Rows: the arm, then the spread/skill of each band 'mean ± std' over seeds."""
    labels = next(iter(summary.values()))["band_spread_skill"]["labels"]
    lines = [f"{'arm':14s}" + "".join(f" {lab:>17s}" for lab in labels)]
    for arm, entry in summary.items():
        b = entry["band_spread_skill"]
        lines.append(f"{arm:14s}" + "".join(f" {_num(m, False)} ± {_num(s, False)}".rjust(18)
                                            for m, s in zip(b["mean"], b["std"], strict=True)))
    return lines


def table(summary: dict[str, Any], *, paired: bool) -> list[str]:
    """Rows of one table: the arm, then per score 'mean ± std' (or 'Δ ± se' vs lam0)."""
    width = 23
    head = f"{'arm':14s}" + "".join(f" {LABELS[k]:>{width}s}" for k in SCORES)
    lines = [head]
    for arm, entry in summary.items():
        cells = []
        for key in SCORES:
            e = entry[key]
            a, b = (e["diff_mean"], e["diff_se"]) if paired else (e["mean"], e["std"])
            cells.append(f" {_num(a, paired)} ± {_num(b, False)}".rjust(width + 1))
        lines.append(f"{arm:14s}" + "".join(cells))
    return lines


def _num(x: float, signed: bool) -> str:
    if not math.isfinite(x):
        return "nan"
    return f"{x:+.3g}" if signed else f"{x:.3g}"


def plot_psd(runs: Sequence[dict[str, Any]], arms: Sequence[str], ds: Dataset,
             path: Path) -> None:
    """Per channel: the member PSD of every arm (mean over seeds) and the truth's (top), and
    each arm's ratio to the truth in dB (bottom); dashed: the LR Nyquist frequency."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    first = runs[0]["psd"]
    channels = list(first["freq"])
    fig, axes = plt.subplots(2, len(channels), figsize=(4.2 * len(channels), 6.4),
                             squeeze=False, sharex="col", height_ratios=(2, 1))
    cut = 0.5 / ds.scale_factor
    for k, c in enumerate(channels):
        top, bottom = axes[0][k], axes[1][k]
        f = np.asarray(first["freq"][c], dtype=np.float64)
        keep = f > 0
        truth = np.asarray(first["truth"][c], dtype=np.float64)[keep]
        top.loglog(f[keep], truth, color="black", lw=2.2, label="truth")
        palette = plt.get_cmap("tab20")
        for i, arm in enumerate(arms):
            curves = [np.asarray(r["psd"]["member"][c], dtype=np.float64)
                      for r in runs if r["arm"] == arm]
            power = np.mean(curves, axis=0)[keep]
            style = {"color": palette(i % 20), "lw": 1.8 if i == 0 else 1.1, "label": arm,
                     "ls": "-" if i < 10 else "--"}  # arms[0]: the reference
            top.loglog(f[keep], power, **style)
            bottom.semilogx(f[keep], 10 * np.log10(power / truth), **style)
        for ax in (top, bottom):
            ax.axvline(cut, color="grey", ls="--", lw=0.8)
            ax.xaxis.set_minor_formatter(NullFormatter())
        bottom.axhline(0.0, color="black", lw=0.8)
        top.set_title(f"{ds.name}: {c}")
        bottom.set_xlabel("cycles per grid spacing")
    axes[0][0].set_ylabel("member PSD (mean over seeds)")
    axes[1][0].set_ylabel("member / truth (dB)")
    axes[0][-1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run_task(ds: Dataset, seed: int, arms: Sequence[str], budget: Budget, root: Path,
             device: str, threads: int) -> tuple[list[dict[str, Any]], float]:
    """Every arm with one seed on one dataset (one worker's unit of work): (runs, CPU seconds of
    this process, all its threads). Sampling-only arms are sampled from their model's run."""
    torch.set_num_threads(threads)
    cpu0 = time.process_time()
    trained = [a for a in arms if a not in SAMPLING_ARMS]
    cfg = load_config("sample", overrides(ds, trained[0], seed, budget, device))
    bundle = build_datasets(**data_kwargs(cfg))
    runs = []
    for arm in trained:
        samplings = [a for a in arms if a in SAMPLING_ARMS and SAMPLING_ARMS[a][0] == arm]
        for run in run_one(ds, arm, seed, budget, bundle, root, device, samplings):
            run["channels"] = list(bundle.channels)
            run["n_test"] = len(bundle.test) if budget.max_fields is None else min(
                len(bundle.test), budget.max_fields)
            runs.append(run)
            print(f"  {ds.name} {run['arm']:14s} seed {seed}: train {run['train_seconds']:5.1f} s, "
                  f"eval {run['eval_seconds']:5.1f} s; CRPS/σ {run['mean']['crps']:.4g}, "
                  f"LSD>LR-Nyq {run['mean']['member_lsd_above_lr']:.3f} dB", flush=True)
    return runs, time.process_time() - cpu0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny model, 2 seeds, few steps")
    parser.add_argument("--datasets", nargs="+", choices=("sample", "era5"),
                        default=["sample", "era5"])
    parser.add_argument("--data", help="any dataset path (or sample / era5) instead")
    parser.add_argument("--variables", nargs="+", help="variables of --data")
    parser.add_argument("--scale-factor", type=int, default=4, help="for --data (default 4)")
    parser.add_argument("--suite", choices=list(SUITES), default="process",
                        help="process: forward noise, schedules, coloured sampling (default); "
                             "loss: the weights of the Fourier term")
    parser.add_argument("--arms", nargs="+", help="arms of the suite (default: all of them)")
    parser.add_argument("--with-lam1", nargs="+", default=[], metavar="ARM",
                        help="also ARM with the joint loss (lam = 1, W = 1)")
    parser.add_argument("--width", type=int, help="UNet base channels (default 16, --quick 8)")
    parser.add_argument("--seeds", type=int, help="training seeds (default: 3, --quick 2)")
    parser.add_argument("--steps", type=int, help="optimiser steps per run")
    parser.add_argument("--members", type=int, help="ensemble members")
    parser.add_argument("--out", type=Path, default=None, help="results folder")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--jobs", type=int, default=2,
                        help="worker processes, each one (dataset, seed) at a time (default 2)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per worker "
                        "(default 1: on a busy 2-core machine 2 threads per process were 2-5x "
                        "slower)")
    parser.add_argument("--keep-runs", action="store_true", help="keep the run folders")
    args = parser.parse_args(argv)
    if args.data and not args.variables and shipped_data_path(args.data) == args.data:
        parser.error("--data PATH needs --variables")
    if args.data in ("sample", "era5") and not args.variables:
        args.variables = list(SAMPLE_VARIABLES if args.data == "sample" else ERA5_VARIABLES)
    budget = QUICK if args.quick else FULL
    if args.width is not None:
        budget = replace(budget, base_channels=args.width)
    for key in ("seeds", "steps", "members"):
        if getattr(args, key) is not None:
            budget = replace(budget, **{key: getattr(args, key)})
    if budget.seeds < 2:
        parser.error("--seeds: give at least 2 (a standard deviation needs two)")
    suite, reference = SUITES[args.suite], REFERENCES[args.suite]
    unknown = sorted(set(args.arms or []) - set(suite))
    if unknown:
        parser.error(f"--arms {' '.join(unknown)}: not in the {args.suite} suite "
                     f"({', '.join(suite)})")
    bad = sorted(set(args.with_lam1) - set(ARMS))
    if bad:
        parser.error(f"--with-lam1 {' '.join(bad)}: not a trained arm")
    chosen = [*(args.arms or suite), *(f"{a}+lam1" for a in args.with_lam1)]
    arms = [reference, *[a for a in chosen if a != reference]]
    out = args.out or Path(tempfile.mkdtemp(prefix="bench_spectral_"))
    out.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="runs_", dir=out))
    wall0, cpu0 = time.perf_counter(), time.process_time()
    print(f"spectral ablation: {len(arms)} arms x {budget.seeds} seeds, {budget.steps} steps, "
          f"sampler {DEFAULT_SAMPLER} {budget.sampler_steps} steps, {budget.members} members; "
          f"{args.jobs} worker(s) x {args.threads} torch thread(s)", flush=True)
    sets = datasets(args, budget)
    tasks = [(ds, seed, arms, budget, root, args.device, args.threads)
             for ds in sets for seed in range(budget.seeds)]
    if args.jobs > 1:
        import multiprocessing as mp

        pool = mp.get_context("spawn").Pool(min(args.jobs, len(tasks)))
        try:
            done = pool.starmap(run_task, tasks, chunksize=1)
            pool.close()  # let the workers exit on their own (terminate leaks semaphores)
        except BaseException:
            pool.terminate()
            raise
        finally:
            pool.join()
    else:
        done = [run_task(*task) for task in tasks]
    cpu = time.process_time() - cpu0 + sum(c for _, c in done)
    results: dict[str, Any] = {"budget": asdict(budget), "suite": args.suite,
                               "reference": reference,
                               "arms": {a: arm_config(a) if a not in SAMPLING_ARMS else
                                        {"samples": SAMPLING_ARMS[a][0], **SAMPLING_ARMS[a][1]}
                                        for a in arms},
                               "sampler": DEFAULT_SAMPLER, "datasets": {}}
    for ds in sets:
        runs = [r for rs, _ in done for r in rs if r["dataset"] == ds.name]
        summary = summarise(runs, arms, reference)
        plot = out / f"psd_{ds.name}.png"
        plot_psd(runs, arms, ds, plot)
        print(f"\n{ds.name}: {', '.join(runs[0]['channels'])}; {runs[0]['n_test']} test fields, "
              f"LR Nyquist {0.5 / ds.scale_factor:.4g} cycles/HR spacing; "
              f"mean ± std over {budget.seeds} seeds (channel means)")
        print("\n".join(table(summary, paired=False)))
        print(f"\n{ds.name}: paired difference to {reference} (same seeds): mean ± standard "
              f"error (negative = lower than {reference})")
        print("\n".join(table(summary, paired=True)))
        print(f"\n{ds.name}: spread/skill per band of F_R coefficients (channel mean), mean ± "
              "std over seeds (1 = calibrated)")
        print("\n".join(band_table(summary)))
        print(f"PSD plot: {plot}\n", flush=True)
        results["datasets"][ds.name] = {
            "path": ds.path, "variables": list(ds.variables), "channels": runs[0]["channels"],
            "scale_factor": ds.scale_factor, "summary": summary, "runs": runs,
            "plot": str(plot),
        }
    if not args.keep_runs:
        shutil.rmtree(root, ignore_errors=True)
    wall = time.perf_counter() - wall0
    results["wall_minutes"], results["cpu_minutes"] = wall / 60, cpu / 60
    (out / "results.json").write_text(json.dumps(results, indent=1, allow_nan=True))
    print(f"CPU minutes {cpu / 60:.1f} (process time of all workers and threads); wall minutes "
          f"{wall / 60:.1f}; results {out / 'results.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
