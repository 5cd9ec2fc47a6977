"""The evaluation report: ``metrics.json``, ``report.md`` and its PNG figures.

The markdown states what was measured (data, split, scale factor, members, sampler, steps), one
table per channel in physical units with one row per method, the figures, and verdicts computed
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
from weather_sr.evaluation.evalset import EvalSet
from weather_sr.evaluation.plots import (
    plot_calibration,
    plot_panels,
    plot_psd,
    plot_rank_histogram,
    plot_training_curves,
)
from weather_sr.evaluation.report_tables import (
    HEADLINE_KEYS,
    calibration_table,
    correlation_lines,
    distribution_table,
    energy_lines,
    fmt,
    headline,
    index_table,
    interval_table,
    temporal_lines,
    verdict_cell,
)
from weather_sr.evaluation.scoring import MIN_BLOCKS, reference_methods

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
    ("lsd_above_lr", "LSD > LR Nyquist (dB)"),
    ("member_rmse", "member RMSE"),
    ("member_lsd_high", "member LSD high (dB)"),
    ("member_lsd_above_lr", "member LSD > LR Nyquist (dB)"),
)


def channel_table(results: Mapping[str, Mapping[str, Any]], channel: str) -> str:
    """Markdown table of one channel: a row per method. CRPS of a deterministic method = MAE."""
    head = "| method | " + " | ".join(label for _, label in COLUMNS) + " |"
    rows = [head, "|" + "---|" * (len(COLUMNS) + 1)]
    for name, result in results.items():
        m = dict(result["metrics"][channel])
        if result["kind"] == "deterministic":
            m["crps"] = m.get("mae")
        rows.append(f"| {name} | " + " | ".join(fmt(m.get(k)) for k, _ in COLUMNS) + " |")
    return "\n".join(rows)


def band_table(results: Mapping[str, Mapping[str, Any]], channel: str) -> str | None:
    """Calibration per scale of every ensemble (``evaluation.bands``): a row per method and band
    of F_R coefficients; None when no method has bands."""
    rows = ["| method | band | spread/skill | power ratio | CRPS contribution |",
            "|---|---|---|---|---|"]
    for name, res in results.items():
        bands = res.get("bands")
        if not bands:
            continue
        scores = bands["metrics"][channel]
        for b, label in enumerate(bands["labels"]):
            rows.append(f"| {name} | {label} | {fmt(scores['spread_skill'][b])} | "
                        f"{fmt(scores['power_ratio'][b])} | "
                        f"{fmt(scores['crps_contribution'][b])} |")
    return "\n".join(rows) if len(rows) > 2 else None


def consistency_table(results: Mapping[str, Mapping[str, Any]], channel: str) -> str | None:
    """Every method averaged back onto the LR grid against its LR input
    (``evaluation.consistency``): a row per method; None without an LR field."""
    rows = ["| method | RMSE to the LR input | largest departure |", "|---|---|---|"]
    for name, res in results.items():
        c = (res.get("lr_consistency") or {}).get(channel)
        if c is not None:
            rows.append(f"| {name} | {fmt(c['rmse'])} | {fmt(c['max_abs'])} |")
    return "\n".join(rows) if len(rows) > 2 else None


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
        figures += _temporal_figure(out, results, channel)
    for method, result in results.items():
        if "rank_histogram" in result:
            name = f"rank_histogram_{method}.png"
            plot_rank_histogram(result["rank_histogram"]["all"],
                                title=f"Rank histogram, {method}", path=out / name)
            figures.append(name)
        if "pit_histogram" in result:
            name = f"calibration_{method}.png"
            plot_calibration(result, title=f"Calibration, {method}", path=out / name)
            figures.append(name)
    logs = {k: v for k, v in training_logs.items() if Path(v).is_file()}
    if logs:
        plot_training_curves(logs, path=out / "training_curves.png", title="Training losses")
        figures.append("training_curves.png")
    return figures


def _temporal_figure(out: Path, results: Mapping[str, Mapping[str, Any]], channel: str
                     ) -> list[str]:
    """The temporal power spectra of ``channel`` (``evaluation.temporal``): the truth and every
    method (an ensemble's members' mean), per day when the times are dated with a constant
    step; [] without temporal scores."""
    found = {k: r["temporal"] for k, r in results.items() if r.get("temporal")}
    if not found:
        return []
    first = next(iter(found.values()))
    daily = first["frequency_per_day"] is not None
    freq = first["frequency_per_day"] if daily else first["frequency"]
    spectra = {"truth": (freq, first["channels"][channel]["spectrum_truth"])}
    for method, t in found.items():
        label = f"{method} (members)" if results[method]["kind"] == "ensemble" else method
        spectra[label] = (freq, t["channels"][channel]["spectrum"])
    spectra = {k: (f, [np.nan if v is None else v for v in p]) for k, (f, p) in spectra.items()}
    name = f"temporal_spectrum_{channel}.png"
    unit = "day" if daily else "time step"
    plot_psd(spectra, title=f"Temporal power spectrum per grid point, {channel}",
             path=out / name, ylabel="power", xlabel=f"frequency (cycles per {unit})",
             top_label=f"period ({unit}s)")
    return [name]


def _panel_fields(data: EvalSet, predictions: Mapping[str, np.ndarray], c: int
                  ) -> dict[str, np.ndarray]:
    """Fields of the first test field, channel c: LR, each method (two members and the mean of
    an ensemble), truth. The LR field keeps its own grid; plot_panels spreads it over the domain."""
    panels: dict[str, np.ndarray] = {} if data.lr is None else {"LR": data.lr[0, c]}
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


def _calibration(ssr: float | None) -> str:
    if ssr is None:
        return "–"
    state = "yes" if 0.8 <= ssr <= 1.2 else ("under-dispersive" if ssr < 0.8 else
                                              "over-dispersive")
    return f"{state} ({ssr:.2f})"


def verdicts(results: Mapping[str, Mapping[str, Any]], channels: Sequence[str]) -> list[str]:
    """The findings at a glance: a markdown table with a row per (channel, ensemble method) that
    says, wins and losses alike, whether it beats bicubic and each trained deterministic model
    (``scoring.reference_methods``: ensemble-mean RMSE; CRPS against their MAE, which is their
    CRPS; members closer to the true spectrum at small scales, the members' LSD over the upper
    half of frequencies against their LSD) and is calibrated (spread/skill in 0.8-1.2); a
    comparison counts as a win or a loss only when the paired bootstrap test finds it
    significant (``evaluation.significance``); then a summary line."""
    refs = reference_methods(results)
    head = ["variable", "method"]
    for ref in refs:
        head += [f"RMSE < {ref}?", f"CRPS < {ref}?", f"spectrum closer than {ref}?"]
    head.append("calibrated?")
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    counts = {"win": 0, "loss": 0, "tie": 0, "untested": 0}
    for channel in channels:
        for name, result in results.items():
            if result["kind"] != "ensemble":
                continue
            cells = [channel, name]
            for ref in refs:
                tests = (result.get("paired") or {}).get(ref)
                for score in HEADLINE_KEYS:
                    test = tests[score][channel] if tests else None
                    cell, outcome = verdict_cell(headline(result, channel, score),
                                                 headline(results[ref], channel, score), test)
                    cells.append(cell)
                    if outcome:
                        counts[outcome] += 1
            cells.append(_calibration(result["metrics"][channel].get("spread_skill")))
            rows.append("| " + " | ".join(cells) + " |")
    if len(rows) == 2:
        return []
    rows += ["", f"Of the {sum(counts.values())} comparisons above the ensembles win "
             f"{counts['win']} and lose {counts['loss']}, significantly by a paired block "
             f"bootstrap over the fields (95 %); {counts['tie']} are ties (not significant) and "
             f"{counts['untested']} untested (too few fields for the bootstrap). Lower is better "
             "in each; 'spectrum' compares the members' log-spectral distance to the truth over "
             "the upper half of the frequencies with that of the deterministic method, and "
             "0.8-1.2 is commonly read as calibrated."]
    return rows


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
    """Write metrics.json, the figures and report.md into ``out``; return the report's path.

    ``data`` and ``predictions`` need only the first field (the panels); ``settings`` says how
    many fields were scored (``n_fields``) and their first and last time (``times``).
    """
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "metrics.json", {"settings": dict(settings), "results": dict(results)})
    figures = make_figures(out, data, predictions, results, training_logs or {})
    lines = ["# weather-sr evaluation report", "", *_header(data, settings), "", *sections]
    for channel, unit in zip(data.channels, data.units, strict=True):
        lines += ["", f"## {channel} [{unit}]", "", channel_table(results, channel)]
        per_scale = band_table(results, channel)
        if per_scale:
            lines += ["", f"Calibration per scale ({channel}): the ensembles in radial bands of "
                      "F_R coefficients, below the LR grid's Nyquist frequency and in octaves "
                      "above it (spread/skill 1 and power ratio 1 when right; the CRPS "
                      "contributions add up to the CRPS over all coefficients):", "", per_scale]
        ci = interval_table(results, channel)
        boot = settings.get("bootstrap") or {}
        if not ci and boot and not boot.get("tested"):
            lines += ["", f"Uncertainty ({channel}): no intervals and no significance tests: "
                      f"the {boot.get('n_fields')} fields make {boot.get('blocks')} bootstrap "
                      f"blocks of {boot.get('block')}, fewer than the {MIN_BLOCKS} a block "
                      "bootstrap needs; score more fields (or `--block 1` if they are "
                      "independent)."]
        if ci:
            lines += ["", f"Uncertainty ({channel}): 95 % intervals from a circular block "
                      f"bootstrap over the {settings.get('n_fields')} fields in blocks of "
                      f"{boot.get('block')} ({boot.get('n_boot')} replicates); CRPS of a "
                      "deterministic method is its MAE, LSD high is the members' for an "
                      "ensemble:", "", ci]
        calib = calibration_table(results, channel)
        if calib:
            lines += ["", f"Calibration ({channel}): PIT histogram in 10 bins and, for the "
                      "events 'truth above its q-quantile', the fair Brier score and its "
                      "reliability term (0 when reliable):", "", calib]
        lines += _series_sections(results, channel)
        lines += temporal_lines(results, channel)
        agree = consistency_table(results, channel)
        if agree:
            lines += ["", f"Consistency with the input ({channel} [{unit}]): every member (or "
                      "prediction) averaged back onto the LR grid by the block mean that made "
                      "the LR field, against that field:", "", agree]
    energy = energy_lines(results)
    if energy:
        lines += ["", "## Energy score across variables", "",
                  "The fair energy score of the vector of all variables at each pixel, each "
                  "divided by the truth's standard deviation (lower is better; 95 % interval):",
                  "", *energy]
    correlations = correlation_lines(results)
    if correlations:
        lines += ["", "## Correlation between variables", "",
                  "Bias of the correlation between each pair of variables (method minus truth):",
                  "", *correlations]
    lines += ["", "## Findings", ""]
    lines += verdicts(results, data.channels)
    lines += ["", "## Figures", ""]
    lines += [f"![{f}]({f})" for f in figures]
    path = out / "report.md"
    with atomic_output(path, overwrite=True) as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    return path


def _series_sections(results: Mapping[str, Mapping[str, Any]], channel: str) -> list[str]:
    """The distribution, extremes and climate-index tables of ``channel`` (``evaluation.series``)
    and the notes on indices that do not apply."""
    lines: list[str] = []
    table = distribution_table(results, channel)
    if table:
        lines += ["", f"Distributions and extremes ({channel}): quantile biases (method minus "
                  "truth) per grid point over time, averaged over the domain, and pooled over "
                  "all points and times; Wasserstein-1 distance; Perkins skill score (1 = the "
                  "same histogram); log-histogram distance; bias of the lag-1 autocorrelation; "
                  "ratio of interannual variability (two or more years):", "", table]
    indices = index_table(results, channel)
    if indices:
        lines += ["", f"CORDEX climate indices ({channel}, xclim; domain means):", "", indices]
    note = next((r["series"]["notes"].get(channel) for r in results.values()
                 if "series" in r), None)
    if note:
        lines += ["", f"{channel}: {note}."]
    return lines


def _header(data: EvalSet, settings: Mapping[str, Any]) -> list[str]:
    """What was scored: data, grid, channels, methods, how the scores are computed."""
    h, w = data.truth.shape[-2:]
    n, times = settings.get("n_fields", len(data.truth)), settings.get("times") or data.times
    span = f" ({times[0]} to {times[-1]})" if times else ""
    s = data.scale_factor
    lines = [f"- HR grid {h}x{w}" + (f", scale factor {s} (LR {h // s}x{w // s})" if s else ""),
             "- channels: " + ", ".join(f"{c} [{u}]" for c, u in zip(data.channels, data.units,
                                                                      strict=True))]
    if settings.get("command") == "score":
        lines[:0] = [f"- truth: `{settings.get('data')}`, {n} fields{span}"]
        lines += [f"- {name}: `{p['path']}`, " + (f"an ensemble of {p['members']} members"
                  if p["members"] > 1 else "deterministic")
                  for name, p in settings.get("predictions", {}).items()]
        lines.append(f"- LR input: `{settings['lr']}`; baselines interpolate it, and every "
                     "method is averaged back onto its grid (consistency)" if settings.get("lr")
                     else "- no LR input (--lr): no baselines, no consistency with the input")
        members = max([p["members"] for p in settings.get("predictions", {}).values()] or [0])
        if settings.get("scored_fraction", 1.0) < 1.0:
            lines.append(f"- scored where the truth and every prediction are finite: "
                         f"{100 * settings['scored_fraction']:.1f}% of the pixels")
    else:
        lines[:0] = [f"- data: `{settings.get('data', '?')}`, split **{data.split}**, {n} fields"
                     + span]
        lines[1] += f", LR interpolated by {data.interpolation} as the condition"
        lines.append(
            f"- ensembles: {settings.get('members')} members, sampler {settings.get('sampler')}, "
            f"{_evaluations_text(settings)}, seed {settings.get('seed')}"
            + (f", network in {settings['precision']}" if settings.get("precision") else "")
            + (f", tiles of {settings['tile']} px (overlap {settings.get('overlap')})"
               if settings.get("tile") else ", whole fields"))
        members = settings.get("members")
    lines.append(
        "- scores in physical units, "
        + ("cos-latitude area weighted" if data.lat_is_degrees else "uniformly weighted")
        + "; CRPS of a deterministic method is its MAE; LSD = log-spectral distance to the truth "
        "(radially averaged PSD), 'high' = upper half of resolved frequencies")
    if members and members > 1:
        lines.append(_finite_ensemble_note(members))
    return lines


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
