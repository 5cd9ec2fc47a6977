"""Figures of the evaluation report: field panels, power spectra, rank histograms, training curves.

Figures are built with ``matplotlib.figure.Figure`` and the Agg canvas, never through pyplot, so
nothing is registered with pyplot's figure manager (no figure leaks, no display needed). Each
function writes a PNG atomically (temp file + rename) and returns the Figure for inspection.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

from weather_sr.atomic import atomic_output
from weather_sr.errors import UserError
from weather_sr.evaluation.metrics import to_numpy

PathLike = str | os.PathLike[str]

# Training-log columns drawn by plot_training_curves, in panel order: (column, panel title).
TRAINING_COLUMNS = (
    ("loss_x", "L_x (pixel noise loss)"),
    ("loss_f", "L_f (Fourier noise loss)"),
    ("loss", "total loss"),
    ("val_loss", "validation loss"),
)


def _save(fig: Figure, path: PathLike, dpi: int) -> Path:
    FigureCanvasAgg(fig)
    with atomic_output(path, overwrite=True, what="figure") as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    return Path(path)


def _edges(coord: np.ndarray) -> tuple[float, float]:
    """Outer cell edges (first, last) of a regular coordinate vector of cell centres."""
    half = (coord[-1] - coord[0]) / (len(coord) - 1) / 2 if len(coord) > 1 else 0.5
    return float(coord[0] - half), float(coord[-1] + half)


def _extent(lat: Any, lon: Any) -> tuple[list[float] | None, str]:
    """imshow extent (left, right, bottom, top) and origin so that north is up."""
    if lat is None or lon is None:
        return None, "upper"
    la, lo = to_numpy(lat, "lat"), to_numpy(lon, "lon")
    left, right = _edges(lo)
    first, last = _edges(la)
    if la[-1] >= la[0]:  # increasing latitude: row 0 is the southern edge
        return [left, right, first, last], "lower"
    return [left, right, last, first], "upper"


def plot_panels(
    fields: Mapping[str, Any],
    *,
    title: str,
    units: str,
    lat: Any = None,
    lon: Any = None,
    path: PathLike,
    cmap: str = "viridis",
    vmin: float | None = None,
    vmax: float | None = None,
    dpi: int = 100,
    axis_labels: tuple[str, str] = ("longitude (°)", "latitude (°)"),
) -> Figure:
    """Panels of fields ``{name: [H_i, W_i]}`` (LR, bicubic, ..., truth) on ONE colour scale.

    All panels share one ``Normalize`` (default: min and max of all finite values pooled) and
    one colourbar labelled with ``units``. Fields may have different resolutions (the LR field):
    all are drawn over the same domain, given by the HR ``lat [H]`` and ``lon [W]`` centres when
    both are given (north up; ``axis_labels`` name the axes, e.g. projected x/y in km), else in
    pixel indices of each field.
    """
    if not fields:
        raise UserError("plot_panels: no field to draw")
    arrays = {name: to_numpy(f, f"field {name!r}") for name, f in fields.items()}
    for name, a in arrays.items():
        if a.ndim != 2:
            raise UserError(f"plot_panels: field {name!r} must be [H, W], got shape {a.shape}")
    finite = np.concatenate([a[np.isfinite(a)] for a in arrays.values()])
    lo = vmin if vmin is not None else float(finite.min()) if finite.size else 0.0
    hi = vmax if vmax is not None else float(finite.max()) if finite.size else 1.0
    norm = Normalize(vmin=lo, vmax=hi if hi > lo else lo + 1.0)
    extent, origin = _extent(lat, lon)
    n = len(arrays)
    ncols = min(n, 4)
    nrows = math.ceil(n / ncols)
    h, w = next(iter(arrays.values())).shape
    aspect = h / w if extent is None else (extent[3] - extent[2]) / (extent[1] - extent[0])
    fig = Figure(figsize=(3.2 * ncols + 1.2, 3.2 * nrows * aspect + 0.9), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    image = None
    for ax, (name, a) in zip(axes.flat, arrays.items(), strict=False):
        image = ax.imshow(
            a,
            norm=norm,
            cmap=cmap,
            origin=origin,
            extent=extent,
            interpolation="nearest",
            aspect="auto" if extent is None else "equal",
        )
        ax.set_title(name)
        if extent is not None:
            ax.set_xlabel(axis_labels[0])
            ax.set_ylabel(axis_labels[1])
    for ax in list(axes.flat)[n:]:
        ax.set_visible(False)
    fig.colorbar(image, ax=list(axes.flat[:n]), label=units, shrink=0.9)
    fig.suptitle(title)
    _save(fig, path, dpi)
    return fig


def plot_psd(
    spectra: Mapping[str, Sequence[Any]],
    *,
    title: str,
    path: PathLike,
    truth_key: str = "truth",
    ylabel: str = "PSD",
    xlabel: str = "radial frequency ν (cycles per grid spacing)",
    top_label: str = "wavelength (grid spacings)",
    dpi: int = 100,
) -> Figure:
    """Log-log PSD curves ``{name: (freq [K], power [K])}``: radially averaged spectra by
    default, or any other spectrum with its axis labels (``xlabel``, ``top_label``; e.g. the
    temporal spectra of ``evaluation.temporal``).

    The entry named ``truth_key`` (case-insensitive) is drawn as a thick black line under the
    others; bins with ν <= 0 or power <= 0 are not drawn (the DC bin cannot be on a log axis).
    The top axis shows the wavelength (or period) 1/ν.
    """
    if not spectra:
        raise UserError("plot_psd: no spectrum to draw")
    fig = Figure(figsize=(6.4, 4.8), layout="constrained")
    ax = fig.add_subplot()
    for name, pair in spectra.items():
        freq, power = to_numpy(pair[0], f"{name} freq"), to_numpy(pair[1], f"{name} power")
        if freq.shape != power.shape or freq.ndim != 1:
            raise UserError(f"plot_psd: {name!r} needs freq and power of equal length [K]")
        ok = (freq > 0) & (power > 0) & np.isfinite(power)
        is_truth = name.lower() == truth_key.lower()
        style = {"color": "black", "lw": 2.5, "zorder": 3} if is_truth else {"lw": 1.3, "zorder": 4}
        ax.loglog(freq[ok], power[ok], label=name, **style)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    inv = np.vectorize(lambda v: 1.0 / v if v > 0 else np.inf)
    top = ax.secondary_xaxis("top", functions=(inv, inv))
    top.set_xlabel(top_label)
    for axis in (ax.xaxis, top.xaxis):
        axis.set_minor_formatter(NullFormatter())  # crowded minor labels on short log ranges
    ax.set_title(title)
    _save(fig, path, dpi)
    return fig


def plot_rank_histogram(counts: Any, *, title: str, path: PathLike, dpi: int = 100) -> Figure:
    """Bars of relative rank frequencies ``counts [M+1]`` with the flat expectation 1/(M+1)."""
    c = to_numpy(counts, "rank histogram counts")
    if c.ndim != 1 or c.size < 2 or np.any(c < 0) or c.sum() <= 0:
        raise UserError("plot_rank_histogram: counts must be [M+1] non-negative, not all zero")
    freq = c / c.sum()
    fig = Figure(figsize=(6.4, 4.0), layout="constrained")
    ax = fig.add_subplot()
    ax.bar(np.arange(c.size), freq, width=0.9, color="tab:blue", label="observed")
    ax.axhline(1.0 / c.size, color="black", ls="--", label=f"flat: 1/{c.size}")
    ax.set_xlabel(f"rank of the truth among {c.size - 1} members")
    ax.set_ylabel("relative frequency")
    ax.set_xticks(np.arange(c.size))
    ax.legend()
    ax.set_title(title)
    _save(fig, path, dpi)
    return fig


def plot_calibration(result: Mapping[str, Any], *, title: str, path: PathLike,
                     dpi: int = 100) -> Figure:
    """An ensemble's PIT histogram per channel (left; flat when calibrated) and reliability
    diagram per channel and threshold (right; on the diagonal when reliable), from the
    ``pit_histogram`` and ``reliability`` of its metrics."""
    fig = Figure(figsize=(10.0, 4.0), layout="constrained")
    pit_ax, rel_ax = fig.subplots(1, 2)
    pits = result["pit_histogram"]
    for k, (channel, freq) in enumerate(pits.items()):
        f = np.asarray(freq, dtype=np.float64)
        edges = np.linspace(0, 1, f.size + 1)
        pit_ax.stairs(f * f.size, edges, label=channel, color=f"C{k}")
    pit_ax.axhline(1.0, color="black", ls="--", label="flat")
    pit_ax.set_xlabel("PIT")
    pit_ax.set_ylabel("density")
    pit_ax.set_title("PIT histogram")
    pit_ax.legend()
    rel = result.get("reliability")
    rel_ax.plot([0, 1], [0, 1], color="black", ls="--", label="perfect")
    if rel:
        prob = np.asarray(rel["forecast_probability"], dtype=np.float64)
        for k, (channel, r) in enumerate(rel["channels"].items()):
            for j, level in enumerate(rel["levels"]):
                obs = np.array([np.nan if v is None else v for v in r["observed_frequency"][j]])
                rel_ax.plot(prob, obs, marker="o", color=f"C{k}", ls="-" if j == 0 else ":",
                            label=f"{channel} > q{level:g}")
    rel_ax.set_xlabel("forecast probability (fraction of members above)")
    rel_ax.set_ylabel("observed frequency")
    rel_ax.set_title("Reliability of threshold exceedance")
    rel_ax.legend(fontsize="small")
    fig.suptitle(title)
    _save(fig, path, dpi)
    return fig


def read_training_log(path: PathLike) -> dict[str, np.ndarray]:
    """Columns of a training-log CSV with a header (``step`` and loss columns) as float arrays.

    Empty cells (a column not measured at that step) become NaN. In the long format written by
    ``training.run_log.RunLogger`` (a ``split`` column, train | val), the columns of non-train rows
    are renamed ``{split}_{column}`` (e.g. ``val_loss``) and are NaN on the other rows.
    """
    p = Path(path)
    if not p.is_file():
        raise UserError(f"training log {p} does not exist: pass the CSV written by 'train'")
    with p.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows or "step" not in rows[0]:
        raise UserError(f"training log {p}: needs a header with a 'step' column and data rows")

    def num(v: str | None) -> float:
        try:
            return float(v) if v not in (None, "") else math.nan
        except ValueError:
            return math.nan

    columns: dict[str, np.ndarray] = {"step": np.array([num(r["step"]) for r in rows])}
    for i, row in enumerate(rows):
        split = row.get("split") or "train"
        for key, value in row.items():
            if key in ("step", "split") or key is None:
                continue
            name = key if split == "train" else f"{split}_{key}"
            columns.setdefault(name, np.full(len(rows), math.nan))[i] = num(value)
    return columns


def _as_runs(runs: Any) -> dict[str, Mapping[str, Any]]:
    """Normalise the accepted inputs to ``{run name: {column: values}}``."""
    if isinstance(runs, (str, os.PathLike)):
        return {Path(runs).parent.name or "run": read_training_log(runs)}
    if not isinstance(runs, Mapping) or not runs:
        raise UserError("plot_training_curves: pass a CSV path, a dict of series or of runs")
    if "step" in runs:  # one run given as a dict of series
        return {"run": runs}
    return {
        name: read_training_log(r) if isinstance(r, (str, os.PathLike)) else r
        for name, r in runs.items()
    }


def plot_training_curves(
    runs: PathLike | Mapping[str, Any], *, path: PathLike, title: str = "Training", dpi: int = 100
) -> Figure:
    """Loss curves vs step: one panel per column of ``TRAINING_COLUMNS`` present, one line per run.

    ``runs``: a training-log CSV path; a dict of series ``{"step": [...], "loss_x": [...], ...}``;
    or ``{run name: CSV path or dict of series}`` for several runs. NaN entries are skipped; the
    y axis is logarithmic when all values drawn in a panel are positive.
    """
    data = _as_runs(runs)
    present = [(col, lab) for col, lab in TRAINING_COLUMNS if any(col in d for d in data.values())]
    if not present:
        names = ", ".join(col for col, _ in TRAINING_COLUMNS)
        raise UserError(f"plot_training_curves: no column among {names} in the training log")
    fig = Figure(figsize=(4.2 * len(present), 3.6), layout="constrained")
    axes = fig.subplots(1, len(present), squeeze=False)[0]
    for ax, (col, label) in zip(axes, present, strict=True):
        positive = True
        for run, d in data.items():
            if col not in d:
                continue
            step, y = to_numpy(d["step"], "step"), to_numpy(d[col], col)
            ok = np.isfinite(step) & np.isfinite(y)
            positive &= bool(np.all(y[ok] > 0))
            ax.plot(step[ok], y[ok], label=run, marker="o" if ok.sum() < 30 else None, ms=3)
        if positive:
            ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_title(label)
        ax.grid(True, alpha=0.3)
        if len(data) > 1:
            ax.legend()
    fig.suptitle(title)
    _save(fig, path, dpi)
    return fig
