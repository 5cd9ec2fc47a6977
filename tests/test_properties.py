"""Property-based tests (hypothesis): the Fourier operator F_R for any shape, dtype and axis, and
the data pipeline for random grids, scale factors and NaN patterns."""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from weather_sr.core.fourier import (
    inverse_real_fourier,
    inverse_real_fourier2,
    real_fourier,
    real_fourier2,
)
from weather_sr.data import build_datasets, coarsen, synthetic_dataset, upsample, write_netcdf

torch.set_num_threads(1)
FAST = settings(max_examples=60, deadline=None)
SLOW = settings(max_examples=20, deadline=None)
TOL = {torch.float32: 2e-5, torch.float64: 1e-12}

dtypes = st.sampled_from([torch.float32, torch.float64])
lengths = st.integers(1, 33)  # 1, odd and even
leading = st.lists(st.integers(1, 3), min_size=0, max_size=2)
seeds = st.integers(0, 2**31 - 1)


def randn(shape: list[int], dtype: torch.dtype, seed: int) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64
                       ).to(dtype)


def explicit_matrix(n: int) -> torch.Tensor:
    """F_R row by row (docs/method.md §2): DC, then cos and sin rows of k = 1..n//2 (no Nyquist
    sin), orthonormal scaling."""
    m = torch.arange(n, dtype=torch.float64)
    rows = [torch.full((n,), 1.0 / math.sqrt(n), dtype=torch.float64)]
    for k in range(1, n // 2 + 1):
        angle = -2.0 * math.pi * k * m / n
        scale = math.sqrt((1.0 if 2 * k == n else 2.0) / n)
        rows.append(torch.cos(angle) * scale)
        if 2 * k != n:
            rows.append(torch.sin(angle) * scale)
    return torch.stack(rows)


# ------------------------------------------------------------------ Fourier operator


@FAST
@given(lead=leading, n=lengths, trail=leading, dtype=dtypes, seed=seeds)
def test_fourier_round_trip_and_norm_along_any_axis(lead, n, trail, dtype, seed) -> None:
    x = randn([*lead, n, *trail], dtype, seed)
    dim = len(lead)
    c = real_fourier(x, dim=dim)
    assert c.shape == x.shape and c.dtype == dtype
    tol = TOL[dtype]
    torch.testing.assert_close(inverse_real_fourier(c, dim=dim), x, rtol=tol, atol=tol * 10)
    torch.testing.assert_close(real_fourier(inverse_real_fourier(x, dim=dim), dim=dim), x,
                               rtol=tol, atol=tol * 10)
    # orthogonal: the norm of every 1-D slice along dim is preserved
    torch.testing.assert_close(c.norm(dim=dim), x.norm(dim=dim), rtol=tol * 10, atol=tol * 10)


@FAST
@given(lead=leading, n=st.integers(1, 16), dtype=dtypes, seed=seeds)
def test_fourier_equals_explicit_matrix(lead, n, dtype, seed) -> None:
    x = randn([*lead, n], dtype, seed)
    expected = (x.double() @ explicit_matrix(n).T).to(dtype)
    tol = TOL[dtype]
    torch.testing.assert_close(real_fourier(x), expected, rtol=tol, atol=tol * 10)
    torch.testing.assert_close(inverse_real_fourier(x), (x.double() @ explicit_matrix(n)).to(dtype),
                               rtol=tol, atol=tol * 10)


@FAST
@given(lead=leading, h=lengths, w=lengths, dtype=dtypes, seed=seeds)
def test_fourier2_is_separable_orthogonal(lead, h, w, dtype, seed) -> None:
    x = randn([*lead, h, w], dtype, seed)
    c = real_fourier2(x)
    tol = TOL[dtype]
    torch.testing.assert_close(c, real_fourier(real_fourier(x, dim=-1), dim=-2), rtol=tol,
                               atol=tol * 10)
    torch.testing.assert_close(inverse_real_fourier2(c), x, rtol=tol, atol=tol * 10)
    torch.testing.assert_close(c.flatten(-2).norm(dim=-1), x.flatten(-2).norm(dim=-1),
                               rtol=tol * 10, atol=tol * 10)


# ------------------------------------------------------------------ data pipeline

scales = st.sampled_from([2, 4, 8])


@FAST
@given(lead=leading, s=scales, ky=st.integers(1, 5), kx=st.integers(1, 5),
       nan_fraction=st.sampled_from([0.0, 0.1, 0.5, 0.9, 1.0]), weighted=st.booleans(),
       seed=seeds)
def test_coarsening_conserves_the_valid_area_mean(lead, s, ky, kx, nan_fraction, weighted,
                                                  seed) -> None:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(*lead, ky * s, kx * s))
    x[rng.random(x.shape) < nan_fraction] = np.nan
    lat = np.linspace(-80, 80, ky * s) if weighted else None
    w = np.broadcast_to((np.cos(np.deg2rad(lat)) if weighted else np.ones(ky * s))[:, None],
                        x.shape)
    lr = coarsen(torch.from_numpy(x), s, lat).numpy()
    valid = np.isfinite(x)
    blocks = (*lead, ky, s, kx, s)
    weight = np.where(valid, w, 0.0).reshape(blocks).sum(axis=(-3, -1))
    # a block is NaN exactly when it has no valid value
    np.testing.assert_array_equal(np.isnan(lr), ~valid.reshape(blocks).any(axis=(-3, -1)))
    # sum of (block mean x block weight) = weighted sum of the valid values
    total = np.where(valid, x * w, 0.0).sum()
    np.testing.assert_allclose(np.where(weight > 0, lr * weight, 0.0).sum(), total,
                               rtol=1e-9, atol=1e-9)


@FAST
@given(n=st.integers(1, 2), c=st.integers(1, 2), h=st.integers(1, 6), w=st.integers(1, 6),
       s=scales, mode=st.sampled_from(["bicubic", "bilinear", "nearest"]),
       periodic=st.booleans(), value=st.floats(-1e4, 1e4))
def test_upsampling_a_constant_gives_the_constant(n, c, h, w, s, mode, periodic, value) -> None:
    lr = torch.full((n, c, h, w), value, dtype=torch.float64)
    hr = upsample(lr, s, mode, periodic)
    assert hr.shape == (n, c, h * s, w * s)
    torch.testing.assert_close(hr, torch.full_like(hr, value), rtol=1e-12,
                               atol=1e-12 * max(1.0, abs(value)))


@SLOW
@given(s=scales, ky=st.integers(1, 4), kx=st.integers(1, 4), channels=st.integers(1, 2),
       nan_fraction=st.sampled_from([0.0, 0.2, 0.6, 0.95]), seed=st.integers(0, 1000))
def test_items_hold_no_nan_and_the_mask_is_the_finite_pattern(s, ky, kx, channels,
                                                              nan_fraction, seed) -> None:
    names = ("a", "b")[:channels]
    ds = synthetic_dataset(10, ky * s, kx * s, variables=names, seed=seed)
    rng = np.random.default_rng(seed)
    for name in names:
        values = ds[name].values.copy()
        missing = rng.random(values.shape) < nan_fraction
        missing[:, 0, 0] = False  # every channel keeps a valid value in every field
        values[missing] = np.nan
        ds[name].values = values
    with tempfile.TemporaryDirectory() as tmp:
        path = write_netcdf(ds, Path(tmp) / "f.nc")
        bundle = build_datasets(path, list(names), scale_factor=s, patch_size=s, seed=seed)
        truth = np.stack([ds[name].values for name in names], axis=1)  # [T, C, H, W]
        for split in (bundle.train, bundle.val, bundle.test):
            for k in range(len(split)):
                item = split[k]
                for key in ("hr", "cond", "mask"):
                    assert torch.isfinite(item[key]).all(), key
                assert set(item["mask"].unique().tolist()) <= {0.0, 1.0}
                if split is bundle.train:
                    continue  # random patch: its position is not returned
                row = int(split.samples[item["index"]])
                finite = np.isfinite(truth[row])  # [C, H, W]
                np.testing.assert_array_equal(item["mask"][0].numpy() == 1.0, finite.all(axis=0))
                assert (item["hr"][~torch.from_numpy(finite)] == 0).all()  # NaN -> 0
