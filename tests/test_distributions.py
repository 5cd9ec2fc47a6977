"""Distribution scores (weather_sr.evaluation.distributions) against closed cases and references."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import scipy.stats

from weather_sr.errors import UserError
from weather_sr.evaluation import distributions as D


def _series(seed: int = 0, t: int = 240, p: int = 6, missing: bool = True):
    """Truth ``[T, P]`` (gamma-like skewed values, a few NaNs) and area weights ``[P]``."""
    rng = np.random.default_rng(seed)
    y = rng.gamma(2.0, 1.5, size=(t, p)) + rng.normal(size=(t, p))
    if missing:
        y[rng.random((t, p)) < 0.05] = np.nan
    w = np.cos(np.deg2rad(np.linspace(40, 60, p)))
    return y, w


def _pooled(y, x, w):
    valid = np.isfinite(y)
    ww = np.broadcast_to(w, y.shape)[valid]
    return y[valid], x[valid], ww


def test_truth_against_itself_scores_perfectly():
    y, w = _series()
    qb = D.quantile_bias(y, y, weights=w)
    assert np.all(qb["pooled"] == 0) and np.all(qb["pointwise_mean"] == 0)
    w1 = D.wasserstein1(y, y, weights=w)
    assert w1["pooled"] == 0 and w1["pointwise_mean"] == 0
    assert D.perkins_skill_score(y, y, weights=w) == pytest.approx(1.0, abs=1e-12)
    assert D.log_histogram_distance(y, y, weights=w, bins=10) == 0.0
    y3 = np.stack([y, 2 * y + _series(1)[0], -y], axis=1)
    cb = D.correlation_bias(y3, y3, weights=w)
    assert cb["pairs"] == [(0, 1), (0, 2), (1, 2)]
    assert np.all(cb["pooled"] == 0) and np.all(cb["pointwise_mean"] == 0)
    assert cb["truth"][1] == pytest.approx(-1.0)  # variable 2 is -variable 0


@pytest.mark.parametrize("c", [0.75, -2.5])
def test_shifted_prediction_has_biases_c_and_wasserstein_abs_c(c):
    y, w = _series(2)
    x = y + c
    qb = D.quantile_bias(y, x, weights=w)
    np.testing.assert_allclose(qb["pooled"], c, rtol=0, atol=1e-12)
    np.testing.assert_allclose(qb["pointwise"], c, rtol=0, atol=1e-12)
    np.testing.assert_allclose(qb["pointwise_mean"], c, rtol=0, atol=1e-12)
    w1 = D.wasserstein1(y, x, weights=w)
    assert w1["pooled"] == pytest.approx(abs(c), abs=1e-12)
    np.testing.assert_allclose(w1["pointwise"], abs(c), rtol=0, atol=1e-12)


def test_pooled_wasserstein_equals_scipy_with_weights():
    y, w = _series(3)
    x = 1.2 * np.where(np.isfinite(y), y, 0.0) - 0.4 + np.random.default_rng(4).normal(size=y.shape)
    py, px, ww = _pooled(y, x, w)
    expected = scipy.stats.wasserstein_distance(py, px, ww, ww)
    assert D.wasserstein1(y, x, weights=w)["pooled"] == pytest.approx(expected, rel=1e-12)
    # unequal sample sizes and weights
    rng = np.random.default_rng(5)
    u, v = rng.normal(size=300), rng.exponential(size=170)
    uw, vw = rng.uniform(0, 2, 300), rng.uniform(0, 2, 170)
    assert D.weighted_wasserstein1(u, v, uw, vw) == pytest.approx(
        scipy.stats.wasserstein_distance(u, v, uw, vw), rel=1e-12)


def test_pointwise_wasserstein_equals_scipy_per_point():
    y, _ = _series(6)
    x = 0.8 * y + 1.0
    got = D.wasserstein1(y, x)["pointwise"]
    for p in range(y.shape[1]):
        ok = np.isfinite(y[:, p])
        assert got[p] == pytest.approx(scipy.stats.wasserstein_distance(y[ok, p], x[ok, p]))


def test_weighted_quantile_equals_repetition_reference():
    rng = np.random.default_rng(7)
    values = np.round(rng.normal(size=150), 1)  # ties included
    weights = rng.integers(0, 6, size=150)  # zero weights included
    q = np.array([0.0, 0.01, 0.05, 0.2, 0.5, 0.95, 0.99, 1.0])
    reference = np.quantile(np.repeat(values, weights), q, method="inverted_cdf")
    np.testing.assert_array_equal(D.weighted_quantile(values, q, weights), reference)
    # equal weights: numpy's inverted_cdf
    np.testing.assert_array_equal(D.weighted_quantile(values, q),
                                  np.quantile(values, q, method="inverted_cdf"))


def test_pooled_quantile_bias_equals_repetition_reference():
    y, _ = _series(8, t=60, p=4)
    x = y**2 / 4
    w = np.array([1, 3, 2, 5])
    q = (0.05, 0.5, 0.95)
    ok = np.isfinite(y)
    reps = np.broadcast_to(w, y.shape)[ok]
    ref = (np.quantile(np.repeat(x[ok], reps), q, method="inverted_cdf")
           - np.quantile(np.repeat(y[ok], reps), q, method="inverted_cdf"))
    np.testing.assert_allclose(D.quantile_bias(y, x, quantiles=q, weights=w)["pooled"], ref)


def test_histogram_scores_of_disjoint_and_known_distributions():
    y = np.tile(np.arange(4.0), (25, 1))  # 25 times, 4 points: values 0..3 equally often
    assert D.perkins_skill_score(y, y + 10.0, bins=20) == 0.0  # no overlap
    # prediction puts all mass on 0 and 1: frequencies (.5, .5, 0, 0) against (.25, ...)
    x = np.where(y > 1, y - 2, y)
    edges = [-0.5, 0.5, 1.5, 2.5, 3.5]
    assert D.perkins_skill_score(y, x, bins=edges) == pytest.approx(0.5)
    expected = np.sqrt(10.0 * np.log10(0.25 / 0.5) ** 2)  # bins 0 and 1 qualify (> 10 counts)
    assert D.log_histogram_distance(y, x, bins=edges) == pytest.approx(expected)
    assert np.isnan(D.log_histogram_distance(y, x, bins=edges, min_count=100))


def test_lag1_autocorrelation_of_ar1():
    rng = np.random.default_rng(11)
    t, p, rho = 20000, 4, 0.7
    noise = rng.normal(size=(t, p))
    s = np.empty((t, p))
    s[0] = noise[0] / np.sqrt(1 - rho**2)
    for i in range(1, t):
        s[i] = rho * s[i - 1] + noise[i]
    r = D.lag1_autocorrelation(s)
    assert r.shape == (p,)
    np.testing.assert_allclose(r, rho, atol=4 * np.sqrt((1 - rho**2) / t))  # 4 standard errors
    s[100:110, 0] = np.nan  # missing values only drop pairs
    assert abs(D.lag1_autocorrelation(s)[0] - r[0]) < 1e-3
    assert np.isnan(D.lag1_autocorrelation(np.ones((10, 2)))).all()  # constant: undefined
    assert D.lag1_autocorrelation_bias(s, s)["bias_mean"] == 0.0


def test_interannual_variability_equals_hand_loop():
    rng = np.random.default_rng(12)
    years = np.repeat([1990, 1991, 1992, 1993, 1994], 73)
    s = rng.normal(size=(years.size, 3)) + rng.normal(size=(5, 1, 3)).repeat(73, 0).reshape(-1, 3)
    s[5, 1] = np.nan
    expected = []
    for p in range(3):
        means = [np.nanmean(s[years == yr, p]) for yr in np.unique(years)]
        expected.append(np.std(means))  # ddof=0 as the benchmark (xarray's std)
    np.testing.assert_allclose(D.interannual_variability(s, years), expected, rtol=1e-12)
    times = np.array([f"{yr}-06-01" for yr in years], dtype="datetime64[D]")
    np.testing.assert_allclose(D.interannual_variability(s, times), expected, rtol=1e-12)
    assert np.isnan(D.interannual_variability(s[:73], years[:73])).all()  # one year only
    ratio = D.interannual_variability_ratio(s, 2 * s, years)
    np.testing.assert_allclose(ratio["ratio"], 2.0)
    assert ratio["ratio_mean"] == pytest.approx(2.0)


def test_correlation_bias_of_decorrelated_prediction():
    rng = np.random.default_rng(13)
    a = rng.normal(size=(500, 5))
    y = np.stack([a, a + 0.5 * rng.normal(size=a.shape)], axis=1)  # r = 1/sqrt(1.25)
    x = np.stack([a, rng.normal(size=a.shape)], axis=1)  # r ~ 0
    cb = D.correlation_bias(y, x)
    r_true = 1 / np.sqrt(1.25)
    assert cb["truth"][0] == pytest.approx(r_true, abs=0.03)
    assert cb["pooled"][0] == pytest.approx(-r_true, abs=0.06)
    assert cb["pointwise"].shape == (1, 5)
    assert cb["pointwise_mean"][0] == pytest.approx(-r_true, abs=0.06)
    assert cb["pooled"][0] == pytest.approx(cb["pred"][0] - cb["truth"][0])
    assert cb["pred"][0] == pytest.approx(np.corrcoef(a.ravel(), x[:, 1].ravel())[0, 1])


def test_ensemble_summary_mean_and_spread():
    y, w = _series(14)
    x = y + 1.0
    same = D.ensemble_summary(D.wasserstein1, y, np.stack([x, x, x], axis=1), weights=w)
    assert same["members"] == 3
    assert same["spread"]["pooled"] == 0.0 and np.all(same["spread"]["pointwise"] == 0)
    assert same["mean"]["pooled"] == pytest.approx(1.0)
    qb = D.ensemble_summary(D.quantile_bias, y, np.stack([y + 1.0, y + 3.0], axis=1), weights=w)
    np.testing.assert_allclose(qb["mean"]["pooled"], 2.0)
    np.testing.assert_allclose(qb["spread"]["pooled"], np.sqrt(2.0))  # std of {1, 3}, ddof=1
    pss = D.ensemble_summary(D.perkins_skill_score, y, np.stack([y, y], axis=1))
    assert isinstance(pss["mean"], float) and pss["spread"] == 0.0
    y3 = np.stack([y, -y], axis=1)
    cb = D.ensemble_summary(D.correlation_bias, y3, np.stack([y3, y3], axis=1))
    assert cb["mean"]["pairs"] == [(0, 1)] and cb["spread"]["pooled"][0] == 0.0
    years = np.repeat([2000, 2001, 2002], 80)
    iv = D.ensemble_summary(D.interannual_variability_ratio, y, np.stack([y, y], 1), years)
    assert iv["mean"]["ratio_mean"] == pytest.approx(1.0) and iv["spread"]["ratio_mean"] == 0


def test_user_errors():
    y, w = _series(15)
    with pytest.raises(UserError, match="prediction: expected shape"):
        D.wasserstein1(y, y[:-1])
    x = np.where(np.isfinite(y), y, 0.0)
    x[np.unravel_index(np.flatnonzero(np.isfinite(y))[0], y.shape)] = np.nan
    with pytest.raises(UserError, match="NaN or inf where the truth is valid"):
        D.quantile_bias(y, x)
    D.quantile_bias(y, np.where(np.isfinite(y), y, np.nan))  # NaN where the truth is: fine
    with pytest.raises(UserError, match="weights"):
        D.wasserstein1(y, y, weights=w[:-1])
    with pytest.raises(UserError, match="quantiles"):
        D.quantile_bias(y, y, quantiles=(0.5, 1.5))
    with pytest.raises(UserError, match="at least 2 members"):
        D.ensemble_summary(D.wasserstein1, y, y[:, None])
    with pytest.raises(UserError, match="members on axis 1"):
        D.ensemble_summary(D.wasserstein1, y, y)
    with pytest.raises(UserError, match="at least 2 variables"):
        D.correlation_bias(y[:, None], y[:, None])
    with pytest.raises(UserError, match="bins"):
        D.perkins_skill_score(y, y, bins=[1.0, 0.0])
    with pytest.raises(UserError, match="no valid value"):
        D.wasserstein1(np.full((4, 2), np.nan), np.zeros((4, 2)))


def test_pointwise_quantiles_equal_numpys_inverted_cdf_with_missing_values() -> None:
    rng = np.random.default_rng(11)
    x = rng.normal(size=(37, 50))
    x[rng.random(x.shape) < 0.2] = np.nan
    x[:, 3] = np.nan  # a point with no valid time: NaN
    q = np.array([0.0, 0.01, 0.05, 0.5, 0.95, 0.99, 1.0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        want = np.nanquantile(x, q, axis=0, method="inverted_cdf")
    np.testing.assert_array_equal(D.pointwise_quantiles(x, q), want)
