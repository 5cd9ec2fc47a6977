"""Calibration sums: PIT histogram, reliability diagram / Brier score and energy score against
``scores``, brute-force loops, the fair CRPS, chunk additivity and statistical properties."""

from __future__ import annotations

import operator

import numpy as np
import pytest
import scipy.stats
import xarray as xr
from scores.probability import Pit, brier_score_for_ensemble

from weather_sr.errors import UserError
from weather_sr.evaluation import bootstrap, calibration, metrics

DIMS = ("n", "member", "c", "h", "w")


def _case(seed=0, n=3, m=5, c=2, h=6, w=7, integer=False):
    """Truth, an over-dispersed biased ensemble and weights [N, 1, H, W] with zeros (and NaN
    truth at a zero-weight pixel)."""
    rng = np.random.default_rng(seed)
    y = rng.normal(size=(n, c, h, w))
    x = 1.3 * rng.normal(size=(n, m, c, h, w)) + 0.2
    if integer:  # many ties between members and truth
        y, x = np.round(y), np.round(x)
    wt = rng.uniform(0.2, 1.0, size=(n, 1, h, w))
    wt[0, 0, 0, :3] = 0.0
    y[0, :, 0, 0] = np.nan
    return y, x, wt


# --- PIT ---------------------------------------------------------------------------------------


def test_pit_histogram_of_m_plus_1_bins_equals_scores_pit():
    # scores' PIT of an ensemble is uniform on [F(y-), F(y)] of the members' empirical CDF: the
    # point r / M without ties, which falls in right-closed bin r of M + 1 bins, as our
    # (r + U) / (M + 1) does; for other bin counts the two definitions differ (brute force below)
    y, x, wt = _case()
    m = x.shape[1]
    valid = wt[:, 0] > 0
    obs = xr.DataArray(y, dims=("n", "c", "h", "w")).where(valid[:, None])
    ref = Pit(xr.DataArray(x, dims=DIMS), obs, ensemble_member_dim="member",
              preserve_dims=["c"], weights=xr.DataArray(wt[:, 0], dims=("n", "h", "w")))
    ref = ref.hist_values(m + 1).transpose("c", "bin_centre").values
    counts = calibration.pit_counts(y, x, wt, m + 1, np.random.default_rng(1))
    np.testing.assert_allclose(counts / counts.sum(axis=1, keepdims=True), ref, atol=1e-12)


@pytest.mark.parametrize("bins", [3, 7, 10])
def test_pit_counts_match_a_brute_force_loop_with_ties(bins):
    y, x, wt = _case(seed=2, m=4, integer=True)
    counts = calibration.pit_counts(y, x, wt, bins, np.random.default_rng(3))
    u = np.random.default_rng(3).random(y.shape)  # one uniform per pixel, in C order
    n, m, c, h, w = x.shape
    ref = np.zeros((c, bins))
    for i in range(n):
        for k in range(c):
            for r in range(h):
                for j in range(w):
                    if wt[i, 0, r, j] == 0:
                        continue
                    members = x[i, :, k, r, j]
                    below = int((members < y[i, k, r, j]).sum())
                    ties = int((members == y[i, k, r, j]).sum())
                    rank = below + int(np.floor(u[i, k, r, j] * (ties + 1)))  # tie share
                    frac = u[i, k, r, j] * (ties + 1) % 1.0  # the U of (r + U) / (M + 1)
                    pit = (rank + frac) / (m + 1)
                    ref[k, min(int(pit * bins), bins - 1)] += wt[i, 0, r, j]
    np.testing.assert_allclose(counts, ref, rtol=1e-12)


def test_pit_counts_of_m_plus_1_bins_are_the_rank_histogram_without_ties():
    y, x, wt = _case(seed=4)
    y0, x0, w0 = metrics.prepare_chunk(y, x, (wt > 0).astype(float), None, ensemble=True)
    ranks = metrics.rank_counts(y0, x0, w0, seed=0)
    counts = calibration.pit_counts(y, x, (wt > 0).astype(float), x.shape[1] + 1,
                                    np.random.default_rng(5))
    np.testing.assert_array_equal(counts, ranks)


def test_pit_counts_of_chunks_add_up_to_one_pass():
    y, x, wt = _case(seed=6, n=5, integer=True)
    whole = calibration.pit_counts(y, x, wt, 8, np.random.default_rng(7))
    rng = np.random.default_rng(7)
    parts = sum(calibration.pit_counts(y[s], x[s], wt[s], 8, rng) for s in (slice(0, 2),
                                                                           slice(2, 5)))
    np.testing.assert_allclose(parts, whole, rtol=1e-12)


def _ensemble(rng, n, m, spread, integer=False):
    """Truth and M members around a shared random mean; members with ``spread`` x the truth's
    noise (1 = calibrated: truth and members drawn from the same distribution)."""
    mu = 2.0 * rng.normal(size=(n, 1, 16, 16))
    y = mu + rng.normal(size=mu.shape)
    x = mu[:, None] + spread * rng.normal(size=(n, m, 1, 16, 16))
    return (np.round(y), np.round(x)) if integer else (y, x)


@pytest.mark.parametrize("integer", [False, True])
def test_pit_histogram_is_flat_for_a_calibrated_ensemble(integer):
    # rounding to integers makes ties common; the randomised PIT stays exactly uniform
    rng = np.random.default_rng(8)
    y, x = _ensemble(rng, 80, 9, 1.0, integer)  # 20480 pixels
    counts = calibration.pit_counts(y, x, np.ones((1, 1, 16, 16)), 10, rng)[0]
    expected = counts.sum() / 10
    chi2 = ((counts - expected) ** 2 / expected).sum()
    assert chi2 < scipy.stats.chi2.ppf(0.999, df=9), counts  # multinomial counts, unit weights


def test_pit_histogram_is_u_shaped_for_an_under_dispersed_ensemble():
    rng = np.random.default_rng(9)
    y, x = _ensemble(rng, 40, 9, 0.5)
    freq = calibration.pit_counts(y, x, np.ones((1, 1, 16, 16)), 10, rng)[0]
    freq = freq / freq.sum()
    # the truth falls outside the members far more often than 1 / (M + 1) = 0.1 per side
    assert freq[0] > 0.2 and freq[-1] > 0.2
    assert np.all(freq[3:7] < 0.08)
    assert freq[0] > freq[1] > freq[4] and freq[-1] > freq[-2] > freq[5]


# --- reliability and Brier ---------------------------------------------------------------------


def test_reliability_sums_match_a_brute_force_loop():
    y, x, wt = _case(seed=10, m=4)
    wc = np.broadcast_to(wt, y.shape).copy()
    wc[1, 1] *= 0.5  # per-channel weights
    thr = calibration.quantile_thresholds(y, wc, [0.5, 0.9])
    sums = calibration.reliability_sums(y, x, wc, thr)
    n, m, c, h, w = x.shape
    weight = np.zeros((c, 2, m + 1))
    observed = np.zeros_like(weight)
    for i in range(n):
        for k in range(c):
            for r in range(h):
                for j in range(w):
                    if wc[i, k, r, j] == 0:
                        continue
                    for t in range(2):
                        above = int((x[i, :, k, r, j] > thr[k, t]).sum())
                        weight[k, t, above] += wc[i, k, r, j]
                        observed[k, t, above] += wc[i, k, r, j] * (y[i, k, r, j] > thr[k, t])
    np.testing.assert_allclose(sums["weight"], weight, rtol=1e-12)
    np.testing.assert_allclose(sums["observed"], observed, rtol=1e-12)
    prob, freq = calibration.reliability_curve(sums)
    np.testing.assert_array_equal(prob, np.arange(m + 1) / m)
    np.testing.assert_array_equal(np.isnan(freq), weight == 0)
    ok = weight > 0
    np.testing.assert_allclose(freq[ok], observed[ok] / weight[ok], rtol=1e-12)


def test_reliability_sums_of_chunks_add_up_to_one_pass():
    y, x, wt = _case(seed=11, n=5)
    thr = np.array([[0.0, 1.0], [0.5, 1.5]])
    whole = calibration.reliability_sums(y, x, wt, thr)
    parts = [calibration.reliability_sums(y[s], x[s], wt[s], thr)
             for s in (slice(0, 2), slice(2, 5))]
    for key in ("weight", "observed"):
        np.testing.assert_allclose(parts[0][key] + parts[1][key], whole[key], rtol=1e-12)


def test_brier_scores_match_scores_and_decompose_exactly():
    y, x, wt = _case(seed=12, m=6)
    thr = calibration.quantile_thresholds(y, wt, [0.5, 0.9])
    out = calibration.brier_scores(calibration.reliability_sums(y, x, wt, thr))
    weights = xr.DataArray(wt[:, 0], dims=("n", "h", "w"))
    for k in range(y.shape[1]):
        fc = xr.DataArray(x[:, :, k], dims=("n", "member", "h", "w"))
        ob = xr.DataArray(y[:, k], dims=("n", "h", "w")).where(wt[:, 0] > 0)
        for t in range(2):
            for fair, key in ((False, "brier"), (True, "brier_fair")):
                ref = brier_score_for_ensemble(fc, ob, "member", thr[k, t], weights=weights,
                                               fair_correction=fair,
                                               event_threshold_operator=operator.gt)
                np.testing.assert_allclose(out[key][k, t], ref.values.item(), rtol=1e-12)
    decomposed = out["reliability"] - out["resolution"] + out["uncertainty"]
    np.testing.assert_allclose(out["brier"], decomposed, rtol=1e-12, atol=1e-15)


# --- energy score ------------------------------------------------------------------------------


def test_energy_score_of_one_channel_is_the_fair_crps():
    y, x, wt = _case(seed=13, c=1)
    num, den = calibration.energy_score_sums(y, x, wt, [2.0])
    y0, x0, w0 = metrics.prepare_chunk(y, x, (wt > 0).astype(float), None, ensemble=True)
    w0 = w0 * wt  # the same weights, NaN truth folded in
    crps = metrics.crps_fair_pointwise(y0, x0)
    np.testing.assert_allclose(num, (w0 * crps).sum(axis=(1, 2, 3)) / 2.0, rtol=1e-12)
    np.testing.assert_allclose(den, w0.sum(axis=(1, 2, 3)), rtol=1e-12)


def test_energy_score_matches_a_brute_force_loop():
    y, x, wt = _case(seed=14, c=3, m=4, h=4, w=5)
    wc = np.broadcast_to(wt, y.shape).copy()
    wc[1, 2, 0, 0] = 0.0  # invalid in one channel: the pixel drops out
    wc[2, 1] *= 0.5  # the smallest channel weight counts
    scales = np.array([1.0, 2.0, 0.5])
    num, den = calibration.energy_score_sums(y, x, wc, scales)
    n, m, _, h, w = x.shape
    ref_num, ref_den = np.zeros(n), np.zeros(n)
    for i in range(n):
        for r in range(h):
            for j in range(w):
                wp = wc[i, :, r, j].min()
                if wp == 0:
                    continue
                obs = y[i, :, r, j] / scales
                mem = [x[i, a, :, r, j] / scales for a in range(m)]
                skill = sum(np.linalg.norm(v - obs) for v in mem) / m
                spread = sum(np.linalg.norm(mem[a] - mem[b])
                             for a in range(m) for b in range(m) if a != b)
                ref_num[i] += wp * (skill - spread / (2 * m * (m - 1)))
                ref_den[i] += wp
    np.testing.assert_allclose(num, ref_num, rtol=1e-12)
    np.testing.assert_allclose(den, ref_den, rtol=1e-12)


def test_energy_score_prefers_the_right_correlation_between_channels():
    # truth and ensemble A: channels correlated 0.9; ensemble B: the same marginals, independent.
    # The CRPS of each channel cannot tell them apart; the energy score can (paired bootstrap).
    rng = np.random.default_rng(15)
    chol = np.linalg.cholesky([[1.0, 0.9], [0.9, 1.0]])
    y = np.einsum("ij,njhw->nihw", chol, rng.normal(size=(20, 2, 32, 32)))
    xa = np.einsum("ij,nmjhw->nmihw", chol, rng.normal(size=(20, 10, 2, 32, 32)))
    xb = rng.normal(size=(20, 10, 2, 32, 32))
    w = np.ones((1, 1, 32, 32))
    num_a, den = calibration.energy_score_sums(y, xa, w, [1.0, 1.0])
    num_b, _ = calibration.energy_score_sums(y, xb, w, [1.0, 1.0])
    out = bootstrap.paired_difference(num_a[:, None], num_b[:, None], den[:, None], block=1,
                                      rng=np.random.default_rng(16))
    assert out["diff"][0] < 0 and out["significant"][0] and out["p_value"][0] < 0.01


# --- user errors -------------------------------------------------------------------------------


def test_user_errors():
    y, x, wt = _case()
    rng = np.random.default_rng(0)
    with pytest.raises(UserError, match="ensemble"):
        calibration.pit_counts(y, x[:, :, :1], wt, 5, rng)
    with pytest.raises(UserError, match="w:"):
        calibration.pit_counts(y, x, wt[:, :, :3], 5, rng)
    with pytest.raises(UserError, match="w:"):
        calibration.pit_counts(y, x, -wt, 5, rng)
    with pytest.raises(UserError, match="NaN"):
        calibration.pit_counts(y, x, np.ones_like(wt), 5, rng)  # NaN truth with weight > 0
    with pytest.raises(UserError, match="bins"):
        calibration.pit_counts(y, x, wt, 0, rng)
    with pytest.raises(UserError, match="rng"):
        calibration.pit_counts(y, x, wt, 5, 0)
    with pytest.raises(UserError, match="thresholds"):
        calibration.reliability_sums(y, x, wt, np.zeros((3, 2)))
    with pytest.raises(UserError, match="levels"):
        calibration.quantile_thresholds(y, wt, [0.5, 1.0])
    with pytest.raises(UserError, match="2 members"):
        calibration.energy_score_sums(y, x[:, :1], wt, [1.0, 1.0])
    with pytest.raises(UserError, match="scales"):
        calibration.energy_score_sums(y, x, wt, [1.0, 0.0])
