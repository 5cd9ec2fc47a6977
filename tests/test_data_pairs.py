"""LR/HR pairs: conservative coarsening, interpolation geometry, windows, paired datasets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr

from weather_sr.data import (
    Grid,
    build_datasets,
    coarsen,
    hr_grid_from_lr,
    prepare_condition,
    synthetic_dataset,
    upsample,
    write_netcdf,
)
from weather_sr.data.pairs import MARGIN, upsample_window, window_indices
from weather_sr.errors import UserError


@pytest.mark.parametrize("s", [2, 4, 8])
def test_coarsening_conserves_area_mean_exactly(s: int) -> None:
    g = torch.Generator().manual_seed(s)
    hr = torch.randn((3, 2, 32, 48), generator=g, dtype=torch.float64) * 10 + 280
    lr = coarsen(hr, s)
    assert lr.shape == (3, 2, 32 // s, 48 // s)
    torch.testing.assert_close(lr.mean(dim=(-2, -1)), hr.mean(dim=(-2, -1)), rtol=0, atol=1e-11)
    # every LR value is its block's mean
    torch.testing.assert_close(lr[0, 0, 1, 2], hr[0, 0, s : 2 * s, 2 * s : 3 * s].mean())


def test_cos_latitude_weighted_coarsening_conserves_weighted_mean() -> None:
    lat = np.linspace(-80, 80, 16)
    hr = torch.randn((1, 1, 16, 8), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    w = torch.as_tensor(np.cos(np.deg2rad(lat)))[:, None]
    lr = coarsen(hr, 4, lat)
    w_lr = w.reshape(4, 4, 1).sum(dim=1)  # area of an LR row = sum of its HR rows' areas
    torch.testing.assert_close((lr * w_lr).sum() / (w_lr.sum() * 2), (hr * w).sum() / (w.sum() * 8))


def test_nan_aware_coarsening() -> None:
    hr = torch.arange(16.0).reshape(1, 1, 4, 4)
    hr[0, 0, 0, 0] = torch.nan
    hr[0, 0, 2:, 2:] = torch.nan
    lr = coarsen(hr, 2)
    assert lr[0, 0, 0, 0] == pytest.approx((1 + 4 + 5) / 3)  # mean of the valid values
    assert torch.isnan(lr[0, 0, 1, 1])  # an all-missing block stays missing
    assert lr[0, 0, 0, 1] == pytest.approx((2 + 3 + 6 + 7) / 4)


def test_bilinear_upsampling_geometry_matches_block_centres() -> None:
    """A linear field, coarsened then interpolated bilinearly, comes back away from the borders:
    interpolation with align_corners=False places LR values at the HR block centres."""
    s = 4
    yy, xx = torch.meshgrid(torch.arange(32.0), torch.arange(48.0), indexing="ij")
    hr = (0.3 * yy - 0.7 * xx + 5).double()[None, None]
    back = upsample(coarsen(hr, s), s, "bilinear")
    inner = (slice(None), slice(None), slice(2 * s, -2 * s), slice(2 * s, -2 * s))
    # torch computes source coordinates in float32; a half-cell shift would give ~0.1
    torch.testing.assert_close(back[inner], hr[inner], rtol=0, atol=1e-5)


@pytest.mark.parametrize("mode", ["bilinear", "bicubic", "nearest"])
def test_interpolation_passes_through_lr_values_at_block_centres(mode: str) -> None:
    """With odd s the middle HR cell of a block sits on the LR centre: the value is reproduced."""
    s = 3
    lr = torch.randn((1, 2, 5, 7), generator=torch.Generator().manual_seed(0))
    up = upsample(lr, s, mode)
    torch.testing.assert_close(up[..., s // 2 :: s, s // 2 :: s], lr, rtol=0, atol=1e-5)


def test_nearest_upsampling_repeats_blocks() -> None:
    lr = torch.arange(6.0).reshape(1, 1, 2, 3)
    up = upsample(lr, 2, "nearest")
    torch.testing.assert_close(up, lr.repeat_interleave(2, -2).repeat_interleave(2, -1))


def test_periodic_upsampling_is_shift_equivariant_without_seam() -> None:
    lr = torch.randn((1, 1, 6, 10), generator=torch.Generator().manual_seed(3))
    up = upsample(lr, 4, "bicubic", periodic=True)
    shifted = upsample(torch.roll(lr, 3, dims=-1), 4, "bicubic", periodic=True)
    torch.testing.assert_close(shifted, torch.roll(up, 12, dims=-1))
    flat = upsample(lr, 4, "bicubic", periodic=False)
    assert not torch.allclose(flat[..., :4], up[..., :4])  # the seam differs when not periodic


@pytest.mark.parametrize("periodic", [False, True])
def test_window_upsampling_equals_crop_of_full_field(periodic: bool) -> None:
    s, lr = 4, torch.randn((1, 2, 8, 12), generator=torch.Generator().manual_seed(1))
    full = upsample(lr, s, "bicubic", periodic)
    for (y0, y1), (x0, x1) in [((0, 3), (0, 4)), ((5, 8), (9, 12)), ((2, 6), (3, 7))]:
        ly, lx = window_indices(y0, y1, 8, False), window_indices(x0, x1, 12, periodic)
        assert len(ly) == y1 - y0 + 2 * MARGIN
        win = upsample_window(lr[:, :, ly][:, :, :, lx], s, "bicubic")
        torch.testing.assert_close(win, full[..., y0 * s : y1 * s, x0 * s : x1 * s])


def test_training_patches_match_full_field_condition(tmp_path: Path) -> None:
    nc = write_netcdf(synthetic_dataset(10, 32, 48, seed=2), tmp_path / "a.nc")
    b_full = build_datasets(nc, ["x"], scale_factor=4, split=(0.6, 0.2, 0.2))
    b_patch = build_datasets(nc, ["x"], scale_factor=4, patch_size=16, split=(0.6, 0.2, 0.2))
    g = torch.Generator().manual_seed(0)
    for k in range(4):
        full = b_full.train.item(k, torch.Generator())
        patch = b_patch.train.item(k, g)
        hit = [
            (y, x)
            for y in range(0, 17, 4)
            for x in range(0, 33, 4)
            if torch.equal(full["hr"][:, y : y + 16, x : x + 16], patch["hr"])
        ]
        assert hit, "patch is not an s-aligned window of the field"
        y, x = hit[0]
        torch.testing.assert_close(patch["cond"], full["cond"][:, y : y + 16, x : x + 16])


def test_prepare_condition_equals_dataset_condition(tmp_path: Path) -> None:
    ds = synthetic_dataset(10, 32, 48, seed=4)
    nc = write_netcdf(ds, tmp_path / "a.nc")
    for norm in ("channel", "pixel"):
        b = build_datasets(nc, ["x"], scale_factor=4, normalisation=norm, split=(0.6, 0.2, 0.2))
        lr = np.stack(
            [b.val.source.lr_window(int(r), np.arange(8), np.arange(12)) for r in b.val.samples]
        )
        cond = prepare_condition(lr, b.normalizer, 4, "bicubic", periodic=b.grid.periodic)
        expect = torch.stack([b.val[i]["cond"] for i in range(len(b.val))])
        torch.testing.assert_close(cond, expect, rtol=1e-5, atol=1e-5)


def _paired(tmp_path: Path, shift: float = 0.0) -> tuple[Path, Path]:
    ds = synthetic_dataset(10, 32, 48, variables=("t2m",), seed=5)
    hr = write_netcdf(ds, tmp_path / "hr.nc")
    lr_vals = coarsen(torch.from_numpy(ds["t2m"].values.astype(np.float64)), 4).numpy()
    lr = xr.Dataset(
        {"t2m_lr": (("time", "lat", "lon"), lr_vals.astype(np.float32), {"units": "K"})},
        coords={
            "time": ds["time"].values,
            "lat": ds["lat"].values.reshape(8, 4).mean(1) + shift,
            "lon": ds["lon"].values.reshape(12, 4).mean(1),
        },
    )
    return hr, write_netcdf(lr, tmp_path / "lr.nc")


def test_paired_lr_dataset_equals_coarsened_hr(tmp_path: Path) -> None:
    hr, lr = _paired(tmp_path)
    kw = dict(scale_factor=4, split=(0.6, 0.2, 0.2))
    b_coarse = build_datasets(hr, ["t2m"], **kw)
    b_pair = build_datasets(hr, ["t2m"], lr_path=lr, lr_variables=["t2m_lr"], **kw)
    for i in range(len(b_coarse.test)):
        torch.testing.assert_close(b_pair.test[i]["cond"], b_coarse.test[i]["cond"])


def test_incompatible_lr_grid_is_an_error(tmp_path: Path) -> None:
    hr, lr = _paired(tmp_path, shift=3.0)
    with pytest.raises(UserError, match="latitude centres differ"):
        build_datasets(hr, ["t2m"], scale_factor=4, lr_path=lr, lr_variables=["t2m_lr"])
    with pytest.raises(UserError, match="points but HR has"):
        build_datasets(hr, ["t2m"], scale_factor=2, lr_path=lr, lr_variables=["t2m_lr"])


def test_crop_to_multiple_or_error(tmp_path: Path) -> None:
    nc = write_netcdf(synthetic_dataset(10, 30, 45, seed=0), tmp_path / "a.nc")
    b = build_datasets(nc, ["x"], scale_factor=4, split=(0.6, 0.2, 0.2))
    assert b.grid.shape == (28, 44) and b.val[0]["hr"].shape == (1, 28, 44)
    with pytest.raises(UserError, match="not divisible by scale_factor 4"):
        build_datasets(nc, ["x"], scale_factor=4, crop=False)


def test_hr_grid_from_lr_inverts_coarsened_grid() -> None:
    g = Grid(np.linspace(-45, 45, 32), np.arange(64) * 360 / 64, periodic=True)
    back = hr_grid_from_lr(g.coarsened(4), 4)
    np.testing.assert_allclose(back.lat, g.lat, atol=1e-9)
    np.testing.assert_allclose(back.lon, g.lon, atol=1e-9)
    assert Grid.from_dict(g.to_dict()).to_dict() == g.to_dict()
