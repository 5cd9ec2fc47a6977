"""evaluation.temporal: the CRPS of sums over k consecutive times against a brute-force
reference (NaNs, area weights, any bands), the temporal periodogram against the AR(1) closed
form, white noise and Parseval, a time-incoherent ensemble against a coherent one, the
``--sum-window`` rules, and one ``weather-sr score`` run with the new keys and table."""

from __future__ import annotations

import json
from itertools import product
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr

import weather_sr
from weather_sr.cli import main
from weather_sr.errors import UserError
from weather_sr.evaluation import series as series_module
from weather_sr.evaluation.metrics import crps_fair_pointwise
from weather_sr.evaluation.series import SeriesLayout, series_scores
from weather_sr.evaluation.temporal import (
    high_frequency_log_ratio,
    parse_sum_window,
    periodogram,
    resolve_sum_window,
)


def _hours(n: int, step: int = 3) -> np.ndarray:
    return np.asarray(pd.date_range("2001-01-01", periods=n, freq=f"{step}h"))


def _run(truth: np.ndarray, preds: dict[str, np.ndarray], times: np.ndarray,
         weights: np.ndarray, **kwargs) -> dict:
    """series_scores of truth ``[T, C, H, W]`` and predictions ``[T, M, C, H, W]`` (or
    ``[T, C, H, W]``) read band by band straight from the arrays."""
    def read_band(y0: int, y1: int):
        return truth[..., y0:y1, :], {k: v[..., y0:y1, :] for k, v in preds.items()}

    c, h, w = truth.shape[1:]
    layout = SeriesLayout([f"v{i}" for i in range(c)], ["1"] * c, times, weights, w,
                          {k: v.shape[1] if v.ndim == 5 else 1 for k, v in preds.items()})
    return series_scores(read_band, layout, height=h, **kwargs)


def _brute_sum_crps(truth: np.ndarray, ens: np.ndarray, weights: np.ndarray, k: int
                    ) -> np.ndarray:
    """Per channel: explicit loops over points, windows and members; fair CRPS (M >= 2) or the
    absolute error (M = 1) of the window sums; weighted mean over complete windows."""
    t, m, c, h, w = ens.shape
    out = np.zeros(c)
    for ch in range(c):
        total = weight = 0.0
        for i, j, n in product(range(h), range(w), range(t // k)):
            span = slice(n * k, (n + 1) * k)
            y, xs = truth[span, ch, i, j], ens[span, :, ch, i, j]
            if not (np.all(np.isfinite(y)) and np.all(np.isfinite(xs))):
                continue
            s, sums = float(y.sum()), [float(xs[:, a].sum()) for a in range(m)]
            skill = sum(abs(x - s) for x in sums) / m
            spread = 0.0 if m == 1 else sum(abs(a - b) for a in sums for b in sums) / (
                2 * m * (m - 1))
            total += weights[i] * (skill - spread)
            weight += weights[i]
        out[ch] = total / weight
    return out


def test_sum_crps_equals_a_brute_force_reference_in_any_bands(
        monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(1)
    t, m, c, h, w = 27, 4, 2, 5, 3  # 27 three-hourly times: 3 windows of 8, 3 times left over
    truth = rng.normal(size=(t, c, h, w))
    truth[rng.random(truth.shape) < 0.03] = np.nan  # missing values: their windows drop out
    truth[:, 1, 2, 1] = np.nan  # a point missing throughout
    ens = truth[:, None] + rng.normal(size=(t, m, c, h, w))
    det = truth + rng.normal(size=truth.shape)
    weights = rng.uniform(0.2, 1.0, h)
    times = _hours(t)
    whole = _run(truth, {"ens": ens, "det": det}, times, weights)
    for label, values in (("ens", ens), ("det", det[:, None])):
        got = whole[label]["temporal"]
        assert got["sum"] == {"k": 8, "windows": 3, "duration": "24h"}
        ref = _brute_sum_crps(truth, values, weights, 8)
        for ch in range(c):
            assert got["channels"][f"v{ch}"]["sum_crps"] == pytest.approx(ref[ch], rel=1e-12)
    per_row = t * w * c * 8 * (1 + m + 1)  # bytes of one row of every method, as band_rows
    for rows in (1, 2, 4):  # bands of 1, 2 or 4 rows (the last one shorter)
        monkeypatch.setattr(series_module, "BAND_BYTES", rows * per_row)
        banded = _run(truth, {"ens": ens, "det": det}, times, weights)
        for label in ("ens", "det"):
            a, b = whole[label]["temporal"], banded[label]["temporal"]
            for ch in ("v0", "v1"):
                assert b["channels"][ch]["sum_crps"] == pytest.approx(
                    a["channels"][ch]["sum_crps"], rel=1e-12)
                np.testing.assert_allclose(b["channels"][ch]["spectrum"],
                                           a["channels"][ch]["spectrum"], rtol=1e-12)
    other = _run(truth, {"ens": ens}, times, weights, sum_window=4)["ens"]["temporal"]
    assert other["sum"]["k"] == 4 and other["channels"]["v0"]["sum_crps"] == pytest.approx(
        _brute_sum_crps(truth, ens, weights, 4)[0], rel=1e-12)


def _ar1(rng: np.random.Generator, phi: float, shape: tuple[int, ...]) -> np.ndarray:
    """Stationary AR(1) series ``[T, ...]`` with unit innovations' variance 1 - phi² (unit
    marginal variance)."""
    x = np.empty(shape)
    x[0] = rng.normal(size=shape[1:])
    noise = rng.normal(scale=np.sqrt(1 - phi**2), size=shape)
    for i in range(1, shape[0]):
        x[i] = phi * x[i - 1] + noise[i]
    return x


def test_periodogram_normalisation_ar1_shape_and_white_noise() -> None:
    rng = np.random.default_rng(2)
    for t in (64, 65):  # Parseval, even and odd T: sum of the periodogram = T * variance
        x = rng.normal(2.0, 3.0, (t, 7))
        np.testing.assert_allclose(periodogram(x).sum(axis=0), t * x.var(axis=0), rtol=1e-12)
    t, p, phi = 1024, 400, 0.6
    freq = np.fft.rfftfreq(t)
    inner = slice(1, t // 2)  # not f = 0 (mean removed) nor the Nyquist frequency (c_f = 1)
    omega = 2 * np.pi * freq[inner]
    closed = (1 - phi**2) / np.abs(1 - phi * np.exp(-1j * omega)) ** 2  # two-sided density
    mean = periodogram(_ar1(rng, phi, (t, p))).mean(axis=1)[inner]
    ratio = (mean / closed).reshape(7, 73).mean(axis=1)  # 7 groups of 73 frequencies
    np.testing.assert_allclose(ratio, 2.0, rtol=0.03)  # one-sided: twice the density
    white = periodogram(rng.normal(size=(t, p))).mean(axis=1)[inner]
    grouped = white.reshape(7, 73).mean(axis=1)
    np.testing.assert_allclose(grouped, 2.0, rtol=0.03)  # flat at 2 sigma^2
    slope = np.polyfit(np.log(freq[inner]), np.log(white), 1)[0]
    assert abs(slope) < 0.02
    gap = rng.normal(size=(16, 3))
    gap[5, 1] = np.nan  # a point missing one time has no periodogram
    got = periodogram(gap)
    assert np.isnan(got[:, 1]).all() and np.isfinite(got[:, [0, 2]]).all()
    f, base = freq[1:], 1 / freq[1:]  # the ratio looks at f >= f_max / 2 only
    assert high_frequency_log_ratio(f, np.where(f >= 0.25, 10 * base, base), base) == \
        pytest.approx(1.0)
    assert high_frequency_log_ratio(f, np.where(f < 0.25, 10 * base, base), base) == 0


def test_incoherent_members_lose_in_sum_crps_and_overdo_fast_variability() -> None:
    """Truth AR(1) (phi 0.9) at 20 points; members with the right marginal either drawn
    independently at every time (white) or AR(1) realisations with the right phi (coherent).
    Their per-point distributions are alike; their daily sums and spectra are not."""
    rng = np.random.default_rng(3)
    t, m, h, w, phi = 480, 8, 4, 5, 0.9
    truth = _ar1(rng, phi, (t, 1, h, w))
    white = rng.normal(size=(t, m, 1, h, w))
    coherent = _ar1(rng, phi, (t, m, 1, h, w))
    got = _run(truth, {"white": white, "coherent": coherent}, _hours(t, 1), np.ones(h))
    temporal = {k: got[k]["temporal"]["channels"]["v0"] for k in got}
    assert got["white"]["temporal"]["sum"]["k"] == 24  # 24h of hourly times by default
    per_time = {k: crps_fair_pointwise(truth, v).mean()
                for k, v in (("white", white), ("coherent", coherent))}
    assert per_time["white"] == pytest.approx(per_time["coherent"], rel=0.05)  # alike
    assert temporal["white"]["sum_crps"] > 1.1 * temporal["coherent"]["sum_crps"]
    assert temporal["white"]["high_frequency_log_ratio"] > 0.8
    assert abs(temporal["coherent"]["high_frequency_log_ratio"]) < 0.1
    lag = {k: got[k]["series"]["channels"]["v0"]["lag1_autocorrelation"]["prediction"]
           for k in got}
    assert lag["white"] < 0.1 < 0.8 < lag["coherent"]


def test_sum_window_rules() -> None:
    three_hourly, undated = _hours(40), np.arange(40)
    assert parse_sum_window("8", undated) == 8 and parse_sum_window(8, three_hourly) == 8
    assert parse_sum_window("24h", three_hourly) == 8
    assert parse_sum_window("1D", three_hourly) == 8
    for value, times in (("5h", three_hourly), ("24h", undated), ("0", undated),
                         ("soon", three_hourly),
                         ("24h", np.delete(three_hourly, 3))):  # uneven steps
        with pytest.raises(UserError, match="--sum-window") as err:
            parse_sum_window(value, times)
        assert "\n" not in str(err.value)
    assert resolve_sum_window(None, three_hourly) == (8, None)
    k, note = resolve_sum_window(None, undated)  # the default where it cannot apply: a note
    assert k is None and "not dates" in note
    k, note = resolve_sum_window(None, _hours(12))  # 12 times: one window of 8
    assert k is None and "fewer than 2" in note
    assert resolve_sum_window(None, _hours(10, 5))[0] is None  # 5 h does not divide 24 h


def test_score_writes_the_temporal_scores_and_table(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(4)
    time = pd.date_range("2001-01-01", periods=32, freq="3h")
    lat, lon = np.array([40.0, 45.0, 50.0]), np.array([0.0, 5.0, 10.0, 15.0])
    coords = {"time": time, "lat": ("lat", lat, {"units": "degrees_north"}),
              "lon": ("lon", lon, {"units": "degrees_east"})}
    truth = _ar1(rng, 0.8, (32, 3, 4)).astype(np.float32)
    xr.Dataset({"tas": (("time", "lat", "lon"), truth, {"units": "K"})},
               coords=coords).to_netcdf(tmp_path / "truth.nc")
    ens = (truth + rng.normal(size=(3, 32, 3, 4))).astype(np.float32)
    xr.Dataset({"tas": (("member", "time", "lat", "lon"), ens, {"units": "K"})},
               coords=coords).to_netcdf(tmp_path / "ens.nc")
    args = ["score", "--prediction", str(tmp_path / "ens.nc"), "--truth",
            str(tmp_path / "truth.nc"), "--no-progress", "--block", "16"]  # 2 blocks: no bootstrap
    assert main([*args, "--out", str(tmp_path / "bad"), "--sum-window", "5h"]) == 2
    err = capsys.readouterr().err
    assert "--sum-window 5h" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "bad").exists()
    assert main([*args, "--out", str(tmp_path / "r"), "--sum-window", "12h"]) == 0
    result = json.loads((tmp_path / "r" / "metrics.json").read_text())["results"]["ens"]
    temporal = result["temporal"]
    assert temporal["sum"] == {"k": 4, "windows": 8, "duration": "12h"}
    assert temporal["time_step"] == "3h" and len(temporal["frequency"]) == 16
    np.testing.assert_allclose(temporal["frequency_per_day"], np.arange(1, 17) / 4)
    tas = temporal["channels"]["tas"]
    assert tas["sum_crps"] > 0 and len(tas["spectrum"]) == len(tas["spectrum_truth"]) == 16
    assert np.isfinite(tas["high_frequency_log_ratio"])
    assert "temporal" not in result["series"]  # an ensemble score, not a member's
    report = (tmp_path / "r" / "report.md").read_text()
    assert "Temporal coherence (tas)" in report and "CRPS of 4-time sums (12h)" in report
    assert "| ens |" in report.split("Temporal coherence (tas)")[1]
    assert (tmp_path / "r" / "temporal_spectrum_tas.png").is_file()
    assert "temporal_spectrum_tas.png" in report
    # sums of one time: the CRPS per time of the field scores, the same estimator
    one = weather_sr.score(xr.load_dataset(tmp_path / "ens.nc"),
                           xr.load_dataset(tmp_path / "truth.nc"), sum_window=1,
                           block=16)["prediction"]
    assert one["temporal"]["channels"]["tas"]["sum_crps"] == pytest.approx(
        one["metrics"]["tas"]["crps"], rel=1e-9)
