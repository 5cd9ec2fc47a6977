"""Calibration per scale (issue 23, deliver 4): the band scores against a brute-force loop over
bands, fields and coefficients with the explicit F_R matrix, Parseval against grid space, and
ensembles that are right or wrong at small scales."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from test_properties import explicit_matrix

from weather_sr.data import gaussian_random_field
from weather_sr.evaluation.accumulate import ScoreAccumulator, evaluate_method
from weather_sr.evaluation.bands import band_labels, band_layout


def _brute_force(truth: np.ndarray, members: np.ndarray, scale_factor: int) -> dict:
    """Every band score by plain loops (docs of ``evaluation.bands``)."""
    n, m, c, h, w = members.shape
    fh, fw = explicit_matrix(h).double().numpy(), explicit_matrix(w).double().numpy()
    ky = np.array([(i + 1) // 2 for i in range(h)]) / h
    kx = np.array([(j + 1) // 2 for j in range(w)]) / w
    ny = 0.5 / scale_factor
    edges = [0.0, ny]
    while edges[-1] < math.sqrt(ky.max() ** 2 + kx.max() ** 2):
        edges.append(2 * edges[-1])
    n_bands = len(edges) - 1
    acc = {k: np.zeros((c, n_bands)) for k in ("n", "var", "sq", "crps", "pm", "pt")}
    for f in range(n):
        for ch in range(c):
            yc = fh @ truth[f, ch] @ fw.T
            xc = [fh @ members[f, i, ch] @ fw.T for i in range(m)]
            for i in range(h):
                for j in range(w):
                    nu = math.sqrt(ky[i] ** 2 + kx[j] ** 2)
                    b = next(k for k in range(n_bands) if nu <= edges[k + 1] or k == n_bands - 1)
                    vals = [x[i, j] for x in xc]
                    mean = sum(vals) / m
                    acc["n"][ch, b] += 1
                    acc["var"][ch, b] += sum((v - mean) ** 2 for v in vals) / (m - 1)
                    acc["sq"][ch, b] += (mean - yc[i, j]) ** 2
                    acc["crps"][ch, b] += (sum(abs(v - yc[i, j]) for v in vals) / m
                                           - sum(abs(a - b_) for a in vals for b_ in vals)
                                           / (2 * m * (m - 1)))
                    acc["pm"][ch, b] += sum(v * v for v in vals) / m
                    acc["pt"][ch, b] += yc[i, j] ** 2
    ratio = np.sqrt(acc["var"] / acc["sq"])
    return {"spread_skill": math.sqrt((m + 1) / m) * ratio,
            "crps_contribution": acc["crps"] / acc["n"].sum(axis=1, keepdims=True),
            "power_ratio": acc["pm"] / acc["pt"], "n_bands": n_bands}


@pytest.mark.parametrize(("h", "w", "s"), [(8, 12, 2), (9, 8, 4), (6, 10, 3)])
def test_band_scores_equal_a_brute_force_loop(h: int, w: int, s: int) -> None:
    rng = np.random.default_rng(h * w + s)
    truth = rng.normal(size=(3, 2, h, w))
    members = truth[:, None] + rng.normal(scale=0.7, size=(3, 4, 2, h, w))
    out = evaluate_method(truth, members, scale_factor=s, channel_names=["a", "b"])
    ref = _brute_force(truth, members, s)
    assert len(out["bands"]["labels"]) == ref["n_bands"]
    for c, name in enumerate(["a", "b"]):
        got = out["bands"]["metrics"][name]
        for key in ("spread_skill", "crps_contribution", "power_ratio"):
            np.testing.assert_allclose(got[key], ref[key][c], rtol=1e-10, err_msg=key)


def test_bands_split_grid_space_by_parseval() -> None:
    """F_R is orthonormal: the bands' CRPS-free sums of squared error and variance add up to
    grid space's (uniform weights, no missing pixels), and band 0 holds nu <= LR Nyquist."""
    rng = np.random.default_rng(1)
    truth = rng.normal(size=(2, 1, 16, 16))
    members = rng.normal(size=(2, 5, 1, 16, 16))
    acc = ScoreAccumulator(scale_factor=4)
    acc.update(truth, members)
    s = acc._sums
    grid_sq = ((members.mean(axis=1) - truth) ** 2).sum()
    grid_var = members.var(axis=1, ddof=1).sum()
    np.testing.assert_allclose(s["band_sq_err"].sum(), grid_sq, rtol=1e-10)
    np.testing.assert_allclose(s["band_var"].sum(), grid_var, rtol=1e-10)
    band, edges = band_layout(16, 16, 4)
    assert edges[1] == 0.125 and band_labels(edges)[:2] == ["<= LR Nyquist", "1-2x LR Nyquist"]
    assert band[0, 0] == 0 and band.max() == len(edges) - 2


def test_chunks_give_the_bands_of_one_pass() -> None:
    rng = np.random.default_rng(2)
    truth, members = rng.normal(size=(5, 1, 8, 8)), rng.normal(size=(5, 3, 1, 8, 8))
    whole = evaluate_method(truth, members, scale_factor=2)["bands"]
    acc = ScoreAccumulator(scale_factor=2)
    for a, b in ((0, 2), (2, 5)):
        acc.update(truth[a:b], members[a:b])
    chunked = acc.result()["bands"]
    for key, value in whole["metrics"]["channel_0"].items():
        np.testing.assert_allclose(chunked["metrics"]["channel_0"][key], value, rtol=1e-12)


def _fields(n: int, seed: int) -> np.ndarray:
    g = torch.Generator().manual_seed(seed)
    return gaussian_random_field(n, 32, 32, slope=-3.0, generator=g).numpy()[:, None]


def test_a_calibrated_ensemble_is_calibrated_in_every_band_and_a_smooth_one_is_not() -> None:
    """Truth and members drawn alike (exchangeable): spread/skill and power ratio near 1 in every
    band. Members with their small scales damped (what a blurry downscaler gives): both fall
    below 1 only in the bands above the LR Nyquist frequency."""
    n, m = 40, 8
    truth = _fields(n, 0)
    members = _fields(n * m, 1).reshape(n, m, 1, 32, 32)
    good = evaluate_method(truth, members, scale_factor=4)["bands"]["metrics"]["channel_0"]
    for key in ("spread_skill", "power_ratio"):
        assert np.all(np.abs(np.asarray(good[key]) - 1) < 0.15), (key, good[key])
    band, _ = band_layout(32, 32, 4)
    damp = np.where(band == 0, 1.0, 0.3)
    coef = torch.from_numpy(members)
    from weather_sr.core.fourier import inverse_real_fourier2, real_fourier2

    smooth = inverse_real_fourier2(real_fourier2(coef) * torch.from_numpy(damp)).numpy()
    bad = evaluate_method(truth, smooth, scale_factor=4)["bands"]["metrics"]["channel_0"]
    assert abs(bad["spread_skill"][0] - good["spread_skill"][0]) < 1e-12
    assert all(v < 0.5 for v in bad["spread_skill"][1:]) and all(
        v < 0.2 for v in bad["power_ratio"][1:])
