"""Confidence intervals of the headline scores and paired tests between methods, from the
per-field sums of :meth:`~weather_sr.evaluation.accumulate.ScoreAccumulator.series` and the
circular block bootstrap over time of :mod:`weather_sr.evaluation.bootstrap`.

Headline scores (lower is better), each a function of sums over the fields:

- ``rmse``: sqrt(Σ w (x̄ - y)² / Σ w) of the prediction or ensemble mean;
- ``crps``: the fair CRPS of an ensemble, the MAE of a deterministic prediction (its CRPS);
- ``spectrum``: the log-spectral distance over the upper half of the frequencies of the mean
  radial spectrum of the members (ensembles) or of the prediction, to the truth's
  (``member_lsd_high`` / ``lsd_high``);
- ``energy_score``: the energy score across channels (ensembles).

A paired test resamples both methods with the same blocks; ``significant`` means the 95 %
interval of the difference excludes 0 (see the bootstrap module for the p-value).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from weather_sr.evaluation import bootstrap, spectra

__all__ = ["HEADLINE", "intervals", "paired_tests"]

HEADLINE = ("rmse", "crps", "spectrum")


def _crps_key(series: Mapping[str, np.ndarray]) -> str:
    return "crps" if "crps" in series else "abs_err"


def _psd_key(series: Mapping[str, np.ndarray]) -> str:
    return "psd_member" if "psd_member" in series else "psd_prediction"


def _lsd_high(power: np.ndarray, truth: np.ndarray, freq: np.ndarray) -> np.ndarray:
    """LSD over the upper half of the frequencies ``[..., C]`` of spectra ``[..., C, K]``."""
    lead = power.shape[:-1]
    p, t = power.reshape(-1, power.shape[-1]), truth.reshape(-1, truth.shape[-1])
    out = [spectra.log_spectral_distance(a, b, freq, band="high") for a, b in zip(p, t,
                                                                                   strict=True)]
    return np.asarray(out).reshape(lead)


def _spectrum_replicates(parts: list[np.ndarray], freq: np.ndarray, block: int | None,
                         n_boot: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Bootstrap LSDs ``[B, C]`` of each spectrum series in ``parts[1:]`` to ``parts[0]`` (the
    truth's), all ``[N, C, K]`` resampled with the same blocks."""
    n, c, k = parts[0].shape
    flat = np.concatenate([p.reshape(n, c * k) for p in parts], axis=1)
    sums = bootstrap.bootstrap_sums(flat, block, n_boot, rng=rng).reshape(n_boot, len(parts), c, k)
    return [_lsd_high(sums[:, i], sums[:, 0], freq) for i in range(1, len(parts))]


def intervals(series: Mapping[str, np.ndarray], freq: np.ndarray, *, block: int | None,
              n_boot: int, level: float, rng: np.random.Generator) -> dict[str, Any]:
    """``{score: (lo [C], hi [C])}`` of one method's headline scores (``energy_score``:
    ``[1]``); ``series`` as ``ScoreAccumulator.series()`` gives them, over at least 2 fields."""
    out: dict[str, Any] = {}
    w = series["weight"]
    out["rmse"] = bootstrap.bootstrap_interval(series["sq_err"], w, transform="sqrt",
                                               block=block, n_boot=n_boot, level=level, rng=rng)
    out["crps"] = bootstrap.bootstrap_interval(series[_crps_key(series)], w, block=block,
                                               n_boot=n_boot, level=level, rng=rng)
    reps = _spectrum_replicates([series["psd_truth"], series[_psd_key(series)]], freq, block,
                                n_boot, rng)[0]
    out["spectrum"] = bootstrap.percentile_interval(reps, level)
    if "energy" in series:
        out["energy_score"] = bootstrap.bootstrap_interval(
            series["energy"], series["energy_weight"], block=block, n_boot=n_boot, level=level,
            rng=rng)
    return out


def paired_tests(a: Mapping[str, np.ndarray], b: Mapping[str, np.ndarray], freq: np.ndarray, *,
                 block: int | None, n_boot: int, level: float, rng: np.random.Generator
                 ) -> dict[str, dict[str, np.ndarray]]:
    """Score(a) - score(b) of the headline scores, paired (``bootstrap.paired_difference``'s
    dict per score, each entry ``[C]``). Both methods are scored on the same fields and pixels
    (the weights of ``a`` are used)."""
    w = a["weight"]
    options = {"block": block, "n_boot": n_boot, "level": level, "rng": rng}
    out = {
        "rmse": bootstrap.paired_difference(a["sq_err"], b["sq_err"], w, transform="sqrt",
                                            **options),
        "crps": bootstrap.paired_difference(a[_crps_key(a)], b[_crps_key(b)], w, **options),
    }
    truth, pa, pb = a["psd_truth"], a[_psd_key(a)], b[_psd_key(b)]
    ra, rb = _spectrum_replicates([truth, pa, pb], freq, block, n_boot, rng)
    full = _lsd_high(np.stack([pa.sum(0), pb.sum(0)]), np.stack([truth.sum(0)] * 2), freq)
    out["spectrum"] = bootstrap.difference_summary(ra - rb, full[0] - full[1], level)
    return out
