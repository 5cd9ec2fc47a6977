"""Downscaling: seeds and determinism across batching/tiling, HR coordinates, CF + provenance
attributes, variable/unit checks, NaN refusal, atomic output, and the CLI end to end."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import xarray as xr

from weather_sr import __version__
from weather_sr.cli import main
from weather_sr.devices import select_device
from weather_sr.errors import UserError
from weather_sr.inference.ensemble import (
    SamplingOptions,
    member_seed,
    pair_generators,
    sample_ensemble,
    sample_pairs,
)
from weather_sr.inference.netcdf import (
    OutputGrid,
    build_dataset,
    check_finite,
    hr_coordinate,
    provenance,
)
from weather_sr.inference.stream import write_dataset
from weather_sr.model.meta import check_channels_of

# ------------------------------------------------------------------ seeds, devices


def test_member_seeds_distinct_and_stable() -> None:
    seeds = {member_seed(7, f, m) for f in range(20) for m in range(20)}
    assert len(seeds) == 400
    assert member_seed(7, 3, 4) == member_seed(7, 3, 4) != member_seed(8, 3, 4)
    from weather_sr.core.sampling import randn_like_batch

    a = randn_like_batch((2, 2, 3), pair_generators(7, [(0, 0), (1, 2)]), "cpu", torch.float32)
    b = randn_like_batch((1, 2, 3), pair_generators(7, [(1, 2)]), "cpu", torch.float32)
    torch.testing.assert_close(a[1:], b, rtol=0, atol=0)  # a row does not depend on its batch


def test_member_seed_uses_all_63_bits() -> None:
    """Issue 22: seeds s and s + 2**32 gave the same ensemble. Now every bit counts, and seeds
    below 2**32 keep the members of earlier versions (the formula as it was, written out)."""
    def earlier(seed: int, field: int, member: int) -> int:
        state = np.random.SeedSequence([seed & 0xFFFFFFFF, field, member])
        return int(state.generate_state(1, np.uint64)[0] >> np.uint64(1))

    rng = np.random.default_rng(0)
    for seed in [0, 1, 7, 2**32 - 1, *rng.integers(0, 2**32, 20).tolist()]:
        for field, member in ((0, 0), (3, 4), (1000, 7)):
            assert member_seed(seed, field, member) == earlier(seed, field, member)
    big = [2**32, 2**32 + 7, 2**62, 2**63 - 1]
    for seed in big:
        assert member_seed(seed, 3, 4) != member_seed(seed & 0xFFFFFFFF, 3, 4)
    assert len({member_seed(s, f, m) for s in [7, *big] for f in range(5) for m in range(5)}
               ) == 5 * 25
    assert all(0 <= member_seed(s, 1, 2) < 2**63 for s in big)


def test_select_device() -> None:
    assert select_device("cpu") == torch.device("cpu")
    assert select_device("auto").type in ("cpu", "cuda", "mps")
    with pytest.raises(UserError, match="--device"):
        select_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="--device cuda"):
            select_device("cuda")


# ------------------------------------------------------------------ determinism


class ConvModel:
    """Stand-in model: residual target, a local denoiser (exact under tiling): the ideal eps for
    x0 ~ N(0, I), sqrt(1 - ᾱ_t) x_t, plus a small fixed 3x3 convolution of (x_t, y), so that the
    sampling dynamics stay stable, members differ by O(1) and rounding differences do not grow."""

    target = "residual"
    regression = None
    spectral = None  # white noise, shared schedule
    channels = 2

    def __init__(self, schedule: object) -> None:
        g = torch.Generator().manual_seed(3)
        self.kernel = 0.2 * torch.randn(2, 4, 3, 3, generator=g)
        self.schedule = schedule
        self.max_numel = 0

    @property
    def denoiser(self):
        def eps(x: torch.Tensor, y: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            self.max_numel = max(self.max_numel, x.numel())
            ab = self.schedule.alpha_bars.to(x.device)[t].float()[:, None, None, None]
            conv = F.conv2d(torch.cat([x, y], 1), self.kernel, padding=1)
            return (1 - ab).sqrt() * x + 0.1 * conv

        return eps

    def base(self, cond: torch.Tensor) -> torch.Tensor:
        return cond[:, : self.channels]

    def condition(self, cond: torch.Tensor, base: torch.Tensor | None = None) -> torch.Tensor:
        return cond

    def unscale_target(self, z0: torch.Tensor) -> torch.Tensor:
        return z0 * torch.tensor([0.5, 2.0]).view(1, -1, 1, 1)


@pytest.mark.parametrize(("sampler", "steps", "eta"),
                         [("ancestral", 12, 0.0), ("ddim", 6, 0.7), ("dpmpp_2m", 6, 0.0)])
def test_same_members_whatever_batch_and_tiles(sampler: str, steps: int, eta: float) -> None:
    from weather_sr.core.schedule import linear_schedule

    model = ConvModel(linear_schedule(12, 1e-3, 0.2))
    cond = torch.randn(3, 2, 40, 36, generator=torch.Generator().manual_seed(5))
    # float32: in bf16 (--precision auto on CPUs with native bf16) batches and tiles round
    # differently
    base = SamplingOptions(sampler=sampler, steps=steps, eta=eta, seed=11, members=3,
                           precision="float32")
    ref = sample_ensemble(model, cond, SamplingOptions(**{**base.__dict__, "batch_size": 1}))
    assert ref.shape == (3, 3, 2, 40, 36) and bool(torch.isfinite(ref).all())
    assert float((ref[:, 0] - ref[:, 1]).abs().max()) > 1e-3  # members differ
    for batch, tile in ((4, 16), (9, 24)):
        opts = SamplingOptions(**{**base.__dict__, "batch_size": batch, "tile": tile,
                                  "overlap": 6})
        out = sample_ensemble(model, cond, opts)
        torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)
    # one (field, member) alone, with the field's global index, is the same sample again
    alone = sample_pairs(model.denoiser, cond[2:], model.schedule, [(0, 1)], channels=2,
                         options=base, field_offset=2)
    torch.testing.assert_close(model.unscale_target(alone)[0] + cond[2, :2], ref[2, 1],
                               rtol=1e-4, atol=1e-4)
    other = sample_ensemble(model, cond, SamplingOptions(**{**base.__dict__, "seed": 12}))
    assert float((other - ref).abs().max()) > 1e-3  # the seed matters


def test_sampling_options_are_checked_naming_the_option() -> None:
    from weather_sr.core.schedule import linear_schedule

    bad = [({"sampler": "euler"}, "--sampler 'euler'"), ({"steps": 0}, "--steps 0"),
           ({"sampler": "dpmpp_2m", "steps": 2.5}, "--steps 2.5"),
           ({"sampler": "ddim", "eta": 1.5}, "--eta 1.5"),
           ({"batch_size": 0}, "--batch-size 0"), ({"tile": -8}, "--tile -8"),
           ({"overlap": -1}, "--overlap -1"), ({"members": 0}, "--members 0"),
           ({"seed": 2**63}, "--seed 9223372036854775808"), ({"seed": -1}, "--seed -1"),
           ({"seed": 1.5}, "--seed 1.5"),
           # one rule for every sampler (the CLI's): an option is checked whether or not the
           # chosen sampler uses it (ancestral ignores steps, only ddim has an eta)
           ({"sampler": "ancestral", "steps": 0}, "--steps 0"),
           ({"sampler": "dpmpp_2m", "eta": 2.0}, "--eta 2.0")]
    for changes, words in bad:
        with pytest.raises(UserError, match=re.escape(words)):
            SamplingOptions(**changes)
    # tile 0 means no tiling, an overlap >= tile is clamped to tile - 1
    SamplingOptions(tile=0)
    SamplingOptions(tile=8, overlap=32)
    # steps <= T is checked where T is known
    model = ConvModel(linear_schedule(12, 1e-3, 0.2))
    cond = torch.zeros(1, 2, 8, 8)
    with pytest.raises(UserError, match=r"--steps 13: the ddim sampler takes 1\.\.12 steps"):
        sample_ensemble(model, cond, SamplingOptions(sampler="ddim", steps=13))
    assert sample_ensemble(model, cond, SamplingOptions(sampler="ancestral", steps=13)).shape == (
        1, 1, 2, 8, 8)


def test_tiled_sampling_bounds_network_input() -> None:
    from weather_sr.core.schedule import linear_schedule

    model = ConvModel(linear_schedule(12, 1e-3, 0.2))
    cond = torch.randn(1, 2, 96, 96, generator=torch.Generator().manual_seed(5))
    opts = SamplingOptions(sampler="ddim", steps=2, members=2, batch_size=2, tile=32, overlap=8)
    sample_ensemble(model, cond, opts)
    assert model.max_numel <= 2 * 2 * 32 * 32


# ------------------------------------------------------------------ output


def test_hr_coordinates_are_block_centres() -> None:
    from weather_sr.data import block_centres

    lr = np.array([10.0, 12.0, 14.0, 16.0])
    hr = hr_coordinate(lr, 4)
    np.testing.assert_allclose(hr[:4], [9.25, 9.75, 10.25, 10.75])
    np.testing.assert_allclose(np.diff(hr), 0.5)
    np.testing.assert_allclose(block_centres(hr, 4), lr)  # round trip with the data module
    uneven = np.array([0.0, 1.0, 3.0])
    np.testing.assert_allclose(hr_coordinate(uneven, 2), [-0.25, 0.25, 0.875, 1.625, 2.5, 3.5])


def _dataset(n: int = 2, m: int = 3) -> xr.Dataset:
    rng = np.random.default_rng(0)
    grid = OutputGrid(np.linspace(-10, 10, 8), np.linspace(0, 21, 8), "latitude", "longitude",
                      {"units": "degrees_north"}, {"units": "degrees_east"})
    times = np.array(["2020-01-01", "2020-01-02"], dtype="datetime64[ns]")[:n]
    return build_dataset(rng.normal(size=(n, m, 2, 8, 8)).astype(np.float32), grid,
                         channels=["t2m", "pwat"], units=["K", "kg m-2"],
                         long_names=["2 m temperature", ""], times=times,
                         attrs={"Conventions": "CF-1.8", "sampler": "ddim"})


def test_output_dataset_cf_round_trip(tmp_path: Path) -> None:
    path = write_dataset(_dataset(), tmp_path / "out.nc", overwrite=False)
    with xr.open_dataset(path) as ds:
        assert ds["t2m"].dims == ("time", "member", "latitude", "longitude")
        assert ds.sizes["member"] == 3 and list(ds["member"].values) == [0, 1, 2]
        assert ds["member"].attrs["standard_name"] == "realization"
        assert ds["t2m"].attrs["units"] == "K" and ds["pwat"].attrs["units"] == "kg m-2"
        assert ds["t2m"].attrs["long_name"] == "2 m temperature"
        assert ds["pwat"].attrs["long_name"] == "pwat"  # falls back to the name
        assert ds.attrs["Conventions"] == "CF-1.8"
        assert ds["latitude"].attrs["axis"] == "Y" and ds["longitude"].attrs["axis"] == "X"
        assert ds["latitude"].attrs["standard_name"] == "latitude"
        assert ds["longitude"].attrs["units"] == "degrees_east"
        assert ds["time"].attrs["axis"] == "T" and ds["time"].attrs["standard_name"] == "time"
        assert ds["time"].values[1] == np.datetime64("2020-01-02")


def test_provenance_attributes(tmp_path: Path) -> None:
    ckpt = tmp_path / "model.pt"
    ckpt.write_bytes(b"weights")
    attrs = provenance(checkpoint=ckpt, sampler="dpmpp_2m", steps=20, eta=0.0, seed=4,
                       members=8, tile=64, overlap=16, argv=["weather-sr", "downscale", "--x y"])
    assert attrs["checkpoint_sha256"] == hashlib.sha256(b"weights").hexdigest()
    assert attrs["weather_sr_version"] == __version__ and attrs["Conventions"] == "CF-1.8"
    assert (attrs["sampler"], attrs["steps"], attrs["seed"]) == ("dpmpp_2m", 20, 4)
    assert attrs["command_line"] == "weather-sr downscale '--x y'"
    assert attrs["date_created"].endswith("Z") and attrs["history"].endswith("'--x y'")


def test_failed_write_leaves_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(self: xr.Dataset, path: Path, **kwargs: object) -> None:
        Path(path).write_bytes(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(xr.Dataset, "to_netcdf", broken)
    with pytest.raises(OSError, match="disk full"):
        write_dataset(_dataset(), tmp_path / "out.nc", overwrite=False)
    assert list(tmp_path.iterdir()) == []


def test_nan_from_model_is_refused() -> None:
    x = np.zeros((1, 2, 2, 4, 4), np.float32)
    valid = np.ones_like(x, dtype=bool)
    check_finite(x, ["a", "b"], valid)
    x[0, 1, 1, 2, 2] = np.nan
    with pytest.raises(UserError, match="channel b"):
        check_finite(x, ["a", "b"], valid)
    valid[0, :, 1, 2, 2] = False  # missing in the input: NaN allowed there
    check_finite(x, ["a", "b"], valid)


def test_channel_and_unit_checks() -> None:
    check_channels_of(["t2m", "u10"], ["K", ""], ["t2m", "u10"], ["K", "m s-1"], "input f.nc",
                      unknown_units=True)  # downscale: a blank input unit is not compared
    with pytest.raises(UserError, match="missing u10"):
        check_channels_of(["t2m"], ["K"], ["t2m", "u10"], ["K", "m s-1"], "input f.nc",
                          unknown_units=True)
    with pytest.raises(UserError, match="order"):
        check_channels_of(["u10", "t2m"], ["", ""], ["t2m", "u10"], ["", ""], "input f.nc",
                          unknown_units=True)
    with pytest.raises(UserError, match=r"variable t2m is in units 'degC'.*'K'"):
        check_channels_of(["t2m"], ["degC"], ["t2m"], ["K"], "input f.nc",
                          unknown_units=True)


# ------------------------------------------------------------------ CLI end to end


def _checkpoint(path: Path, *, nan: bool = False) -> Path:
    """A tiny untrained 2-level UNet checkpoint for channels t2m, u10 (K), x2, T = 20."""
    from weather_sr.config import RunConfig, config_to_dict, model_config_from_dict
    from weather_sr.data import Normalizer
    from weather_sr.model.checkpoint import save_checkpoint
    from weather_sr.model.downscaling_model import build_unet

    cfg = config_to_dict(RunConfig())
    cfg["data"]["variables"] = ["t2m", "u10"]
    cfg["model"].update(base_channels=8, channel_mults=[1, 2], num_res_blocks=1,
                        mid_attention=False, groups=4)
    cfg["diffusion"]["timesteps"] = 20
    torch.manual_seed(0)
    net = build_unet(model_config_from_dict(cfg["model"]), 2, 2, False)
    state = net.state_dict()
    if nan:
        state = {k: v.fill_(float("nan")) if k.startswith("conv_out") else v
                 for k, v in state.items()}
    norm = Normalizer("channel", ["t2m", "u10"], np.full((2, 1, 1), 280.0), np.full((2, 1, 1), 5.0))
    save_checkpoint(path, {"step": 0, "model": state, "ema": state, "config": cfg,
                           "channels": ["t2m", "u10"], "units": ["K", "K"],
                           "normalizer": norm.to_dict(), "scale_factor": 2,
                           "interpolation": "bicubic", "grid": None, "regression": None})
    return path


def _input(path: Path, ny: int = 8, nx: int = 12, **units: str) -> Path:
    from weather_sr.data import synthetic_dataset

    ds = synthetic_dataset(3, ny, nx, variables=("t2m", "u10"), seed=1)
    for name, unit in units.items():
        ds[name].attrs["units"] = unit
    ds.to_netcdf(path)
    return path


def _run(tmp_path: Path, *extra: str, name: str = "out.nc", inp: Path | None = None) -> int:
    ckpt = tmp_path / "model.pt"
    if not ckpt.exists():
        _checkpoint(ckpt)
    if inp is None:
        inp = tmp_path / "lr.nc"
        if not inp.exists():
            _input(inp)
    return main(["downscale", "--checkpoint", str(ckpt), "--input", str(inp), "--output",
                 str(tmp_path / name), "--members", "2", "--sampler", "ddim", "--steps", "3",
                 "--device", "cpu", "--no-progress", *extra])


def test_cli_downscale_writes_cf_ensemble(tmp_path: Path) -> None:
    assert _run(tmp_path, "--seed", "5") == 0
    with xr.open_dataset(tmp_path / "out.nc") as ds, xr.open_dataset(tmp_path / "lr.nc") as lr:
        assert ds["t2m"].dims == ("time", "member", "lat", "lon")
        assert dict(ds.sizes) == {"time": 3, "member": 2, "lat": 16, "lon": 24}
        np.testing.assert_allclose(ds["lat"].values, hr_coordinate(lr["lat"].values, 2))
        np.testing.assert_allclose(ds["lon"].values, hr_coordinate(lr["lon"].values, 2))
        np.testing.assert_array_equal(ds["time"].values, lr["time"].values)
        assert ds["t2m"].attrs["units"] == "K" and ds["u10"].attrs["long_name"] == "synthetic u10"
        assert ds.attrs["Conventions"] == "CF-1.8" and ds.attrs["sampler"] == "ddim"
        assert (ds.attrs["steps"], ds.attrs["seed"], ds.attrs["members"]) == (3, 5, 2)
        digest = hashlib.sha256((tmp_path / "model.pt").read_bytes()).hexdigest()
        assert ds.attrs["checkpoint_sha256"] == digest
        assert "downscale" in ds.attrs["command_line"]
        assert bool(np.isfinite(ds["t2m"].values).all())
        first = ds["t2m"].values
    # same seed, other batch layout: the same members (up to float rounding, which the untrained
    # net and the T = 20 schedule, with alpha_bar_T ~ 1e-10, amplify)
    assert _run(tmp_path, "--seed", "5", "--batch-size", "1", name="b1.nc") == 0
    with xr.open_dataset(tmp_path / "b1.nc") as ds:
        assert np.abs(ds["t2m"].values - first).max() <= 1e-4 * np.abs(first).max()
    # tiled (2 tiles straddling the longitude seam of the 16x24 field); an existing output is
    # refused without --overwrite
    assert _run(tmp_path, "--tile", "16", "--overlap", "4") == 2
    assert _run(tmp_path, "--tile", "16", "--overlap", "4", "--overwrite") == 0
    with xr.open_dataset(tmp_path / "out.nc") as ds:
        assert ds.attrs["tile"] == 16 and bool(np.isfinite(ds["t2m"].values).all())


def test_cli_coarsen_keeps_hr_grid(tmp_path: Path) -> None:
    hr = _input(tmp_path / "hr.nc", ny=16, nx=24)
    assert _run(tmp_path, "--coarsen", inp=hr) == 0
    with xr.open_dataset(tmp_path / "out.nc") as ds, xr.open_dataset(hr) as src:
        np.testing.assert_allclose(ds["lat"].values, src["lat"].values)
        np.testing.assert_allclose(ds["lon"].values, src["lon"].values)
        assert ds.attrs["coarsened_input"] == 1


def test_cli_refuses_wrong_units_and_missing_variable(tmp_path: Path, capsys) -> None:
    bad = _input(tmp_path / "bad.nc", t2m="degC")
    assert _run(tmp_path, inp=bad) == 2
    assert "t2m" in capsys.readouterr().err
    only = tmp_path / "only.nc"
    with xr.open_dataset(bad) as ds:
        ds[["t2m"]].to_netcdf(only)
    assert _run(tmp_path, inp=only) == 2
    assert "'u10' not found" in capsys.readouterr().err
    assert not (tmp_path / "out.nc").exists()


def test_cli_nan_model_writes_nothing(tmp_path: Path, capsys) -> None:
    _checkpoint(tmp_path / "model.pt", nan=True)
    assert _run(tmp_path) == 2
    assert "non-finite" in capsys.readouterr().err
    assert not (tmp_path / "out.nc").exists()


def test_cli_interrupted_write_leaves_no_file(tmp_path: Path, monkeypatch) -> None:
    def interrupted(self: xr.Dataset, path: Path, **kwargs: object) -> None:
        Path(path).write_bytes(b"partial")
        raise KeyboardInterrupt

    _input(tmp_path / "lr.nc")
    monkeypatch.setattr(xr.Dataset, "to_netcdf", interrupted)
    assert _run(tmp_path) == 130
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lr.nc", "model.pt"]


def test_cli_target_grid(tmp_path: Path, capsys) -> None:
    lat, lon = np.linspace(-50.0, 50.0, 16), np.linspace(1.0, 47.0, 24)
    xr.Dataset(coords={"latitude": ("latitude", lat, {"standard_name": "latitude"}),
                       "longitude": ("longitude", lon)}).to_netcdf(tmp_path / "grid.nc")
    assert _run(tmp_path, "--target-grid", str(tmp_path / "grid.nc")) == 0
    with xr.open_dataset(tmp_path / "out.nc") as ds:
        assert ds["t2m"].dims == ("time", "member", "latitude", "longitude")
        np.testing.assert_allclose(ds["latitude"].values, lat)
        np.testing.assert_allclose(ds["longitude"].values, lon)
    xr.Dataset(coords={"lat": lat[:8], "lon": lon}).to_netcdf(tmp_path / "small.nc")
    assert _run(tmp_path, "--target-grid", str(tmp_path / "small.nc"), name="o2.nc") == 2
    assert "is 8x24 but the output is 16x24" in capsys.readouterr().err
