"""evaluation.series through ``weather_sr.score``: the scores of the series at every grid point
(distributions, extremes, CORDEX indices) against closed forms, xclim and the bands' invariance;
the bootstrap intervals and the calibration of ``Scoring`` on known cases."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import xarray as xr

import weather_sr
from weather_sr.evaluation import series as series_module
from weather_sr.evaluation.indices import cordex_indices
from weather_sr.evaluation.metrics import area_weights


def _daily(years: int = 2, seed: int = 0) -> xr.Dataset:
    """Daily precipitation (kg m-2 s-1) and daily maximum temperature (K), a small grid."""
    rng = np.random.default_rng(seed)
    time = pd.date_range("2001-01-01", periods=365 * years, freq="D")
    lat, lon = np.array([40.0, 45.0, 50.0]), np.array([0.0, 5.0, 10.0, 15.0])
    shape = (time.size, lat.size, lon.size)
    pr = rng.gamma(0.6, 6.0, shape) * (rng.random(shape) < 0.5) / 86400.0
    day = np.arange(time.size)[:, None, None]
    tas = 285 + 10 * np.sin(2 * np.pi * day / 365.25) + rng.normal(0, 3, shape)
    coords = {"time": time, "lat": ("lat", lat, {"units": "degrees_north"}),
              "lon": ("lon", lon, {"units": "degrees_east"})}
    return xr.Dataset({"pr": (("time", "lat", "lon"), pr, {"units": "kg m-2 s-1"}),
                       "tasmax": (("time", "lat", "lon"), tas, {"units": "K"})}, coords=coords)


@pytest.fixture(scope="module")
def daily() -> xr.Dataset:
    return _daily()


def test_truth_against_itself_and_a_shift(daily: xr.Dataset) -> None:
    same = weather_sr.score(daily, daily, chunk_fields=365)["prediction"]["series"]
    for channel in ("pr", "tasmax"):
        s = same["channels"][channel]
        assert s["quantile_bias"]["pointwise_mean"] == [0.0] * 5
        assert s["quantile_bias"]["pooled"] == [0.0] * 5
        assert s["wasserstein"]["pooled"] == 0 and s["wasserstein"]["pointwise_mean"] == 0
        assert s["perkins"] == pytest.approx(1.0) and s["log_histogram_distance"] == 0
        assert s["lag1_autocorrelation"]["bias"] == 0
        assert s["interannual_variability_ratio"] == pytest.approx(1.0)
        for index in s["indices"].values():  # rx1day ... for pr, txx and su for tasmax
            assert index["prediction"] == index["truth"] and index["bias"] == 0
    assert same["correlation_bias"]["pr~tasmax"]["pooled"] == 0
    shifted = daily.copy()
    shifted["tasmax"] = daily["tasmax"] + 2.0
    s = weather_sr.score(shifted, daily, variables=["tasmax"], chunk_fields=365
                         )["prediction"]["series"]["channels"]["tasmax"]
    np.testing.assert_allclose(s["quantile_bias"]["pointwise_mean"], 2.0, atol=1e-9)
    np.testing.assert_allclose(s["quantile_bias"]["pooled"], 2.0, atol=1e-9)
    assert s["wasserstein"]["pooled"] == pytest.approx(2.0)
    assert s["wasserstein"]["pointwise_mean"] == pytest.approx(2.0)


def test_indices_equal_xclims_averaged_over_the_domain(daily: xr.Dataset) -> None:
    """Each CORDEX index of the truth and of a prediction (pr scaled by 1.2, tasmax + 1 K) is
    xclim's, averaged over points with the cos-latitude weights; bias and RMSE follow."""
    pred = daily.copy()
    pred["pr"], pred["tasmax"] = daily["pr"] * 1.2, daily["tasmax"] + 1.0
    got = weather_sr.score(pred, daily, chunk_fields=365)["prediction"]["series"]["channels"]
    w = np.repeat(area_weights(daily["lat"].values), daily.sizes["lon"])
    for name in ("pr", "tasmax"):
        flat = {k: ds[name].stack(point=("lat", "lon")).transpose("time", "point")
                for k, ds in (("truth", daily), ("prediction", pred))}
        ref = {k: cordex_indices(v.drop_vars(["point", "lat", "lon"]))
               for k, v in flat.items()}
        assert set(got[name]["indices"]) == set(ref["truth"])
        for index, result in got[name]["indices"].items():
            a, b = (np.asarray(ref[k][index].values) for k in ("truth", "prediction"))
            assert result["truth"] == pytest.approx(np.average(a, weights=w), rel=1e-6)
            assert result["prediction"] == pytest.approx(np.average(b, weights=w), rel=1e-6)
            assert result["bias"] == pytest.approx(np.average(b - a, weights=w), rel=1e-5, abs=1e-6)
            assert result["rmse"] == pytest.approx(
                np.sqrt(np.average((b - a) ** 2, weights=w)), rel=1e-5, abs=1e-6)
    assert got["tasmax"]["indices"]["txx"]["bias"] == pytest.approx(1.0)


def test_bands_and_the_pooled_stride_do_not_change_per_point_scores(
        daily: xr.Dataset, monkeypatch: pytest.MonkeyPatch) -> None:
    """One row per band gives the scores of one band for the whole grid; a pooled stride of 3
    changes only the pooled scores."""
    ens = xr.concat([daily + 0.1 * k for k in range(3)], dim="member")
    options = {"variables": ["tasmax"], "chunk_fields": 365}
    whole = weather_sr.score(ens, daily, **options)["prediction"]
    monkeypatch.setattr(series_module, "BAND_BYTES", 1)
    banded = weather_sr.score(ens, daily, **options)["prediction"]
    for key in ("series", "series_spread"):
        a, b = whole[key]["channels"]["tasmax"], banded[key]["channels"]["tasmax"]
        np.testing.assert_allclose(a["quantile_bias"]["pointwise_mean"],
                                   b["quantile_bias"]["pointwise_mean"], rtol=1e-12)
        assert a["indices"]["txx"]["bias"] == pytest.approx(b["indices"]["txx"]["bias"])
        assert a["perkins"] == b["perkins"]
    assert whole["series"]["channels"]["tasmax"]["quantile_bias"]["pointwise_mean"][2] == \
        pytest.approx(0.1, abs=1e-4)  # members +0, +0.1, +0.2 (float32): bias 0.1, spread 0.1
    assert whole["series_spread"]["channels"]["tasmax"]["quantile_bias"]["pointwise_mean"][2] == \
        pytest.approx(0.1, abs=1e-4)
    monkeypatch.setattr(series_module, "POOLED_VALUES", daily["tasmax"].size // 3)
    strided = weather_sr.score(ens, daily, **options)["prediction"]["series"]
    assert strided["pooled_stride"] == 3
    assert strided["channels"]["tasmax"]["wasserstein"]["pointwise_mean"] == pytest.approx(
        whole["series"]["channels"]["tasmax"]["wasserstein"]["pointwise_mean"], rel=1e-12)


def test_intervals_and_significance_on_known_cases(daily: xr.Dataset) -> None:
    """With the truth as a reference, a constant offset loses significantly; the intervals
    bracket the score; a method against an identical copy is a tie (p = 1)."""
    pred = daily.copy()
    pred["tasmax"] = daily["tasmax"] + 0.5
    results = weather_sr.score({"ref": daily, "off": pred, "copy": daily.copy()}, daily,
                               chunk_fields=365)
    off = results["off"]
    lo, hi = off["intervals"]["rmse"]["tasmax"]
    assert lo <= off["metrics"]["tasmax"]["rmse"] <= hi
    test = off["paired"]["ref"]["rmse"]["tasmax"]
    assert test["significant"] and test["diff"] == pytest.approx(0.5)
    tie = results["copy"]["paired"]["ref"]["crps"]["pr"]
    assert tie["diff"] == 0 and tie["p_value"] == 1 and not tie["significant"]


def test_calibration_of_an_exchangeable_ensemble_is_flat(daily: xr.Dataset) -> None:
    """Truth and members drawn from one distribution: PIT density near 1 in every bin, the
    reliability term of the Brier score near 0, spread/skill near 1."""
    rng = np.random.default_rng(5)
    base = daily  # 8760 (time, point) values: a bin of the PIT holds 876 +- 30
    noise = lambda: rng.normal(0, 1, base["tasmax"].shape)  # noqa: E731
    truth = base.assign(tasmax=base["tasmax"] + noise())
    ens = xr.concat([base.assign(tasmax=base["tasmax"] + noise()) for _ in range(8)], dim="member")
    r = weather_sr.score(ens, truth, variables=["tasmax"], chunk_fields=365)["prediction"]
    pit = np.asarray(r["pit_histogram"]["tasmax"]) * 10
    assert np.abs(pit - 1).max() < 0.15, pit  # 4.5 standard deviations of a bin
    assert r["metrics"]["tasmax"]["spread_skill"] == pytest.approx(1.0, abs=0.05)
    assert max(r["reliability"]["channels"]["tasmax"]["brier_reliability"]) < 0.01


def test_too_few_fields_for_the_bootstrap_get_no_intervals(daily: xr.Dataset) -> None:
    """10 fields in blocks of 2 are 5 blocks, fewer than MIN_BLOCKS: no intervals and no tests
    (with 2 blocks every difference would look significant); --block 1 makes 10 blocks."""
    short = daily.isel(time=slice(0, 10))
    off = short.assign(tasmax=short["tasmax"] + 0.5)
    few = weather_sr.score({"ref": short, "off": off}, short, variables=["tasmax"])["off"]
    assert "intervals" not in few and "paired" not in few
    iid = weather_sr.score({"ref": short, "off": off}, short, variables=["tasmax"], block=1)
    assert iid["off"]["paired"]["ref"]["rmse"]["tasmax"]["significant"]
