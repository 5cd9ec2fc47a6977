"""Plots: non-empty PNGs, no figure leaks, one shared colour scale, what each figure must show."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch

from weather_sr.errors import UserError
from weather_sr.evaluation import plots

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _check_png(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE and len(data) > 1000
    assert plt.get_fignums() == []  # nothing registered with pyplot: no figure leaks
    assert [p.name for p in path.parent.iterdir() if p.name.endswith(".tmp")] == []


@pytest.mark.parametrize("descending", [False, True])
def test_plot_panels_one_colour_scale_and_north_up(tmp_path, descending):
    rng = np.random.default_rng(0)
    truth = rng.normal(280, 5, size=(16, 24))
    lat = np.linspace(40, 55, 16)[:: -1 if descending else 1]
    lon = np.linspace(0, 23, 24)
    fields = {
        "LR": truth.reshape(4, 4, 6, 4).mean(axis=(1, 3)),
        "bicubic": truth + 1,
        "regression": torch.as_tensor(truth - 2),
        "member 1": truth + rng.normal(size=truth.shape) * 3,
        "member 2": truth + 10,
        "ensemble mean": truth,
        "truth": truth,
    }
    path = tmp_path / "panels.png"
    fig = plots.plot_panels(fields, title="t2m", units="K", lat=lat, lon=lon, path=path)
    _check_png(path)
    images = [ax.images[0] for ax in fig.axes if ax.images]
    assert len(images) == len(fields)
    lo = min(float(np.min(np.asarray(f))) for f in fields.values())
    hi = max(float(np.max(np.asarray(f))) for f in fields.values())
    assert all(im.norm is images[0].norm for im in images)
    assert all(im.get_clim() == pytest.approx((lo, hi)) for im in images)
    cbars = [im.colorbar for im in images if im.colorbar is not None]
    assert len(cbars) == 1 and cbars[0].ax.get_ylabel() == "K"  # one shared colourbar
    assert cbars[0].norm is images[0].norm
    for ax in fig.axes:
        if ax.images:
            bottom, top = ax.get_ylim()
            assert top > bottom and top == pytest.approx(55.5)  # north up, cell edges
            assert ax.get_xlim() == pytest.approx((-0.5, 23.5))


def test_plot_panels_without_coordinates_and_bad_field(tmp_path):
    path = tmp_path / "p.png"
    fig = plots.plot_panels(
        {"a": np.zeros((8, 8)), "b": np.ones((8, 8))},
        title="x",
        units="m",
        path=path,
        vmin=-1,
        vmax=2,
    )
    _check_png(path)
    assert fig.axes[0].images[0].get_clim() == (-1, 2)
    with pytest.raises(UserError, match="field 'c'"):
        plots.plot_panels({"c": np.zeros((2, 8, 8))}, title="x", units="m", path=path)


def test_plot_psd_truth_drawn_distinctly(tmp_path):
    freq = np.arange(17) / 32
    power = np.r_[1.0, freq[1:] ** -3.0]
    spectra = {
        "truth": (freq, power),
        "bicubic": (freq, power * np.exp(-20 * freq)),
        "diffusion": (freq, power * 1.1),
    }
    path = tmp_path / "psd.png"
    fig = plots.plot_psd(spectra, title="PSD t2m", path=path)
    _check_png(path)
    ax = fig.axes[0]
    lines = {ln.get_label(): ln for ln in ax.get_lines()}
    assert set(lines) == set(spectra)
    assert lines["truth"].get_color() == "black"
    assert lines["truth"].get_linewidth() > lines["bicubic"].get_linewidth()
    assert len(lines["truth"].get_xdata()) == 16  # DC bin left out of the log axis
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"


def test_plot_rank_histogram_expectation_line(tmp_path):
    counts = np.array([30, 10, 10, 10, 40])
    path = tmp_path / "rank.png"
    fig = plots.plot_rank_histogram(counts, title="ranks", path=path)
    _check_png(path)
    ax = fig.axes[0]
    heights = [p.get_height() for p in ax.patches]
    np.testing.assert_allclose(heights, counts / counts.sum())
    flat = [ln for ln in ax.get_lines() if ln.get_linestyle() == "--"]
    assert len(flat) == 1 and flat[0].get_ydata()[0] == pytest.approx(0.2)
    with pytest.raises(UserError):
        plots.plot_rank_histogram(np.zeros(4), title="x", path=path)


def _write_log(path: Path, scale: float) -> None:
    rows = ["step,loss,loss_x,loss_f,val_loss"]
    for s in range(1, 41):
        val = f"{scale * 0.9 / s:.6f}" if s % 10 == 0 else ""
        rows.append(f"{s},{scale * 2 / s},{scale / s},{scale / s},{val}")
    path.write_text("\n".join(rows) + "\n")


def test_plot_training_curves_from_csv_runs_and_series(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    _write_log(tmp_path / "a" / "log.csv", 1.0)
    _write_log(tmp_path / "b" / "log.csv", 2.0)
    path = tmp_path / "curves.png"
    fig = plots.plot_training_curves(tmp_path / "a" / "log.csv", path=path)
    _check_png(path)
    titles = [ax.get_title() for ax in fig.axes]
    assert len(titles) == 4 and titles[0].startswith("L_x") and titles[1].startswith("L_f")
    val_line = fig.axes[3].get_lines()[0]
    np.testing.assert_allclose(val_line.get_xdata(), [10, 20, 30, 40])  # empty cells skipped
    fig = plots.plot_training_curves(
        {"lam0": tmp_path / "a" / "log.csv", "lam1": tmp_path / "b" / "log.csv"}, path=path
    )
    _check_png(path)
    assert [ln.get_label() for ln in fig.axes[0].get_lines()] == ["lam0", "lam1"]
    fig = plots.plot_training_curves({"step": [1, 2, 3], "loss_x": [3.0, 2.0, 1.0]}, path=path)
    _check_png(path)
    assert len(fig.axes) == 1 and fig.axes[0].get_yscale() == "log"
    long = tmp_path / "metrics.csv"  # train_logging.RunLogger's long format (split column)
    long.write_text(
        "step,split,loss,loss_x,loss_f,lr,grad_norm,seconds\n"
        "10,train,2.0,1.0,1.0,1e-4,0.5,1.0\n20,train,1.6,0.8,0.8,1e-4,0.5,1.0\n"
        "20,val,1.5,,,,,2.0\n30,train,1.2,0.6,0.6,1e-4,0.5,1.0\n"
    )
    log = plots.read_training_log(long)
    np.testing.assert_array_equal(log["val_loss"][2], 1.5)
    assert np.isnan(log["loss"][2]) and np.isnan(log["val_loss"][[0, 1, 3]]).all()
    fig = plots.plot_training_curves({"run": long}, path=path)
    _check_png(path)
    assert [ax.get_title().split(" ")[0] for ax in fig.axes] == [
        "L_x",
        "L_f",
        "total",
        "validation",
    ]
    np.testing.assert_array_equal(fig.axes[0].get_lines()[0].get_xdata(), [10, 20, 30])
    np.testing.assert_array_equal(fig.axes[3].get_lines()[0].get_xdata(), [20])
    with pytest.raises(UserError, match="no column"):
        plots.plot_training_curves({"step": [1], "lr": [0.1]}, path=path)
    with pytest.raises(UserError, match="does not exist"):
        plots.plot_training_curves(tmp_path / "missing.csv", path=path)
