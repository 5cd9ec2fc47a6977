"""The spectral process through training, the checkpoint, downscale and the options
(docs/method.md §9): what a run measures and stores is what sampling from the file uses."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import xarray as xr

from weather_sr.config import load_config
from weather_sr.core.sampling import SAMPLERS, sampler_timesteps
from weather_sr.core.spectral_sampling import sample_process
from weather_sr.errors import UserError
from weather_sr.inference.api import downscale
from weather_sr.inference.ensemble import SamplingOptions
from weather_sr.model.checkpoint import load_checkpoint, save_checkpoint
from weather_sr.model.loading import load_model
from weather_sr.training.loop import train

torch.set_num_threads(1)
FIXTURE = Path(__file__).parent / "fixtures" / "tiny_v1.pt"


@pytest.fixture(scope="module")
def data_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from weather_sr.data import synthetic_dataset, write_zarr

    path = tmp_path_factory.mktemp("data") / "fields.zarr"
    return write_zarr(synthetic_dataset(12, 32, 32, variables=("t2m",), seed=3), path)


def _tiny(data_path: Path, *overrides: str):
    return load_config(None, [
        f"data.path={data_path}", "data.variables=[t2m]", "data.scale_factor=4",
        "data.patch_size=16", "model.base_channels=8", "model.channel_mults=[1, 2]",
        "model.num_res_blocks=1", "model.head_channels=8", "diffusion.timesteps=50",
        "diffusion.val_sample_steps=2", "training.batch_size=2", "training.steps=3",
        "training.warmup_steps=1", "training.val_every=100", "training.checkpoint_every=100",
        "training.val_batches=1", "training.val_images=1", "training.precision=fp32",
        "output.tensorboard=false", *overrides])


@pytest.fixture(scope="module")
def shaped_run(data_path: Path, tmp_path_factory: pytest.TempPathFactory):
    cfg = _tiny(data_path, "diffusion.noise=equal_snr", "diffusion.spectral_schedule=blur:2")
    return train(cfg, tmp_path_factory.mktemp("run") / "shaped", progress=False)


def test_the_checkpoint_carries_the_measured_process(shaped_run) -> None:
    model = load_model(shaped_run.checkpoint)
    assert model.spectral is not None
    assert model.spectral.noise.kind == "equal_snr" and model.spectral.shift.kind == "blur"
    s = model.spectral.noise.on_grid(16, 16)
    torch.testing.assert_close(s.square().mean(), torch.tensor(1.0, dtype=torch.float64))


def test_downscale_from_the_checkpoint_alone_samples_its_process(shaped_run, data_path) -> None:
    """The API's members equal sample_process on the stored process, and differ from white."""
    model = load_model(shaped_run.checkpoint)
    ds = xr.open_zarr(data_path).isel(time=slice(0, 1))
    out = downscale(ds, shaped_run.checkpoint, members=1, sampler="ddim", steps=4,
                    coarsen=True, device="cpu", precision="float32")
    assert out.attrs["forward_noise"] == "equal_snr"
    assert out.attrs["spectral_schedule"] == "blur:2"
    white = model.spectral
    model.spectral = None
    plain = downscale(ds, model, members=1, sampler="ddim", steps=4, coarsen=True,
                      device="cpu", precision="float32")
    model.spectral = white
    again = downscale(ds, model, members=1, sampler="ddim", steps=4, coarsen=True,
                      device="cpu", precision="float32")
    assert (out["t2m"] == again["t2m"]).all()
    assert float(abs(out["t2m"] - plain["t2m"]).max()) > 1e-3


def test_model_sample_runs_the_process(shaped_run) -> None:
    model = load_model(shaped_run.checkpoint)
    cond = torch.randn(2, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    z = model.sample(cond, "ddim", 3, generator=torch.Generator().manual_seed(1))
    ts = sampler_timesteps("ddim", model.schedule, 3)
    z0 = sample_process(SAMPLERS["ddim"], model.denoiser, model.condition(cond), model.schedule,
                        ts, model.spectral, shape=(2, 1, 16, 16),
                        generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(z, model.base(cond) + model.unscale_target(z0))


def test_an_old_checkpoint_loads_as_white() -> None:
    model = load_model(FIXTURE)
    assert model.spectral is None
    assert model.meta.config.diffusion.noise == "white"


def test_a_checkpoint_without_its_process_is_refused(shaped_run, tmp_path: Path) -> None:
    payload = load_checkpoint(shaped_run.checkpoint)
    del payload["spectral"]
    save_checkpoint(tmp_path / "edited.pt", payload)
    with pytest.raises(UserError, match="field 'spectral' is missing") as info:
        load_model(tmp_path / "edited.pt")
    assert "\n" not in str(info.value)
    payload = load_checkpoint(shaped_run.checkpoint)
    payload["spectral"]["noise"]["amplitude"] = [[1.0]]
    save_checkpoint(tmp_path / "edited2.pt", payload)
    with pytest.raises(UserError, match="field 'spectral'"):
        load_model(tmp_path / "edited2.pt")


def test_resume_refuses_another_process(shaped_run, data_path: Path, tmp_path: Path) -> None:
    cfg = _tiny(data_path, "diffusion.noise=power:1", "training.steps=4")
    with pytest.raises(UserError, match=r"diffusion\.noise differs"):
        train(cfg, shaped_run.run_dir, progress=False, resume=shaped_run.checkpoint)


@pytest.mark.parametrize(("override", "message"), [
    ("diffusion.noise=pink", "diffusion.noise = 'pink' must be one of white, power:NUMBER"),
    ("diffusion.noise=power:-1", "power:NUMBER needs a positive number"),
    ("diffusion.noise=white:2", "must be one of"),
    ("diffusion.spectral_schedule=blur", "must be one of none, equal_snr, blur:NUMBER"),
])
def test_bad_spectral_options_name_the_key(data_path: Path, override: str, message: str) -> None:
    with pytest.raises(UserError, match=message.replace("(", r"\(")):
        _tiny(data_path, override)


def test_regression_models_take_no_noise_shape(data_path: Path) -> None:
    with pytest.raises(UserError, match="applies to diffusion models only"):
        _tiny(data_path, "model.kind=regression", "diffusion.noise=power:1")


def test_noise_colour_option_rules() -> None:
    assert SamplingOptions(sampler="ancestral", noise_colour="power:1").noise_colour == "power:1"
    SamplingOptions(sampler="ddim", eta=0.5, noise_colour="power:2")
    with pytest.raises(UserError, match="--noise-colour power:1: shapes the noise"):
        SamplingOptions(sampler="dpmpp_2m", noise_colour="power:1")
    with pytest.raises(UserError, match="--noise-colour"):
        SamplingOptions(sampler="ancestral", noise_colour="blue")


def test_coloured_sampling_applies_to_an_existing_checkpoint(tmp_path: Path) -> None:
    """Training-free: the old fixture samples with coloured noise; white is today's output."""
    model = load_model(FIXTURE)
    h = w = 16
    ds = xr.Dataset(
        {name: (("time", "lat", "lon"), torch.randn(1, h // 4, w // 4).double().numpy() + 280.0,
                {"units": unit})
         for name, unit in zip(model.meta.channels, model.meta.units or [], strict=True)},
        coords={"time": [0], "lat": torch.linspace(40, 50, h // 4).numpy(),
                "lon": torch.linspace(0, 10, w // 4).numpy()})
    kw = {"members": 2, "sampler": "ddim", "steps": 4, "eta": 1.0, "device": "cpu",
          "precision": "float32", "allow_out_of_range": True}
    white = downscale(ds, FIXTURE, **kw)
    default = downscale(ds, FIXTURE, **kw, noise_colour="white")
    coloured = downscale(ds, FIXTURE, **kw, noise_colour="power:1")
    name = model.meta.channels[0]
    assert (white[name] == default[name]).all()
    assert float(abs(coloured[name] - white[name]).max()) > 1e-3
    assert coloured.attrs["noise_colour"] == "power:1"
