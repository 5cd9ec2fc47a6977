"""Physical x padding on global grids: circular only for inputs spanning the whole periodic
longitude; training patches and inference tiles narrower than the globe are padded with zeros.
The rule is an explicit argument (``UNet.forward(..., wrap_x=False)``, passed by
``Precond``, the denoiser contract and the regression base), set by the trainer, the tiled
denoiser and nothing else: every path that feeds the UNet is checked here."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch.utils.data import default_collate

from weather_sr.config import ModelConfig
from weather_sr.core.schedule import make_schedule
from weather_sr.inference.tiling import TiledDenoiser
from weather_sr.model.downscaling_model import resolve_padding_x
from weather_sr.nn.precond import Precond
from weather_sr.nn.unet import UNet

torch.set_num_threads(1)

H, W = 32, 64  # a global field: x (longitude) is periodic over W columns


def unet(padding_x: str, padding_y: str = "zeros") -> UNet:
    """Small real UNet (GroupNorm, mid attention), the same weights whatever the padding."""
    torch.manual_seed(0)
    return UNet(2, 2, 1, base_channels=16, channel_mults=(1, 2), num_res_blocks=1,
                mid_attention=True, head_channels=16, groups=8,
                padding_y=padding_y, padding_x=padding_x).eval()


def field(b: int = 2, w: int = W, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(b, 2, H, w, generator=g), torch.tensor([3.0, 700.0])[:b],
            torch.randn(b, 1, H, w, generator=g))


def spy(net: torch.nn.Module) -> list[tuple[int, bool]]:
    """Record (input width, ``wrap_x``) at every forward of ``net``."""
    seen: list[tuple[int, bool]] = []

    def hook(module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        inp = args[0] if args[0] is not None else args[2]
        seen.append((int(inp.shape[-1]), bool(kwargs.get("wrap_x", True))))

    net.register_forward_pre_hook(hook, with_kwargs=True)
    return seen


@torch.no_grad()
def test_whole_global_field_is_roll_equivariant_with_circular_padding() -> None:
    """(i) circular padding (``padding_x: auto`` on a global grid): the forward of the field
    rolled in longitude, rolled back, equals the forward of the field; zeros padding is not."""
    assert resolve_padding_x(ModelConfig(padding_x="auto"), periodic=True) == "circular"
    net = unet("circular")
    x, lvl, c = field()
    out = net(x, lvl, c)
    for k in (2, 8, 30):  # multiples of 2**(levels-1) = 2
        back = net(x.roll(k, -1), lvl, c.roll(k, -1)).roll(-k, -1)
        torch.testing.assert_close(back, out, atol=1e-5, rtol=1e-5)
    zeros = unet("zeros")
    back = zeros(x.roll(8, -1), lvl, c.roll(8, -1)).roll(-8, -1)
    assert float((back - zeros(x, lvl, c)).abs().max()) > 1e-2  # the test can fail


@torch.no_grad()
def test_patch_narrower_than_globe_is_padded_with_zeros() -> None:
    """(ii) a patch narrower than the globe with ``wrap_x=False`` gives exactly the forward of
    the same weights configured with zeros padding; the default (True) keeps circular padding,
    and ``Precond`` passes the argument on."""
    circ, zeros = unet("circular"), unet("zeros")
    x, lvl, c = field()
    px, pc = x[..., 8:40], c[..., 8:40]  # 32 of 64 longitudes
    ref, joined = zeros(px, lvl, pc), circ(px, lvl, pc)
    # without the rule the patch's east and west edges are joined: a different output
    assert float((joined - ref).abs().max()) > 1e-2
    torch.testing.assert_close(circ(px, lvl, pc, wrap_x=False), ref, rtol=0, atol=0)
    torch.testing.assert_close(circ(px, lvl, pc, wrap_x=True), joined, rtol=0, atol=0)
    sch = make_schedule("linear", 1000)
    t = torch.tensor([10, 900])
    torch.testing.assert_close(Precond(circ, sch)(px, pc, t, wrap_x=False),
                               Precond(zeros, sch)(px, pc, t), rtol=0, atol=0)


@torch.no_grad()
def test_wrap_x_changes_only_circular_x() -> None:
    """Reflect padding in y is kept; zeros-only networks are unaffected."""
    mixed = unet("circular", padding_y="reflect")
    target = unet("zeros", padding_y="reflect")
    x, lvl, c = field(w=32)
    torch.testing.assert_close(mixed(x, lvl, c, wrap_x=False), target(x, lvl, c), rtol=0,
                               atol=0)
    plain = unet("zeros")
    torch.testing.assert_close(plain(x, lvl, c, wrap_x=False), plain(x, lvl, c), rtol=0, atol=0)


@torch.no_grad()
def test_tiled_denoiser_pads_narrow_tiles_with_zeros() -> None:
    """(iii) tiling: tiles narrower than the global field see zeros padding in x (the tiled output
    of the circular UNet equals that of the zeros UNet, same weights), tiles spanning the whole
    width and the whole field in one call keep circular padding."""
    sch = make_schedule("linear", 1000)
    circ, zeros = unet("circular"), unet("zeros")
    seen = spy(circ)
    x, _, y = field()
    t = torch.tensor([10, 900])
    narrow = TiledDenoiser(Precond(circ, sch), 32, 16, periodic_x=True)
    out = narrow(x, y, t)
    assert seen and all(w == 32 and not wrap for w, wrap in seen)
    ref = TiledDenoiser(Precond(zeros, sch), 32, 16, periodic_x=True)(x, y, t)
    torch.testing.assert_close(out, ref, rtol=0, atol=0)

    seen.clear()
    whole = TiledDenoiser(Precond(circ, sch), 64, 16, periodic_x=True)(x, y, t)
    assert seen == [(W, True)]
    torch.testing.assert_close(whole, Precond(circ, sch)(x, y, t), rtol=0, atol=0)

    seen.clear()  # tiles split in y only span the whole longitude: circular
    y_only = TiledDenoiser(Precond(circ, sch), (16, 64), 8, periodic_x=True)(
        torch.cat([x, x], -2), torch.cat([y, y], -2), t)
    assert seen and all(w == W and wrap for w, wrap in seen)
    assert y_only.shape == (2, 2, 2 * H, W)


@pytest.mark.parametrize(("patch_w", "wraps"), [(32, False), (W, True)])
def test_trainer_pads_patches_narrower_than_globe_with_zeros(
    tmp_path: Path, patch_w: int, wraps: bool
) -> None:
    """(iii) training: on a global grid the network sees each training patch narrower than the
    globe with zeros x padding, a patch as wide as the globe with circular padding."""
    from weather_sr import distributed as D
    from weather_sr.config import load_config
    from weather_sr.data import build_datasets, synthetic_dataset, write_zarr
    from weather_sr.training.trainer import Trainer

    data = write_zarr(synthetic_dataset(8, 16, W, variables=("a",), seed=2), tmp_path / "f.zarr")
    bundle = build_datasets(data, ["a"], scale_factor=4, patch_size=(16, patch_w))
    cfg = load_config(None, [
        f"data.path={data}", "data.variables=[a]", "data.scale_factor=4",
        f"data.patch_size=[16, {patch_w}]", "model.base_channels=8", "model.groups=4",
        "model.channel_mults=[1, 2]", "model.num_res_blocks=1", "model.attention_levels=[]",
        "model.head_channels=8", "diffusion.timesteps=20", "training.batch_size=2",
        "training.val_images=0", "training.precision=fp32", "training.device=cpu",
        "output.tensorboard=false",
    ])
    info = D.setup("cpu")
    try:
        trainer = Trainer(cfg, tmp_path / "run", info, bundle)
        assert trainer.periodic and bundle.grid.shape == (16, W)
        assert all(conv.modes[1] == "circular" for conv in trainer.net.modules()
                   if hasattr(conv, "modes"))
        seen = spy(trainer.net)
        batch = default_collate([bundle.train[i] for i in range(2)])
        assert batch["hr"].shape[-1] == patch_w
        trainer.train_step([batch])
        assert seen and all(w == patch_w and wrap is wraps for w, wrap in seen)
    finally:
        D.teardown(info)


def test_every_path_to_the_unet_gets_its_padding(tmp_path: Path) -> None:
    """A global field (16 x 64), training patches 16 x 32: each path that feeds the UNet tells it
    whether its input spans the globe. Training patches: no; validation fields: yes; sampling
    (evaluate, downscale) whole fields: yes; tiles of 32: no; and the CorrDiff regression base,
    evaluated in the same tiles: no."""
    from weather_sr import distributed as D
    from weather_sr.config import load_config
    from weather_sr.data import build_datasets, synthetic_dataset, write_zarr
    from weather_sr.inference.ensemble import SamplingOptions, model_base, sample_ensemble
    from weather_sr.model.downscaling_model import DownscalingModel
    from weather_sr.training.trainer import Trainer

    data = write_zarr(synthetic_dataset(8, 16, W, variables=("a",), seed=2), tmp_path / "f.zarr")
    bundle = build_datasets(data, ["a"], scale_factor=4, patch_size=(16, 32),
                            split=(0.5, 0.5, 0.0))
    cfg = load_config(None, [
        f"data.path={data}", "data.variables=[a]", "data.scale_factor=4",
        "data.patch_size=[16, 32]", "data.split=[0.5, 0.5, 0.0]", "model.base_channels=8",
        "model.groups=4", "model.channel_mults=[1, 2]", "model.num_res_blocks=1",
        "model.attention_levels=[]", "model.head_channels=8", "diffusion.timesteps=20",
        "training.batch_size=2", "training.val_batches=1", "training.val_images=0",
        "training.precision=fp32", "training.device=cpu", "output.tensorboard=false",
    ])
    info = D.setup("cpu")
    try:
        trainer = Trainer(cfg, tmp_path / "run", info, bundle)
        assert trainer.periodic
        train_seen, val_seen = spy(trainer.net), spy(trainer.ema_net)
        trainer.train_step([default_collate([bundle.train[i] for i in range(2)])])
        assert train_seen and set(train_seen) == {(32, False)}
        assert trainer.validate() is not None
        assert val_seen and set(val_seen) == {(W, True)}
        cond = torch.stack([bundle.val[i]["cond"] for i in range(2)])
        model = trainer.ema_model
        val_seen.clear()
        whole = SamplingOptions(steps=2, members=1, periodic_x=True, pad_multiple=2)
        sample_ensemble(model, cond, whole)
        assert val_seen and set(val_seen) == {(W, True)}
        val_seen.clear()
        sample_ensemble(model, cond, SamplingOptions(**{**whole.__dict__, "tile": 32,
                                                        "overlap": 8}))
        assert val_seen and set(val_seen) == {(32, False)}
    finally:
        D.teardown(info)
    reg_net = unet("circular")
    reg = DownscalingModel(reg_net, kind="regression", target="full", channels=2)
    corrdiff = DownscalingModel(unet("circular"), kind="diffusion", target="regression_residual",
                                channels=2, regression=reg)
    reg_seen = spy(reg_net)
    cond = torch.randn(2, 3, H, W, generator=torch.Generator().manual_seed(3))  # its 2 + 1 inputs
    tiles = SamplingOptions(tile=32, overlap=8, periodic_x=True, pad_multiple=2)
    with torch.no_grad():
        model_base(corrdiff, cond, tiles)
    assert reg_seen and set(reg_seen) == {(32, False)}
