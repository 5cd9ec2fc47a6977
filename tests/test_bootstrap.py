"""Block bootstrap of ratio scores: index identities, the iid normal limit, coverage of the
percentile interval on iid and AR(1) series, and paired differences."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.signal import lfilter

from weather_sr.errors import UserError
from weather_sr.evaluation import bootstrap as bs

N_REP = 400  # coverage repetitions
COVERAGE_TOL = 3 * math.sqrt(0.95 * 0.05 / N_REP)  # 3 Monte-Carlo standard errors: 0.033


@pytest.mark.parametrize(("n", "block"), [(23, 5), (20, 5), (23, 1), (23, 23), (7, 3)])
def test_indices_are_circular_blocks_of_the_requested_length(n, block):
    idx = bs.block_bootstrap_indices(n, block, 300, rng=np.random.default_rng(0))
    assert idx.shape == (300, n) and idx.dtype.kind == "i"
    assert idx.min() >= 0 and idx.max() < n
    for row in idx:
        for p in range(0, n, block):  # every block: consecutive times, wrapping from n-1 to 0
            seg = row[p : p + block]
            np.testing.assert_array_equal(seg, (seg[0] + np.arange(seg.size)) % n)
    # circular: every time is drawn once per replicate on average (moving blocks under-draw ends)
    counts = np.stack([np.bincount(r, minlength=n) for r in idx])
    big = bs.block_bootstrap_indices(n, block, 4000, rng=np.random.default_rng(1))
    mean_count = np.stack([np.bincount(r, minlength=n) for r in big]).mean(axis=0)
    assert counts.sum(axis=1).tolist() == [n] * 300
    np.testing.assert_allclose(mean_count, 1.0, atol=0.1)  # sd of each mean count < 0.02


def test_default_block_length_rule_of_thumb():
    assert [bs.default_block_length(n) for n in (1, 8, 27, 365, 1000)] == [1, 2, 3, 7, 10]


@pytest.mark.parametrize("block", [1, 4, 10, 37])
def test_bootstrap_sums_equal_the_sums_over_the_indices(block, monkeypatch):
    x = np.random.default_rng(2).normal(size=(37, 3))
    idx = bs.block_bootstrap_indices(37, block, 50, rng=np.random.default_rng(3))
    ref = x[idx].sum(axis=1)
    np.testing.assert_allclose(bs.bootstrap_sums(x, block, 50, rng=np.random.default_rng(3)), ref,
                               rtol=1e-12, atol=1e-12)
    monkeypatch.setattr(bs, "_CHUNK", 7)  # many chunks of replicates draw the same starts
    np.testing.assert_allclose(bs.bootstrap_sums(x, block, 50, rng=np.random.default_rng(3)), ref,
                               rtol=1e-12, atol=1e-12)


def test_iid_interval_of_the_mean_approaches_the_normal_interval():
    t = 5000
    v = np.random.default_rng(4).normal(3.0, 2.0, size=(t, 1))
    lo, hi = bs.bootstrap_interval(v, np.ones((t, 1)), block=1, n_boot=8000,
                                   rng=np.random.default_rng(5))
    se = v.std(ddof=1) / math.sqrt(t)
    # the bootstrap quantiles have Monte-Carlo sd ≈ 0.03 se at 8000 replicates
    assert abs(lo[0] - (v.mean() - 1.96 * se)) < 0.1 * se
    assert abs(hi[0] - (v.mean() + 1.96 * se)) < 0.1 * se


def _coverage(series: np.ndarray, block: int, n_boot: int, rng: np.random.Generator) -> float:
    """Fraction of the rows of ``series [R, T]`` whose interval covers the true mean 0."""
    ones = np.ones((series.shape[1], 1))
    hits = 0
    for row in series:
        lo, hi = bs.bootstrap_interval(row[:, None], ones, block=block, n_boot=n_boot, rng=rng)
        hits += bool(lo[0] <= 0.0 <= hi[0])
    return hits / series.shape[0]


def test_coverage_iid():
    # small-sample allowance 0.005: at T = 200 the percentile interval is the z interval with
    # the variance / T (not / (T - 1)): expected coverage ≈ 0.946
    rng = np.random.default_rng(6)
    cov = _coverage(rng.normal(size=(N_REP, 200)), block=1, n_boot=500, rng=rng)
    assert abs(cov - 0.95) <= COVERAGE_TOL + 0.005, cov


def test_coverage_ar1_with_blocks_and_not_without():
    rho, t, block = 0.6, 4000, 40
    rng = np.random.default_rng(7)
    start = rng.normal(size=N_REP) / math.sqrt(1 - rho**2)  # stationary from the first time
    series, _ = lfilter([1.0], [1.0, -rho], rng.normal(size=(N_REP, t)), axis=1,
                        zi=(rho * start)[:, None])
    # allowance 0.02: the block bootstrap's variance of the mean is biased by about
    # -(2/L) Σ_k k γ(k) = -4.7 % of the long-run variance at L = 40, and the block variance
    # estimate varies (relative variance ≈ 4L/3T): expected coverage ≈ 0.935 (3000 series)
    cov = _coverage(series, block=block, n_boot=500, rng=rng)
    assert abs(cov - 0.95) <= COVERAGE_TOL + 0.02, cov
    # iid resampling ignores the dependence: the interval is half as wide, coverage
    # 2Φ(1.96 / 2) - 1 ≈ 0.67 (sd 0.05 over 100 series)
    assert _coverage(series[:100, :1000], block=1, n_boot=200, rng=rng) < 0.8


def test_sqrt_transform_is_the_rmse_of_the_resampled_sums():
    rng = np.random.default_rng(8)
    den = rng.uniform(50, 60, size=(120, 2))
    num = den * rng.gamma(4.0, 0.5, size=(120, 2))
    lo_i, hi_i = bs.bootstrap_interval(num, den, block=6, rng=np.random.default_rng(9))
    lo_s, hi_s = bs.bootstrap_interval(num, den, transform="sqrt", block=6,
                                       rng=np.random.default_rng(9))
    # quantiles commute with the monotone sqrt up to the interpolation between replicates
    np.testing.assert_allclose(lo_s, np.sqrt(lo_i), rtol=1e-4)
    np.testing.assert_allclose(hi_s, np.sqrt(hi_i), rtol=1e-4)
    rmse = np.sqrt(num.sum(axis=0) / den.sum(axis=0))
    assert np.all((lo_s < rmse) & (rmse < hi_s))


def _field_sums(err: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-time sums ``([T, C], [T, C])`` of w e² and w for errors ``err [T, C, P]``."""
    return (w * err**2).sum(axis=-1), np.broadcast_to(w, err.shape).sum(axis=-1)


def test_paired_difference_of_a_method_with_itself_is_zero():
    rng = np.random.default_rng(10)
    num, den = _field_sums(rng.normal(size=(150, 2, 64)), rng.uniform(0.5, 1, size=64))
    out = bs.paired_difference(num, num, den, transform="sqrt", rng=rng)
    for key in ("diff", "lo", "hi"):
        np.testing.assert_array_equal(out[key], 0.0)
    np.testing.assert_array_equal(out["p_value"], 1.0)
    assert not out["significant"].any()


def test_paired_difference_detects_a_constant_offset_with_its_sign():
    rng = np.random.default_rng(11)
    t, p = 200, 64
    w = rng.uniform(0.5, 1, size=p)
    common = np.cumsum(rng.normal(size=(t, 2, 1)), axis=0) * 0.3  # shared, persistent weather
    err_b = common + rng.normal(size=(t, 2, p))
    err_a = err_b + np.array([0.3, 0.0])[None, :, None]  # channel 0 biased, channel 1 the same
    num_a, den = _field_sums(err_a, w)
    num_b, _ = _field_sums(err_b, w)
    out = bs.paired_difference(num_a, num_b, den, transform="sqrt", block=10, n_boot=2000,
                               rng=np.random.default_rng(12))
    assert out["diff"][0] > 0 and out["lo"][0] > 0 and out["significant"][0]
    assert out["p_value"][0] < 0.01
    assert out["diff"][1] == 0 and not out["significant"][1] and out["p_value"][1] == 1.0
    swapped = bs.paired_difference(num_b, num_a, den, transform="sqrt", block=10, n_boot=2000,
                                   rng=np.random.default_rng(12))
    assert swapped["diff"][0] < 0 and swapped["hi"][0] < 0 and swapped["significant"][0]
    np.testing.assert_allclose(swapped["diff"], -out["diff"], atol=1e-15)


def test_results_are_reproducible_from_the_seed():
    rng = np.random.default_rng(13)
    num, den = rng.normal(size=(50, 3)), np.ones((50, 3))
    a = bs.bootstrap_interval(num, den, block=5, rng=np.random.default_rng(14))
    b = bs.bootstrap_interval(num, den, block=5, rng=np.random.default_rng(14))
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"block": 0}, "block"),
        ({"block": 51}, "block"),
        ({"n_boot": 0}, "n_boot"),
        ({"level": 1.0}, "level"),
        ({"transform": "log"}, "transform"),
        ({"transform": "sqrt"}, "sqrt"),  # num has negative values
        ({"rng": 3}, "rng"),
    ],
)
def test_user_errors(kwargs, match):
    rng = np.random.default_rng(15)
    num, den = rng.normal(size=(50, 2)), np.ones((50, 2))
    args = {"rng": rng, **kwargs}
    with pytest.raises(UserError, match=match):
        bs.bootstrap_interval(num, den, **args)


def test_user_errors_shapes_and_weights():
    rng = np.random.default_rng(16)
    with pytest.raises(UserError, match="num"):
        bs.bootstrap_interval(np.ones((50, 2)), np.ones((50, 3)), rng=rng)
    with pytest.raises(UserError, match="den"):
        bs.bootstrap_interval(np.ones((50, 2)), np.zeros((50, 2)), rng=rng)
    with pytest.raises(UserError, match="2 times"):
        bs.bootstrap_interval(np.ones((1, 2)), np.ones((1, 2)), rng=rng)
    with pytest.raises(UserError, match="num_b"):
        bs.paired_difference(np.ones((9, 2)), np.ones((9, 1)), np.ones((9, 2)), rng=rng)
