"""Part "precision" of bench_sampling.py: float32 against bf16 autocast sampling.

Speed: seconds per network evaluation of the model at batch 8 on a whole test field, float32 and
bf16 autocast side by side, with the share of the CPU time spent in the kernel (system time).
Quality: the same test fields, members and seeds sampled in both precisions with the default
sampler: CRPS, spread/skill, member LSD (all frequencies and the upper half) of each, and the RMS
difference of the paired members relative to the ensemble spread.
"""

from __future__ import annotations

import argparse
import resource
import time
from typing import Any

import numpy as np
import torch

from weather_sr.inference.ensemble import SamplingOptions, sample_ensemble
from weather_sr.inference.precision import native_bf16_cpu, with_precision


def _cpu_times() -> tuple[float, float]:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime, r.ru_stime


def time_evaluations(model: Any, cond: torch.Tensor, precision: str, device: torch.device,
                     repeats: int) -> tuple[float, float]:
    """(median seconds per network evaluation at batch 8, system share of the CPU time)."""
    denoiser = with_precision(model.denoiser, precision, device)
    c1 = cond[:1].to(device)
    y = model.condition(c1, model.base(c1)).expand(8, -1, -1, -1)
    x = torch.randn((8, model.channels, *cond.shape[-2:]),
                    generator=torch.Generator().manual_seed(0))
    t = torch.full((8,), model.schedule.T // 2, dtype=torch.long)
    with torch.no_grad():
        denoiser(x.to(device), y, t.to(device))  # warm-up: first-call allocations, kernel choice
        walls, u0, s0 = [], *_cpu_times()
        for _ in range(repeats):
            t0 = time.perf_counter()
            denoiser(x.to(device), y, t.to(device))
            walls.append(time.perf_counter() - t0)
    u1, s1 = _cpu_times()
    return float(np.median(walls)), (s1 - s0) / max((u1 - u0) + (s1 - s0), 1e-9)


def bench_precision(args: argparse.Namespace, device: torch.device, model: Any,
                    truth: np.ndarray, cond: torch.Tensor, normalizer: Any,
                    scores: Any) -> None:
    """Print the speed and quality tables (``scores``: bench_sampling's CRPS/LSD/SSR)."""
    from weather_sr.evaluation.spectra import log_spectral_distance, radial_psd

    print(f"\nprecision ({len(truth)} test fields {truth.shape[-2]}x{truth.shape[-1]}, "
          f"device {device}, native bf16 CPU instructions: {native_bf16_cpu()}, "
          f"{torch.get_num_threads()} threads)")
    print(f"{'precision':>9s} {'s/eval (batch 8)':>16s} {'system share':>12s}")
    speed = {}
    for p in ("float32", "bf16"):
        speed[p] = time_evaluations(model, cond, p, device, args.repeats)
        print(f"{p:>9s} {speed[p][0]:16.3f} {speed[p][1]:12.2f}", flush=True)
    print(f"bf16 / float32 time per evaluation: {speed['bf16'][0] / speed['float32'][0]:.2f}")
    std = normalizer.channel_std()[None, :, None, None]
    ens = {}
    print(f"{'precision':>9s} {'CRPS/std':>8s} {'member LSD dB':>13s} {'upper half':>10s} "
          f"{'spread/skill':>12s} {'wall s':>7s}")
    for p in ("float32", "bf16"):
        opts = SamplingOptions(seed=0, members=args.members, batch_size=8, precision=p)
        t0 = time.perf_counter()
        x = sample_ensemble(model, cond, opts, device=device)
        wall = time.perf_counter() - t0
        ens[p] = normalizer.denormalise(x.double()).numpy() / std[:, None]
        crps, lsd, ssr = scores(truth / std, ens[p])
        high = np.mean([log_spectral_distance(
            radial_psd(ens[p][:, :, c], window="hann").power,
            (t := radial_psd(truth[:, c] / std[0, c], window="hann")).power, t.freq, band="high")
            for c in range(truth.shape[1])])
        print(f"{p:>9s} {crps:8.4f} {lsd:13.3f} {high:10.3f} {ssr:12.3f} {wall:7.1f}", flush=True)
    diff = np.sqrt(np.mean((ens["bf16"] - ens["float32"]) ** 2))
    spread = np.sqrt(np.mean(ens["float32"].var(axis=1, ddof=1)))
    print(f"RMS(bf16 - float32) of paired members / ensemble spread: {diff / spread:.4f}")
