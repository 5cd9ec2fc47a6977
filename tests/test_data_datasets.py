"""Normalisation, splits, masks, torch datasets with workers, synthetic fields, the sample file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr

from weather_sr.data import (
    SAMPLE_VARIABLES,
    Normalizer,
    build_datasets,
    compute_stats,
    gaussian_random_field,
    open_fields,
    sample_data_path,
    split_samples,
    split_times,
    synthetic_dataset,
    write_netcdf,
)
from weather_sr.errors import UserError

SPLIT = (0.6, 0.2, 0.2)


@pytest.fixture()
def nc(tmp_path: Path) -> Path:
    return write_netcdf(
        synthetic_dataset(20, 32, 32, variables=("a", "b"), seed=1), tmp_path / "s.nc"
    )


@pytest.mark.parametrize("kind", ["channel", "pixel"])
def test_normaliser_round_trip_and_json(nc: Path, kind: str) -> None:
    fields = open_fields(nc, ["a", "b"], load=True)
    norm = compute_stats(fields, np.arange(12), kind)
    x = torch.from_numpy(fields.values[:3]).double()
    torch.testing.assert_close(norm.denormalise(norm.normalise(x)), x)
    again = Normalizer.from_dict(json.loads(json.dumps(norm.to_dict())))
    torch.testing.assert_close(again.normalise(x), norm.normalise(x))
    train = fields.values[:12].astype(np.float64)
    axes = (0, 2, 3) if kind == "channel" else (0,)
    np.testing.assert_allclose(norm.mean.squeeze(), train.mean(axis=axes).squeeze(), rtol=1e-10)
    np.testing.assert_allclose(norm.std.squeeze(), train.std(axis=axes).squeeze(), rtol=1e-8)


def test_statistics_come_from_the_training_split_only(tmp_path: Path) -> None:
    ds = synthetic_dataset(20, 32, 32, variables=("a",), seed=1)
    ds["a"] = ds["a"] + xr.DataArray(np.arange(20.0), dims="time")  # a warming trend
    nc = write_netcdf(ds, tmp_path / "trend.nc")
    b = build_datasets(nc, ["a"], scale_factor=4, split=SPLIT)
    fields = open_fields(nc, ["a"], load=True).values.astype(np.float64)
    train = fields[b.train.samples]
    assert list(b.train.samples) == list(range(12))
    assert b.normalizer.mean.item() == pytest.approx(train.mean(), rel=1e-12)
    assert abs(b.normalizer.mean.item() - fields.mean()) > 3  # the later times are warmer


@pytest.mark.parametrize("gap", [0, 2])
def test_splits_are_contiguous_disjoint_and_respect_the_gap(gap: int) -> None:
    tr, va, te = split_times(40, (0.7, 0.15, 0.15), gap)
    assert len(tr) + len(va) + len(te) == 40 - 2 * gap
    for block in (tr, va, te):
        assert np.all(np.diff(block) == 1)
    assert va[0] - tr[-1] == gap + 1 and te[0] - va[-1] == gap + 1
    times = np.repeat(np.arange(40), 3)  # 3 members per time
    parts = split_samples(times, (0.7, 0.15, 0.15), gap)
    sets = [set(times[p]) for p in parts]
    assert not (sets[0] & sets[1] or sets[1] & sets[2] or sets[0] & sets[2])
    assert all(len(p) == 3 * len(s) for p, s in zip(parts, sets, strict=True))  # whole times
    with pytest.raises(UserError, match="too few"):
        split_times(5, (0.7, 0.15, 0.15), 2)


def test_missing_values_become_a_mask_and_never_reach_the_model(tmp_path: Path) -> None:
    ds = synthetic_dataset(10, 32, 32, variables=("a", "b"), seed=2)
    ds["a"][:, 4:12, 8:16] = np.nan  # a whole LR block and more, in every time
    ds["b"][:, 20, 20] = np.nan
    nc = write_netcdf(ds, tmp_path / "m.nc")
    b = build_datasets(nc, ["a", "b"], scale_factor=4, patch_size=16, split=SPLIT)
    item, row = b.val[0], int(b.val.samples[0])
    valid = [np.isfinite(ds[v].values[row]) for v in ("a", "b")]
    np.testing.assert_array_equal(item["mask"][0].numpy(), (valid[0] & valid[1]).astype(np.float32))
    assert item["mask"].shape == (1, 32, 32)
    for c in range(2):  # missing values are 0 (the mean) after normalisation, the rest untouched
        assert torch.all(item["hr"][c][~torch.from_numpy(valid[c])] == 0)
        assert torch.all(item["hr"][c][torch.from_numpy(valid[c])] != 0)
    for ds_ in (b.train, b.val, b.test):
        for i in range(len(ds_)):
            it = ds_[i]
            assert all(torch.isfinite(it[k]).all() for k in ("hr", "cond", "mask"))


def test_mostly_missing_patches_are_skipped(tmp_path: Path) -> None:
    ds = synthetic_dataset(10, 32, 32, seed=3)
    ds["x"][:, :, :20] = np.nan  # only the 12 easternmost columns are valid
    nc = write_netcdf(ds, tmp_path / "m.nc")
    b = build_datasets(nc, ["x"], scale_factor=4, patch_size=8, min_valid_fraction=0.9, split=SPLIT)
    g = torch.Generator().manual_seed(0)
    fracs = [float(b.train.item(k % len(b.train), g)["mask"].mean()) for k in range(30)]
    assert min(fracs) >= 0.9
    b0 = build_datasets(
        nc, ["x"], scale_factor=4, patch_size=8, min_valid_fraction=0.0, split=SPLIT
    )
    assert min(float(b0.train.item(k % 6, g)["mask"].mean()) for k in range(30)) < 0.9


def test_lr_noise_is_seeded_and_scaled(nc: Path) -> None:
    clean = build_datasets(nc, ["a"], scale_factor=4, split=SPLIT)
    noisy = build_datasets(nc, ["a"], scale_factor=4, split=SPLIT, lr_noise_std=0.5)
    again = build_datasets(nc, ["a"], scale_factor=4, split=SPLIT, lr_noise_std=0.5)
    assert torch.equal(noisy.val[0]["cond"], again.val[0]["cond"])  # evaluation is deterministic
    diff = noisy.val[0]["cond"] - clean.val[0]["cond"]
    assert 0.2 < float(diff.std()) < 0.6  # smoothed N(0, 0.5^2) in normalised units
    assert torch.equal(noisy.val[0]["hr"], clean.val[0]["hr"])


def test_flips_off_by_default_and_on_when_asked(nc: Path) -> None:
    b = build_datasets(nc, ["a"], scale_factor=4, patch_size=None, split=SPLIT)
    bf = build_datasets(nc, ["a"], scale_factor=4, patch_size=None, split=SPLIT, flips=True)
    g = torch.Generator().manual_seed(0)
    ref = b.train.item(0, torch.Generator())["hr"]
    orientations = (ref, ref.flip(-1), ref.flip(-2), ref.flip(-1).flip(-2))
    seen = []
    for _ in range(30):
        hr = bf.train.item(0, g)["hr"]
        seen.append([i for i, r in enumerate(orientations) if torch.equal(hr, r)])
    assert all(len(s) == 1 for s in seen)  # always exactly one orientation of the field
    assert {s[0] for s in seen} == {0, 1, 2, 3}  # and all four occur
    assert all(torch.equal(b.train.item(0, g)["hr"], ref) for _ in range(5))


def test_dataloader_with_workers_lazy_and_loaded(nc: Path) -> None:
    lazy = build_datasets(nc, ["a", "b"], scale_factor=4, split=SPLIT, load=False)
    loaded = build_datasets(nc, ["a", "b"], scale_factor=4, split=SPLIT, load=True)
    lazy_values = lazy.test.source.hr.get()  # streamed: one dask chunk per sample, nothing loaded
    assert lazy_values.chunks[0] == (1,) * 20 and not isinstance(lazy_values.data, np.ndarray)
    loader = torch.utils.data.DataLoader(lazy.test, batch_size=2, num_workers=2)
    batches = list(loader)
    got = torch.cat([bt["hr"] for bt in batches])
    want = torch.stack([loaded.test[i]["hr"] for i in range(len(loaded.test))])
    assert torch.equal(got, want)
    assert torch.equal(torch.cat([bt["index"] for bt in batches]), torch.arange(len(want)))
    train = torch.utils.data.DataLoader(
        lazy.train, batch_size=4, num_workers=2, generator=torch.Generator().manual_seed(0)
    )
    assert next(iter(train))["hr"].shape == (4, 2, 32, 32)


def test_gaussian_random_field_has_the_prescribed_spectral_slope() -> None:
    for slope in (-3.0, -2.0):
        f = gaussian_random_field(
            16, 128, 128, slope=slope, generator=torch.Generator().manual_seed(0)
        )
        power = (torch.fft.fft2(f).abs() ** 2).mean(0)
        ky = torch.fft.fftfreq(128)[:, None]
        kx = torch.fft.fftfreq(128)[None, :]
        k = torch.sqrt(ky**2 + kx**2)
        sel = (k > 2 / 128) & (k < 0.4)
        fit = np.polyfit(np.log(k[sel].numpy()), np.log(power[sel].numpy()), 1)[0]
        assert fit == pytest.approx(slope, abs=0.1)
    torch.testing.assert_close(f.std(dim=(-2, -1)), torch.ones(16, dtype=f.dtype))


def test_synthetic_dataset_is_seeded_and_flows_through_the_pipeline(tmp_path: Path) -> None:
    a = synthetic_dataset(4, 16, 16, seed=7)
    xr.testing.assert_identical(a, synthetic_dataset(4, 16, 16, seed=7))
    assert not np.allclose(a["x"].values, synthetic_dataset(4, 16, 16, seed=8)["x"].values)
    assert a["x"].dims == ("time", "lat", "lon")


def test_shipped_sample_file() -> None:
    path = sample_data_path()
    assert path.stat().st_size < 15e6
    da = open_fields(path, list(SAMPLE_VARIABLES), load=True)
    assert list(da["channel"].values) == ["pwat", "btmp"]
    assert da.shape == (25, 2, 128, 192)
    assert da.attrs["units"] == ["kg m**-2", "K"]
    assert np.isfinite(da.values).all()
    assert float(da.sel(channel="pwat").min()) > 0 and float(da.sel(channel="btmp").max()) < 350
    assert "latitude" in da.coords and da["latitude"].dims == ("y", "x")
    assert (path.parent / "README.md").is_file()


def test_members_are_samples_and_share_their_time_split(tmp_path: Path) -> None:
    base = synthetic_dataset(10, 16, 16, seed=6)
    ens = xr.concat([base, base + 1.0, base + 2.0], dim="member").assign_coords(member=[0, 1, 2])
    nc = write_netcdf(ens.transpose("member", "time", "lat", "lon"), tmp_path / "ens.nc")
    b = build_datasets(nc, ["x"], scale_factor=4, split=SPLIT)
    assert (len(b.train), len(b.val), len(b.test)) == (18, 6, 6)
    assert list(b.val.members) == [0, 1, 2, 0, 1, 2]
    assert set(b.train.times).isdisjoint(b.val.times) and set(b.val.times).isdisjoint(b.test.times)
    hr = [b.val[i]["hr"] for i in range(3)]  # the members of one time differ by 1 K
    std = float(b.normalizer.std.squeeze())
    torch.testing.assert_close(hr[1] - hr[0], torch.full_like(hr[0], 1.0 / std), atol=1e-4, rtol=0)


@pytest.mark.parametrize("kind", ["channel", "pixel"])
def test_statistics_in_blocks_equal_numpy_on_the_training_rows(
        kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """``compute_stats`` reads STATS_BLOCK fields at a time (memory flat in the number of
    fields): blocks of 3 over 11 fields, one block without a training row, NaN in places, give
    numpy's mean and standard deviation of the training rows, and their range."""
    from weather_sr.data import normalise

    monkeypatch.setattr(normalise, "STATS_BLOCK", 3)
    rng = np.random.default_rng(2)
    values = rng.normal([[[5.0]], [[-3.0]]], [[[2.0]], [[0.5]]], size=(11, 2, 4, 5))
    values[2, 0, 1, 1] = values[8, 1, :, 2] = np.nan
    train = np.array([0, 1, 2, 6, 8, 9, 10])  # rows 3..5: a block without training rows
    da = xr.DataArray(values, dims=("sample", "channel", "y", "x"),
                      coords={"channel": ["a", "b"]}).chunk({"sample": 1})
    stats = normalise.compute_stats(da, train, kind, "test")
    axes = (0, 2, 3) if kind == "channel" else (0,)
    mean = np.nanmean(values[train], axis=axes)
    std = np.nanstd(values[train], axis=axes)
    shape = (2, 1, 1) if kind == "channel" else (2, 4, 5)
    np.testing.assert_allclose(stats.mean, mean.reshape(shape), rtol=1e-12)
    np.testing.assert_allclose(stats.std, std.reshape(shape), rtol=1e-10)
    np.testing.assert_allclose(stats.low, np.nanmin(values[train], axis=(0, 2, 3)), rtol=1e-12)
    np.testing.assert_allclose(stats.high, np.nanmax(values[train], axis=(0, 2, 3)), rtol=1e-12)
