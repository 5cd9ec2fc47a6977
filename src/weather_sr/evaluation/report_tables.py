"""The report's tables beyond the field scores: 95 % bootstrap intervals of the headline scores,
the calibration of the ensembles beyond spread/skill, the verdict cells that count a win or a
loss only when a paired test finds it significant, and the scores of the series at every grid
point (distributions, extremes, climate indices, correlation between variables, temporal
coherence)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

# headline score -> (its metric key for ensembles, for deterministic methods)
HEADLINE_KEYS = {"rmse": ("rmse", "rmse"), "crps": ("crps", "mae"),
                 "spectrum": ("member_lsd_high", "lsd_high")}


def fmt(value: Any) -> str:
    """A score in a report table: 4 significant digits, "–" for a missing or non-finite one."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def headline(result: Mapping[str, Any], channel: str, score: str) -> float | None:
    """A method's headline score on ``channel`` (CRPS of a deterministic method: its MAE;
    spectrum: the members' LSD over the upper half of frequencies, or the prediction's)."""
    ensemble, deterministic = HEADLINE_KEYS[score]
    key = ensemble if result["kind"] == "ensemble" else deterministic
    return result["metrics"][channel].get(key)


def interval_table(results: Mapping[str, Mapping[str, Any]], channel: str) -> str | None:
    """A row per method: each headline score with its 95 % interval; None without intervals."""
    rows = ["| method | RMSE [95 % CI] | CRPS [95 % CI] | LSD high (dB) [95 % CI] |",
            "|---|---|---|---|"]
    for name, res in results.items():
        ci = res.get("intervals")
        if not ci:
            continue
        cells = [f"{fmt(headline(res, channel, s))} [{fmt(ci[s][channel][0])}, "
                 f"{fmt(ci[s][channel][1])}]" for s in HEADLINE_KEYS]
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(rows) if len(rows) > 2 else None


def energy_lines(results: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """One line per ensemble: its energy score across channels, with its interval."""
    lines = []
    for name, res in results.items():
        if res.get("energy_score") is None:
            continue
        ci = (res.get("intervals") or {}).get("energy_score", {}).get("all")
        span = f" [{fmt(ci[0])}, {fmt(ci[1])}]" if ci else ""
        lines.append(f"- {name}: {fmt(res['energy_score'])}{span}")
    return lines


def calibration_table(results: Mapping[str, Mapping[str, Any]], channel: str) -> str | None:
    """A row per ensemble: PIT histogram (density per bin, 1 when flat) and, per threshold, the
    fair Brier score and its reliability term; None without ensembles."""
    levels: list[float] = []
    for res in results.values():
        levels = levels or list((res.get("reliability") or {}).get("levels", []))
    head = ["method", "PIT density per bin (1 = flat)"]
    for q in levels:
        head += [f"Brier > q{q:g}", f"reliability > q{q:g}"]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, res in results.items():
        pit = (res.get("pit_histogram") or {}).get(channel)
        if pit is None:
            continue
        cells = [name, " ".join(f"{v * len(pit):.2f}" for v in pit)]
        rel = (res.get("reliability") or {}).get("channels", {}).get(channel)
        for j in range(len(levels)):
            cells += ([fmt(rel["brier"][j]), fmt(rel["brier_reliability"][j])] if rel
                      else ["–", "–"])
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows) if len(rows) > 2 else None


def verdict_cell(mine: float | None, theirs: float | None,
                 test: Mapping[str, Any] | None) -> tuple[str, str | None]:
    """The cell of one comparison (lower is better) and its outcome: "win" or "loss" when the
    paired test finds the difference significant, "tie" when not, "untested" without a test,
    None without both scores."""
    if mine is None or theirs is None:
        return "–", None
    values = f"{mine:.4g} vs {theirs:.4g}"
    if test is None:
        return f"untested ({values})", "untested"
    p = test.get("p_value")
    note = f"{values}, p = {p:.2g}" if p is not None else values
    if not test.get("significant"):
        return f"tie ({note})", "tie"
    return (f"yes ({note})", "win") if mine < theirs else (f"no ({note})", "loss")


def _pm(value: Any, spread: Any) -> str:
    """``value`` or ``value ± spread`` (the members' std of an ensemble's score)."""
    return fmt(value) if spread is None else f"{fmt(value)} ± {fmt(spread)}"


def _leaf(tree: Mapping[str, Any] | None, *path: Any) -> Any:
    for key in path:
        if tree is None:
            return None
        tree = tree[key] if isinstance(tree, list) else tree.get(key)
    return tree


def distribution_table(results: Mapping[str, Mapping[str, Any]], channel: str) -> str | None:
    """A row per method: the series scores of ``evaluation.series`` on ``channel`` (ensembles:
    the members' mean ± their spread); None without series scores."""
    cols = [("q01 bias", ("quantile_bias", "pointwise_mean", 0)),
            ("q99 bias", ("quantile_bias", "pointwise_mean", 4)),
            ("pooled q99 bias", ("quantile_bias", "pooled", 4)),
            ("W1", ("wasserstein", "pointwise_mean")),
            ("pooled W1", ("wasserstein", "pooled")),
            ("Perkins", ("perkins",)), ("log-hist. dist.", ("log_histogram_distance",)),
            ("lag-1 autocorr. bias", ("lag1_autocorrelation", "bias")),
            ("interannual var. ratio", ("interannual_variability_ratio",))]
    rows = ["| method | " + " | ".join(c for c, _ in cols) + " |", "|" + "---|" * (len(cols) + 1)]
    for name, res in results.items():
        if "series" not in res:
            continue
        mean = res["series"]["channels"][channel]
        spread = (res.get("series_spread") or {}).get("channels", {}).get(channel)
        cells = [_pm(_leaf(mean, *p), _leaf(spread, *p) if spread else None) for _, p in cols]
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(rows) if len(rows) > 2 else None


def index_table(results: Mapping[str, Mapping[str, Any]], channel: str) -> str | None:
    """A row per (method, CORDEX index): the truth's and the method's domain mean, the bias and
    the RMSE of the index across points; None when no index applies."""
    rows = ["| method | index | truth | method's | bias | RMSE over points |",
            "|---|---|---|---|---|---|"]
    for name, res in results.items():
        indices = _leaf(res.get("series"), "channels", channel, "indices") or {}
        spread = _leaf(res.get("series_spread"), "channels", channel, "indices") or {}
        for index, v in indices.items():
            s = spread.get(index, {})
            rows.append(f"| {name} | {index} | {fmt(v['truth'])} | "
                        f"{_pm(v['prediction'], s.get('prediction'))} | "
                        f"{_pm(v['bias'], s.get('bias'))} | {_pm(v['rmse'], s.get('rmse'))} |")
    return "\n".join(rows) if len(rows) > 2 else None


def correlation_lines(results: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """One line per (method, pair of variables): the bias of their correlation over time at
    each point (domain mean) and pooled over all points and times."""
    lines = []
    for name, res in results.items():
        pairs = _leaf(res.get("series"), "correlation_bias") or {}
        spread = _leaf(res.get("series_spread"), "correlation_bias") or {}
        for pair, v in pairs.items():
            s = spread.get(pair, {})
            lines.append(f"- {name}, {pair}: {_pm(v['pointwise_mean'], s.get('pointwise_mean'))}"
                         f" per point, {_pm(v['pooled'], s.get('pooled'))} pooled")
    return lines


def _sum_window(results: Mapping[str, Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The window of the CRPS of sums (``temporal["sum"]``, the same for every method)."""
    return next((r["temporal"]["sum"] for r in results.values()
                 if (r.get("temporal") or {}).get("sum")), None)


def temporal_table(results: Mapping[str, Mapping[str, Any]], channel: str) -> str | None:
    """A row per method: the lag-1 autocorrelation of the truth and of the method (ensembles:
    the members' mean ± spread), the CRPS of k-sums beside the per-time CRPS (deterministic:
    MAE) and the high-frequency log10 power ratio (``evaluation.temporal``); None without
    temporal scores."""
    window = _sum_window(results)
    sums = "CRPS of sums" if window is None else f"CRPS of {window['k']}-time sums" + (
        f" ({window['duration']})" if window.get("duration") else "")
    rows = ["| method | lag-1 autocorr. truth | lag-1 autocorr. | " + sums
            + " | CRPS per time | high-freq. power log10 ratio |", "|---|---|---|---|---|---|"]
    for name, res in results.items():
        t = _leaf(res.get("temporal"), "channels", channel)
        if t is None:
            continue
        lag = _leaf(res.get("series"), "channels", channel, "lag1_autocorrelation") or {}
        spread = _leaf(res.get("series_spread"), "channels", channel, "lag1_autocorrelation")
        cells = [fmt(lag.get("truth")), _pm(lag.get("prediction"),
                                            spread.get("prediction") if spread else None),
                 fmt(t.get("sum_crps")), fmt(headline(res, channel, "crps")),
                 fmt(t.get("high_frequency_log_ratio"))]
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(rows) if len(rows) > 2 else None


def temporal_lines(results: Mapping[str, Mapping[str, Any]], channel: str) -> list[str]:
    """The report's "Temporal coherence" paragraph of ``channel``: what the columns are, the
    table and the notes on what is left out; [] without temporal scores."""
    table = temporal_table(results, channel)
    if table is None:
        return []
    window = _sum_window(results)
    k = "k" if window is None else str(window["k"])
    notes = next((r["temporal"]["notes"] for r in results.values() if "temporal" in r), [])
    lines = ["", f"Temporal coherence ({channel}): lag-1 autocorrelation over consecutive times "
             "(per point, domain mean; ensembles: members' mean ± spread); CRPS of the sums over "
             f"windows of {k} consecutive times, of the members' sums against the truth's (a "
             "deterministic method: the MAE of its sums), beside the CRPS per time; the "
             "high-frequency ratio is log10 of the method's temporal power spectrum over the "
             "truth's, averaged over the upper half of the frequencies (0 when right, > 0: too "
             "much fast variability, as members independent in time give):", "", table]
    for note in notes:
        lines += ["", f"{channel}: {note}."]
    return lines
