"""Metrics against closed forms and explicit (loop) or independent library references."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import scipy.ndimage
import scipy.stats
import torch
import xarray as xr
from scores.probability import crps_for_ensemble
from skimage.metrics import structural_similarity

from weather_sr.errors import UserError
from weather_sr.evaluation import metrics
from weather_sr.evaluation.accumulate import evaluate_method


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def _loop_weighted_scores(y, x, mask, lat):
    """Plain-loop reference: weighted RMSE, MAE, bias per channel with w = mask * cos(lat)."""
    n, c, h, w = y.shape
    out = {"rmse": [], "mae": [], "bias": []}
    for k in range(c):
        sw = se2 = sae = se = 0.0
        for i in range(n):
            for r in range(h):
                for j in range(w):
                    wt = math.cos(math.radians(lat[r])) * mask[min(i, mask.shape[0] - 1), 0, r, j]
                    if not np.isfinite(y[i, k, r, j]):
                        wt = 0.0
                    if wt == 0.0:
                        continue
                    e = x[i, k, r, j] - y[i, k, r, j]
                    sw += wt
                    se2 += wt * e * e
                    sae += wt * abs(e)
                    se += wt * e
        out["rmse"].append(math.sqrt(se2 / sw))
        out["mae"].append(sae / sw)
        out["bias"].append(se / sw)
    return {k: np.array(v) for k, v in out.items()}


# ---------------------------------------------------------------- weights and pointwise scores


@pytest.mark.parametrize("lat0, lat1, step", [(-87.5, 87.5, 5.0), (30.25, 59.75, 0.5)])
def test_area_mean_of_latitude_bands_is_analytic(lat0, lat1, step):
    lat = np.arange(lat0, lat1 + step / 2, step)
    band = _rng(1).normal(size=lat.size)
    field = np.repeat(band[:, None], 7, axis=1)[None, None]  # [1, 1, H, 7]
    phi = np.deg2rad(lat)
    half = np.deg2rad(step) / 2
    cell = np.sin(phi + half) - np.sin(phi - half)  # exact area of each band (per unit lon)
    expected = (band * cell).sum() / cell.sum()
    w = metrics.pixel_weights(field.shape, lat=lat)
    assert metrics.channel_mean(field, w)[0] == pytest.approx(expected, rel=1e-12, abs=1e-12)
    got = metrics.bias(np.zeros_like(field), field, lat=lat)[0]
    assert got == pytest.approx(expected, rel=1e-12, abs=1e-12)
    assert np.mean(metrics.area_weights(lat)) == pytest.approx(1.0)


def test_pixel_weights_mean_one_over_valid_pixels():
    mask = (_rng(2).random((3, 1, 8, 9)) > 0.3).astype(float)
    w = metrics.pixel_weights((3, 2, 8, 9), mask=mask, lat=np.linspace(-80, 80, 8))
    assert w.shape == (3, 1, 8, 9)
    assert w[mask > 0].mean() == pytest.approx(1.0)
    assert np.all(w[mask == 0] == 0)


def test_pointwise_scores_match_loop_reference_with_mask_lat_and_nan():
    rng = _rng(3)
    y = rng.normal(size=(3, 2, 6, 5))
    x = y + rng.normal(0.3, 1.0, size=y.shape)
    y[1, 0, 2, 3] = np.nan  # NaN truth = invalid pixel
    mask = (rng.random((3, 1, 6, 5)) > 0.25).astype(float)
    lat = np.linspace(-60, 75, 6)
    ref = _loop_weighted_scores(y, x, mask, lat)
    np.testing.assert_allclose(metrics.rmse(y, x, mask=mask, lat=lat), ref["rmse"], rtol=1e-12)
    np.testing.assert_allclose(metrics.mae(y, x, mask=mask, lat=lat), ref["mae"], rtol=1e-12)
    np.testing.assert_allclose(metrics.bias(y, x, mask=mask, lat=lat), ref["bias"], rtol=1e-12)


def test_constant_offset_closed_form_and_input_types():
    y = _rng(4).normal(size=(2, 3, 8, 8))
    x = y - 0.7
    for conv in (np.asarray, torch.as_tensor, lambda a: xr.DataArray(a)):
        np.testing.assert_allclose(metrics.rmse(conv(y), conv(x)), 0.7, rtol=1e-12)
        np.testing.assert_allclose(metrics.mae(conv(y), conv(x)), 0.7, rtol=1e-12)
        np.testing.assert_allclose(metrics.bias(conv(y), conv(x)), -0.7, rtol=1e-12)


def test_member_scores_are_means_of_single_member_scores():
    rng = _rng(5)
    y = rng.normal(size=(2, 2, 8, 8))
    ens = y[:, None] + rng.normal(size=(2, 4, 2, 8, 8))
    lat = np.linspace(-45, 45, 8)
    got = metrics.member_scores(y, ens, lat=lat)
    for name, fn in (("rmse", metrics.rmse), ("mae", metrics.mae), ("bias", metrics.bias)):
        ref = np.mean([fn(y, ens[:, m], lat=lat) for m in range(4)], axis=0)
        np.testing.assert_allclose(got[name], ref, rtol=1e-12)


def test_bad_input_raises_user_error():
    y = np.zeros((2, 1, 8, 8))
    with pytest.raises(UserError, match="prediction"):
        metrics.rmse(y, np.zeros((2, 1, 8, 7)))
    with pytest.raises(UserError, match="ensemble"):
        metrics.crps_fair(y, np.zeros((2, 1, 8, 8)))
    with pytest.raises(UserError, match="lat"):
        metrics.rmse(y, y, lat=np.zeros(5))
    with pytest.raises(UserError, match="mask"):
        metrics.rmse(y, y, mask=np.zeros((2, 1, 8, 8)))
    with pytest.raises(UserError, match="NaN"):
        metrics.rmse(y, np.full_like(y, np.nan))


# ---------------------------------------------------------------- SSIM


def _ssim_map_reference(a: np.ndarray, b: np.ndarray, data_range: float) -> np.ndarray:
    """Wang et al. (2004) SSIM map written out with scipy Gaussian filters."""

    def filt(z):
        return scipy.ndimage.gaussian_filter(z, sigma=1.5, truncate=3.5, mode="reflect")

    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mu_a, mu_b = filt(a), filt(b)
    va = filt(a * a) - mu_a**2
    vb = filt(b * b) - mu_b**2
    cov = filt(a * b) - mu_a * mu_b
    return ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (va + vb + c2))


def test_ssim_identity_skimage_and_explicit_reference():
    rng = _rng(6)
    y = scipy.ndimage.gaussian_filter(rng.normal(size=(2, 2, 24, 20)), (0, 0, 2, 2)) * 5 + 280
    x = y + rng.normal(scale=0.2, size=y.shape)
    np.testing.assert_allclose(metrics.ssim(y, y), 1.0, atol=1e-12)
    got = metrics.ssim(y, x)
    sk = np.zeros(2)
    ref = np.zeros(2)
    for c in range(2):
        for i in range(2):
            dr = y[i, c].max() - y[i, c].min()
            sk[c] += (
                structural_similarity(
                    y[i, c],
                    x[i, c],
                    data_range=dr,
                    gaussian_weights=True,
                    sigma=1.5,
                    use_sample_covariance=False,
                )
                / 2
            )
            ref[c] += _ssim_map_reference(y[i, c], x[i, c], dr)[5:-5, 5:-5].mean() / 2
    np.testing.assert_allclose(got, sk, rtol=1e-10)
    np.testing.assert_allclose(got, ref, rtol=1e-6)
    assert np.all(got < 1.0)


def test_ssim_weights_the_map_by_latitude_and_mask():
    rng = _rng(7)
    y = rng.normal(size=(1, 1, 20, 16))
    x = y + rng.normal(scale=0.5, size=y.shape)
    lat = np.linspace(-70, 70, 20)
    mask = np.ones((1, 1, 20, 16))
    mask[..., :, 12:] = 0
    got = metrics.ssim(y, x, lat=lat, mask=mask)[0]
    dr = y[0, 0][:, :12].max() - y[0, 0][:, :12].min()
    fill = y[0, 0][:, :12].mean()
    a = np.where(mask[0, 0] > 0, y[0, 0], fill)
    b = np.where(mask[0, 0] > 0, x[0, 0], fill)
    smap = _ssim_map_reference(a, b, dr)[5:-5, 5:-5]
    wts = (np.cos(np.deg2rad(lat))[:, None] * mask[0, 0])[5:-5, 5:-5]
    assert got == pytest.approx((smap * wts).sum() / wts.sum(), rel=1e-6)


# ---------------------------------------------------------------- CRPS


def test_fair_crps_matches_explicit_double_loop():
    rng = _rng(8)
    y = rng.normal(size=(2, 1, 3, 4))
    ens = rng.normal(size=(2, 5, 1, 3, 4))
    ens[0, 1] = ens[0, 2]  # ties between members
    got = metrics.crps_fair_pointwise(y, ens)
    m = 5
    for idx in np.ndindex(y.shape):
        n, c, r, j = idx
        xs = ens[n, :, c, r, j]
        skill = sum(abs(v - y[idx]) for v in xs) / m
        spread = sum(abs(a - b) for a in xs for b in xs) / (2 * m * (m - 1))
        assert got[idx] == pytest.approx(skill - spread, rel=1e-12, abs=1e-14)


def test_fair_crps_matches_scores_package_with_weights():
    rng = _rng(9)
    y = rng.normal(size=(3, 2, 6, 7))
    ens = y[:, None] + rng.normal(0.2, 1.1, size=(3, 6, 2, 6, 7))
    lat = np.linspace(-50, 80, 6)
    mask = (rng.random((3, 1, 6, 7)) > 0.2).astype(float)
    got = metrics.crps_fair(y, ens, lat=lat, mask=mask)
    dims = ("time", "channel", "lat", "lon")
    obs = xr.DataArray(y, dims=dims)
    fc = xr.DataArray(ens, dims=("time", "member", *dims[1:]))
    wts = np.broadcast_to(np.cos(np.deg2rad(lat))[None, None, :, None] * mask, y.shape)
    ref = crps_for_ensemble(
        fc,
        obs,
        "member",
        method="fair",
        preserve_dims=["channel"],
        weights=xr.DataArray(wts, dims=dims),
    )
    np.testing.assert_allclose(got, ref.values, rtol=1e-10)


def test_fair_crps_of_gaussian_ensemble_matches_closed_form():
    # Fair CRPS is unbiased for the CRPS of the members' distribution, even for few members.
    rng = _rng(10)
    mu, sigma, m = 0.3, 1.4, 4
    y = rng.normal(size=(1, 1, 400, 400))
    ens = rng.normal(mu, sigma, size=(1, m, 1, 400, 400))
    z = (y - mu) / sigma
    closed = sigma * (
        z * (2 * scipy.stats.norm.cdf(z) - 1) + 2 * scipy.stats.norm.pdf(z) - 1 / np.sqrt(np.pi)
    )
    pointwise = metrics.crps_fair_pointwise(y, ens)
    stderr = pointwise.std() / np.sqrt(pointwise.size)
    assert abs(metrics.crps_fair(y, ens)[0] - closed.mean()) < 4 * stderr


def test_fair_crps_needs_two_members():
    with pytest.raises(UserError, match="at least 2 members"):
        metrics.crps_fair_pointwise(np.zeros((1, 1, 2, 2)), np.zeros((1, 1, 1, 2, 2)))


# ---------------------------------------------------------------- spread-skill


def test_spread_skill_calibrated_is_one_and_underdispersive_closed_form():
    rng = _rng(11)
    m = 5
    centre = rng.normal(size=(4, 1, 64, 64)) * 3
    y = centre + rng.normal(size=centre.shape)
    calibrated = centre[:, None] + rng.normal(size=(4, m, 1, 64, 64))
    ss = metrics.spread_skill(y, calibrated)
    assert ss["spread_skill"][0] == pytest.approx(1.0, abs=0.03)
    assert ss["spread_skill_uncorrected"][0] == pytest.approx(np.sqrt(m / (m + 1)), abs=0.03)
    narrow = centre[:, None] + 0.5 * rng.normal(size=(4, m, 1, 64, 64))
    ss = metrics.spread_skill(y, narrow)
    expected = np.sqrt((m + 1) / m) * 0.5 / np.sqrt(1 + 0.25 / m)
    assert ss["spread_skill"][0] == pytest.approx(expected, abs=0.02)
    assert ss["spread_skill"][0] < 0.7


def test_unbiased_ensemble_mean_rmse_recovers_the_conditional_mean_rmse():
    # y = centre + N(0, 1); members = centre + shift + N(0, 4): the M-member mean has
    # MSE = 1 + shift^2 + 4/M, the mean of infinitely many members 1 + shift^2.
    rng = _rng(13)
    m, shift = 4, 0.5
    centre = rng.normal(size=(4, 1, 96, 96)) * 3
    y = centre + rng.normal(size=centre.shape)
    ens = centre[:, None] + shift + 2.0 * rng.normal(size=(4, m, 1, 96, 96))
    ss = metrics.spread_skill(y, ens)
    assert ss["skill"][0] == pytest.approx(np.sqrt(1 + shift**2 + 4.0 / m), rel=0.02)
    assert ss["rmse_unbiased"][0] == pytest.approx(np.sqrt(1 + shift**2), rel=0.02)
    # and it is exactly the WeatherBench 2 statistic: mean((x̄ - y)² - var_ddof1 / M)
    explicit = np.sqrt(np.mean((ens.mean(1) - y) ** 2 - ens.var(1, ddof=1) / m))
    assert ss["rmse_unbiased"][0] == pytest.approx(explicit, rel=1e-10)


def test_spread_skill_matches_explicit_formula():
    rng = _rng(12)
    y = rng.normal(size=(2, 2, 5, 6))
    ens = rng.normal(size=(2, 3, 2, 5, 6))
    lat = np.linspace(-30, 30, 5)
    got = metrics.spread_skill(y, ens, lat=lat)
    w = np.cos(np.deg2rad(lat))[None, :, None] * np.ones((2, 5, 6))
    for c in range(2):
        var = np.var(ens[:, :, c], axis=1, ddof=1)
        err2 = (ens[:, :, c].mean(axis=1) - y[:, c]) ** 2
        ratio = np.sqrt((w * var).sum() / (w * err2).sum())
        assert got["spread_skill"][c] == pytest.approx(np.sqrt(4 / 3) * ratio, rel=1e-12)


# ---------------------------------------------------------------- rank histogram


def test_rank_histogram_exchangeable_is_flat():
    rng = _rng(13)
    m = 7
    data = rng.normal(size=(6, m + 1, 1, 40, 40))
    counts = metrics.rank_histogram(data[:, 0], data[:, 1:], seed=1)
    assert counts.shape == (1, m + 1)
    assert counts.sum() == 6 * 40 * 40
    assert scipy.stats.chisquare(counts[0]).pvalue > 1e-3


def test_rank_histogram_truth_above_all_and_loop_reference():
    rng = _rng(14)
    ens = rng.normal(size=(2, 4, 2, 5, 5))
    counts = metrics.rank_histogram(ens.max(axis=1) + 1.0, ens)
    assert counts[:, -1].tolist() == [50, 50] and counts[:, :-1].sum() == 0
    y = rng.normal(size=(2, 2, 5, 5))
    mask = (rng.random((2, 1, 5, 5)) > 0.3).astype(float)
    ref = np.zeros((2, 5), dtype=int)
    for n, c, r, j in np.ndindex(y.shape):
        if mask[n, 0, r, j]:
            ref[c, sum(ens[n, k, c, r, j] < y[n, c, r, j] for k in range(4))] += 1
    np.testing.assert_array_equal(metrics.rank_histogram(y, ens, mask=mask), ref)


def test_rank_histogram_breaks_ties_at_random_and_seeded():
    y = np.zeros((1, 1, 60, 60))
    ens = np.zeros((1, 3, 1, 60, 60))  # every member ties with the truth
    counts = metrics.rank_histogram(y, ens, seed=3)
    assert scipy.stats.chisquare(counts[0]).pvalue > 1e-3
    np.testing.assert_array_equal(counts, metrics.rank_histogram(y, ens, seed=3))
    assert not np.array_equal(counts, metrics.rank_histogram(y, ens, seed=4))


# ---------------------------------------------------------------- evaluate_method


def test_evaluate_method_deterministic_and_ensemble():
    rng = _rng(15)
    centre = rng.normal(size=(2, 2, 16, 16))
    y = centre + rng.normal(size=centre.shape)  # members exchangeable with the truth
    ens = centre[:, None] + rng.normal(size=(2, 3, 2, 16, 16))
    lat = np.linspace(-60, 60, 16)
    mask = np.ones((1, 1, 16, 16))
    mask[..., :2, :] = 0
    det = evaluate_method(y, ens[:, 0], lat=lat, mask=mask, channel_names=["t2m", "u10"])
    json.dumps(det, allow_nan=False)
    assert det["kind"] == "deterministic" and "crps" not in det["metrics"]["t2m"]
    assert det["metrics"]["u10"]["rmse"] == pytest.approx(
        metrics.rmse(y, ens[:, 0], lat=lat, mask=mask)[1]
    )
    out = evaluate_method(y, torch.as_tensor(ens), lat=lat, mask=mask)
    json.dumps(out, allow_nan=False)
    assert out["kind"] == "ensemble" and out["n_members"] == 3
    ch = out["metrics"]["channel_1"]
    assert ch["rmse"] == pytest.approx(metrics.rmse(y, ens.mean(1), lat=lat, mask=mask)[1])
    assert ch["crps"] == pytest.approx(metrics.crps_fair(y, ens, lat=lat, mask=mask)[1])
    assert ch["member_rmse"] == pytest.approx(
        metrics.member_scores(y, ens, lat=lat, mask=mask)["rmse"][1]
    )
    assert ch["spread_skill"] == pytest.approx(
        metrics.spread_skill(y, ens, lat=lat, mask=mask)["spread_skill"][1]
    )
    assert out["mean"]["crps"] == pytest.approx(
        np.mean([out["metrics"][c]["crps"] for c in out["channels"]])
    )
    assert sum(out["rank_histogram"]["channel_0"]) == 2 * 14 * 16
    assert len(out["psd"]["member"]["channel_0"]) == len(out["psd"]["freq"]["channel_0"]) == 9
    assert ch["member_lsd"] < ch["lsd"]  # members keep the small scales the mean smooths out


def test_evaluate_method_perfect_prediction_and_single_member():
    y = _rng(16).normal(size=(2, 1, 12, 12))
    out = evaluate_method(y, y[:, None])  # one member -> deterministic
    assert out["kind"] == "deterministic"
    m = out["metrics"]["channel_0"]
    assert m["rmse"] == 0.0 and m["lsd"] == 0.0 and m["ssim"] == pytest.approx(1.0)
    small = evaluate_method(y[..., :8, :8], y[..., :8, :8])
    assert small["metrics"]["channel_0"]["ssim"] is None  # too small for an 11x11 window
    with pytest.raises(UserError, match="channel_names"):
        evaluate_method(y, y, channel_names=["a", "b"])
