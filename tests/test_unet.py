"""UNet backbone: shapes, per-axis padding (roll equivariance), size errors, embedding, size."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from weather_sr.errors import UserError
from weather_sr.nn.unet import PadConv2d, UNet, sinusoidal_embedding

torch.set_num_threads(1)


def tiny(**kw) -> UNet:
    torch.manual_seed(0)
    args = dict(
        in_channels=2,
        out_channels=2,
        cond_channels=3,
        base_channels=8,
        channel_mults=(1, 2),
        num_res_blocks=1,
        attention_levels=(1,),
        head_channels=8,
    )
    args.update(kw)
    return UNet(**args).eval()


def inputs(h: int = 16, w: int = 32, b: int = 2):
    g = torch.Generator().manual_seed(1)
    return (
        torch.randn(b, 2, h, w, generator=g),
        torch.tensor([3.0, 700.0])[:b],
        torch.randn(b, 3, h, w, generator=g),
    )


@pytest.mark.parametrize("h,w", [(16, 16), (16, 32), (8, 24)])
def test_output_shape(h: int, w: int) -> None:
    x, lvl, c = inputs(h, w)
    assert tiny()(x, lvl, c).shape == (2, 2, h, w)
    three = tiny(channel_mults=(1, 2, 2), attention_levels=(), out_channels=1)
    assert three(x, lvl, c).shape == (2, 1, h, w)


def test_padconv_matches_torch_padding_modes() -> None:
    """Explicit per-axis padding equals Conv2d's own padding_mode when both axes agree."""
    x = torch.randn(2, 3, 8, 12)
    for mode in ("circular", "reflect", "zeros"):
        ours = PadConv2d(3, 4, padding=(mode, mode))
        ref = nn.Conv2d(3, 4, 3, padding=1, padding_mode=mode)
        ref.load_state_dict(ours.conv.state_dict())
        torch.testing.assert_close(ours(x), ref(x))
    # mixed: zeros along y, circular along x == circular pad of x then zero pad of y
    mixed = PadConv2d(3, 4, padding=("zeros", "circular"))
    xp = torch.nn.functional.pad(torch.cat([x[..., -1:], x, x[..., :1]], dim=-1), (0, 0, 1, 1))
    torch.testing.assert_close(
        mixed(x), nn.functional.conv2d(xp, mixed.conv.weight, mixed.conv.bias)
    )


def test_circular_padding_is_roll_equivariant_along_longitude() -> None:
    x, lvl, c = inputs()
    k = 6  # a multiple of 2**(levels-1) = 2
    net = tiny(padding_x="circular")
    out, rolled = net(x, lvl, c), net(x.roll(k, -1), lvl, c.roll(k, -1))
    torch.testing.assert_close(rolled, out.roll(k, -1), atol=1e-5, rtol=1e-5)
    # zeros padding (same weights) is not equivariant: the seam sees zeros
    zeros = tiny(padding_x="zeros")
    zeros.load_state_dict(net.state_dict())
    diff = (zeros(x.roll(k, -1), lvl, c.roll(k, -1)) - zeros(x, lvl, c).roll(k, -1)).abs().max()
    assert diff > 1e-3
    # circular only along x: rolling along y is not an equivariance
    diff_y = (net(x.roll(4, -2), lvl, c.roll(4, -2)) - out.roll(4, -2)).abs().max()
    assert diff_y > 1e-3


def test_bad_sizes_raise_clear_error() -> None:
    """nn reports bad arguments with ValueError (the config check names the keys to users)."""
    x, lvl, c = inputs(16, 31)
    with pytest.raises(ValueError, match=r"16x31 is not divisible by 2 .*2\*\*\(levels-1\)"):
        tiny()(x, lvl, c)
    with pytest.raises(ValueError, match="padding_x") as info:
        tiny(padding_x="periodic")
    assert not isinstance(info.value, UserError)
    with pytest.raises(ValueError, match="input channels"):
        tiny()(x[..., :16], lvl, c[:, :2, :, :16])


def test_noise_level_changes_output() -> None:
    x, _, c = inputs(b=1)
    net = tiny()
    a = net(x, torch.tensor([10.0]), c)
    b = net(x, torch.tensor([500.0]), c)
    assert (a - b).abs().max() > 1e-4
    # scalar noise level broadcasts over the batch
    x2, _, c2 = inputs(b=2)
    torch.testing.assert_close(
        net(x2, torch.tensor(10.0), c2), net(x2, torch.tensor([10.0, 10.0]), c2)
    )


def test_sinusoidal_embedding_closed_form() -> None:
    e = sinusoidal_embedding(torch.tensor([0.0, 2.0]), 8)
    torch.testing.assert_close(e[0], torch.tensor([1.0] * 4 + [0.0] * 4))
    freqs = torch.exp(-torch.log(torch.tensor(10000.0)) * torch.arange(4) / 4)
    torch.testing.assert_close(e[1], torch.cat([torch.cos(2 * freqs), torch.sin(2 * freqs)]))


def _res(cin: int, cout: int, emb: int) -> int:
    n = 2 * cin + 9 * cin * cout + cout + emb * 2 * cout + 2 * cout + 2 * cout + 9 * cout * cout
    return n + cout + (cin * cout + cout if cin != cout else 0)


def test_parameter_count_closed_form() -> None:
    """One level, one res block, mid attention, in 2 + cond 3 -> out 2, base 8 (emb 32)."""
    net = UNet(2, 2, 3, base_channels=8, channel_mults=(1,), num_res_blocks=1, head_channels=8)
    c, emb = 8, 32
    embed = 8 * emb + emb + emb * emb + emb
    conv_in = 9 * 5 * c + c
    attn = 2 * c + 3 * c * c + 3 * c + c * c + c
    up = _res(2 * c, c, emb) * 2  # two up blocks, each fed a skip of width c
    out = 2 * c + 9 * c * 2 + 2
    expected = embed + conv_in + _res(c, c, emb) + 2 * _res(c, c, emb) + attn + up + out
    assert sum(p.numel() for p in net.parameters()) == expected


def test_regression_mode_without_x() -> None:
    net = tiny(in_channels=0, cond_channels=3)
    _, _, c = inputs()
    assert net(None, torch.zeros(2), c).shape == (2, 2, 16, 32)


def test_backward_reaches_all_parameters() -> None:
    net = tiny(dropout=0.1).train()
    x, lvl, c = inputs()
    net(x, lvl, c).square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())
