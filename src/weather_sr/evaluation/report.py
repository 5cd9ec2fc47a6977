"""The evaluation report: ``metrics.json``, ``report.md`` and its PNG figures.

The markdown states what was measured (data, split, scale factor, members, sampler, steps), one
table per channel in physical units with one row per method, the figures, and findings computed
from the numbers (including where a method does not win).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from weather_sr.atomic import atomic_output
from weather_sr.evaluation.evalset import BASELINES, EvalSet
from weather_sr.evaluation.plots import (
    plot_panels,
    plot_psd,
    plot_rank_histogram,
    plot_training_curves,
)

COLUMNS = (
    ("rmse", "RMSE"),
    ("rmse_unbiased", "RMSE M→∞"),
    ("mae", "MAE"),
    ("bias", "bias"),
    ("ssim", "SSIM"),
    ("crps", "CRPS"),
    ("spread_skill", "spread/skill"),
    ("lsd", "LSD all (dB)"),
    ("lsd_high", "LSD high (dB)"),
    ("member_rmse", "member RMSE"),
    ("member_lsd_high", "member LSD high (dB)"),
)


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def channel_table(results: Mapping[str, Mapping[str, Any]], channel: str) -> str:
    """Markdown table of one channel: a row per method. CRPS of a deterministic method = MAE."""
    head = "| method | " + " | ".join(label for _, label in COLUMNS) + " |"
    rows = [head, "|" + "---|" * (len(COLUMNS) + 1)]
    for name, result in results.items():
        m = dict(result["metrics"][channel])
        if result["kind"] == "deterministic":
            m["crps"] = m.get("mae")
        rows.append(f"| {name} | " + " | ".join(_fmt(m.get(k)) for k, _ in COLUMNS) + " |")
    return "\n".join(rows)


def write_json(path: Path, obj: Any) -> None:
    with atomic_output(path, overwrite=True) as tmp:
        tmp.write_text(json.dumps(obj, indent=1, allow_nan=False, default=_json_default))


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON-able: {type(value).__name__}")


def make_figures(
    out: Path,
    data: EvalSet,
    predictions: Mapping[str, np.ndarray],
    results: Mapping[str, Mapping[str, Any]],
    training_logs: Mapping[str, Path],
) -> list[str]:
    """Panels of the first field, PSD curves and rank histograms per channel, training curves."""
    figures: list[str] = []
    lat, lon, labels = data.lat, data.lon, ("longitude (°)", "latitude (°)")
    if not data.lat_is_degrees:  # projected grid: y/x coordinates, in km when given in metres
        factor = 1e-3 if np.nanmax(np.abs(data.lon)) > 1e4 else 1.0
        lat, lon = data.lat * factor, data.lon * factor
        labels = ("x (km)", "y (km)") if factor != 1.0 else ("x", "y")
    for c, channel in enumerate(data.channels):
        truth = data.truth[0, c]
        when = f" {data.times[0]}" if data.times else ""
        name = f"panels_{channel}.png"
        # colour scale of the truth, so that one wild member cannot flatten every panel
        plot_panels(_panel_fields(data, predictions, c), title=f"{channel}{when} "
                    f"({data.split} field 1)", units=data.units[c], lat=lat, lon=lon,
                    path=out / name, axis_labels=labels,
                    vmin=float(np.nanmin(truth)), vmax=float(np.nanmax(truth)))
        figures.append(name)
        first = next(iter(results.values()))
        spectra = {"truth": (first["psd"]["freq"][channel], first["psd"]["truth"][channel])}
        for method, result in results.items():
            key = "member" if result["kind"] == "ensemble" else "prediction"
            label = f"{method} (members)" if key == "member" else method
            spectra[label] = (result["psd"]["freq"][channel], result["psd"][key][channel])
        name = f"psd_{channel}.png"
        plot_psd(spectra, title=f"Radially averaged PSD, {channel}", path=out / name)
        figures.append(name)
    for method, result in results.items():
        if "rank_histogram" in result:
            name = f"rank_histogram_{method}.png"
            plot_rank_histogram(result["rank_histogram"]["all"],
                                title=f"Rank histogram, {method}", path=out / name)
            figures.append(name)
    logs = {k: v for k, v in training_logs.items() if Path(v).is_file()}
    if logs:
        plot_training_curves(logs, path=out / "training_curves.png", title="Training losses")
        figures.append("training_curves.png")
    return figures


def _panel_fields(data: EvalSet, predictions: Mapping[str, np.ndarray], c: int
                  ) -> dict[str, np.ndarray]:
    """Fields of the first test field, channel c: LR, each method (two members and the mean of
    an ensemble), truth. The LR field keeps its own grid; plot_panels spreads it over the domain."""
    panels: dict[str, np.ndarray] = {"LR": data.lr[0, c]}
    for name, pred in predictions.items():
        if pred.ndim == 5:
            panels[f"{name} member 1"] = pred[0, 0, c]
            if pred.shape[1] > 1:
                panels[f"{name} member 2"] = pred[0, 1, c]
            panels[f"{name} mean"] = pred[0, :, c].mean(axis=0)
        else:
            panels[name] = pred[0, c]
    panels["truth"] = data.truth[0, c]
    return panels


def findings(results: Mapping[str, Mapping[str, Any]], channel: str) -> list[str]:
    """Plain statements comparing the methods on one channel, wins and losses alike."""
    scores = {name: r["metrics"][channel] for name, r in results.items()}
    deterministic = [n for n, r in results.items() if r["kind"] == "deterministic"]
    trained = [n for n in deterministic if n not in BASELINES]
    lines: list[str] = []
    for name, result in results.items():
        if result["kind"] != "ensemble":
            continue
        m = scores[name]
        for ref in ["bicubic", *trained]:
            if ref not in scores:
                continue
            r = scores[ref]
            verdict = "beats" if m["rmse"] < r["rmse"] else "does NOT beat"
            line = (f"{channel}, {name}: ensemble-mean RMSE {m['rmse']:.4g} {verdict} "
                    f"{ref} ({r['rmse']:.4g})")
            if m.get("rmse_unbiased") is not None:
                verdict = "beats" if m["rmse_unbiased"] < r["rmse"] else "does not beat"
                line += f"; its M→∞ estimate {m['rmse_unbiased']:.4g} {verdict} it"
            lines.append(line + ".")
            if m.get("crps") is not None and r.get("mae") is not None:
                verdict = "beats" if m["crps"] < r["mae"] else "does NOT beat"
                lines.append(f"{channel}, {name}: CRPS {m['crps']:.4g} {verdict} the CRPS (= MAE) "
                             f"of {ref} ({r['mae']:.4g}).")
            if r.get("lsd_high") and m.get("member_lsd_high") is not None:
                ratio = m["member_lsd_high"] / r["lsd_high"]
                closer = "closer to" if ratio < 1 else "no closer to"
                lines.append(f"{channel}, {name}: member LSD (upper half of frequencies) is "
                             f"{ratio:.2f}x that of {ref}: members are {closer} the true "
                             "spectrum at small scales (lower is better).")
        ssr = m.get("spread_skill")
        if ssr is not None:
            state = "calibrated" if 0.8 <= ssr <= 1.2 else (
                "under-dispersive" if ssr < 0.8 else "over-dispersive")
            lines.append(f"{channel}, {name}: spread/skill {ssr:.2f} ({state}; 1 is ideal, "
                         "0.8-1.2 is commonly read as calibrated).")
    return lines


def write_report(
    out: Path,
    data: EvalSet,
    predictions: Mapping[str, np.ndarray],
    results: Mapping[str, Mapping[str, Any]],
    *,
    settings: Mapping[str, Any],
    training_logs: Mapping[str, Path] | None = None,
    sections: Sequence[str] = (),
) -> Path:
    """Write metrics.json, the figures and report.md into ``out``; return the report's path."""
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "metrics.json", {"settings": dict(settings), "results": dict(results)})
    figures = make_figures(out, data, predictions, results, training_logs or {})
    n, _, h, w = data.truth.shape
    lines = [
        "# weather-sr evaluation report",
        "",
        f"- data: `{settings.get('data', '?')}`, split **{data.split}**, {n} fields"
        + (f" ({data.times[0]} to {data.times[-1]})" if data.times else ""),
        f"- HR grid {h}x{w}, scale factor {data.scale_factor} (LR {h // data.scale_factor}x"
        f"{w // data.scale_factor}), LR interpolated by {data.interpolation} as the condition",
        "- channels: " + ", ".join(f"{c} [{u}]" for c, u in zip(data.channels, data.units,
                                                                   strict=True)),
        f"- ensembles: {settings.get('members')} members, sampler {settings.get('sampler')}, "
        f"{_evaluations_text(settings)}, seed {settings.get('seed')}",
        "- scores in physical units, "
        + ("cos-latitude area weighted" if data.lat_is_degrees else "uniformly weighted")
        + "; CRPS of a deterministic method is its MAE; LSD = log-spectral distance to the truth "
        "(radially averaged PSD), 'high' = upper half of resolved frequencies",
        _finite_ensemble_note(settings.get("members")),
        "",
        *sections,
    ]
    for channel, unit in zip(data.channels, data.units, strict=True):
        lines += ["", f"## {channel} [{unit}]", "", channel_table(results, channel)]
    lines += ["", "## Findings", ""]
    lines += [f"- {s}" for channel in data.channels for s in findings(results, channel)]
    lines += ["", "## Figures", ""]
    lines += [f"![{f}]({f})" for f in figures]
    path = out / "report.md"
    with atomic_output(path, overwrite=True) as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    return path


def _finite_ensemble_note(members: Any) -> str:
    """Why an M-member mean loses to the conditional mean, and what 'RMSE M→∞' is."""
    worse = f"about {100 * (math.sqrt(1 + 1 / members) - 1):.0f}%" if members else "somewhat"
    return ("- the mean of M members drawn around the conditional mean μ has MSE = MSE(μ) + "
            f"spread²/M, so a calibrated {members}-member mean is {worse} worse in RMSE than μ "
            "itself; 'RMSE M→∞' = sqrt(RMSE² − spread²/M) removes that term (WeatherBench 2's "
            "unbiased ensemble-mean RMSE)")


def _evaluations_text(settings: Mapping[str, Any]) -> str:
    """``N network evaluations per member`` (what the sampler made; ancestral: all T steps)."""
    n = settings.get("network_evaluations")
    if n is None:
        return f"{settings.get('steps')} steps"
    return f"{n} network evaluations per member"
