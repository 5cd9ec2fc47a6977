"""The denoiser backbone: an SR3/DDPM-style UNet that knows nothing about diffusion.

``UNet.forward(x, noise_level, cond)`` concatenates ``x`` and ``cond`` along channels, embeds the
scalar ``noise_level`` per sample (sinusoidal + MLP) and returns a field with ``out_channels``
channels on the same grid. Whether that output is ε, x0 or anything else is the caller's business
(see ``weather_sr.model.downscaling_model``).

Padding is chosen per axis: "zeros" or "reflect" for regional grids, "circular" along longitude
(x) for global grids, so that a roll of the input along x by a multiple of 2**(levels-1) rolls the
output by the same amount.

Circular padding joins an input's east and west edges, which is physical only when the input spans
the whole periodic longitude. A training patch or an inference tile narrower than the globe has its
real neighbours outside the window, so it is padded with zeros instead: the caller says which with
the explicit argument ``UNet.forward(..., wrap_x=False)`` (default True: the input is the whole
field), passed on by :class:`weather_sr.nn.precond.Precond` and the denoiser contract
(``core.process.Denoiser``). It only ever turns "circular" into "zeros" along x.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

PADDINGS = ("zeros", "reflect", "circular")


def _check_padding(mode: str, axis: str) -> str:
    if mode not in PADDINGS:
        raise ValueError(f"padding_{axis}: expected one of {PADDINGS}, got {mode!r}")
    return mode


class PadConv2d(nn.Module):
    """3×3 (or k×k) convolution with "same" padding chosen independently along y and x.

    Zeros on both axes use the convolution's own padding (fastest); otherwise the field is padded
    explicitly with ``F.pad`` (one call when both axes share a mode) before a padding-0 conv.
    A circular x axis pads with zeros when ``wrap_x`` is False (an input narrower than the
    periodic field).
    """

    def __init__(
        self,
        cin: int,
        cout: int,
        kernel_size: int = 3,
        stride: int = 1,
        padding: tuple[str, str] = ("zeros", "zeros"),
    ) -> None:
        super().__init__()
        self.p = kernel_size // 2
        self.modes = padding
        native = padding == ("zeros", "zeros")
        self.conv = nn.Conv2d(cin, cout, kernel_size, stride, padding=self.p if native else 0)
        self.native = native

    def _pad(self, x: torch.Tensor, wrap_x: bool) -> torch.Tensor:
        my, mx = ("constant" if m == "zeros" else m for m in self.modes)
        if mx == "circular" and not wrap_x:
            mx = "constant"  # a patch or tile narrower than the globe: its edges do not meet
        p = self.p
        if my == mx:
            return F.pad(x, (p, p, p, p), mode=mx)
        x = F.pad(x, (p, p, 0, 0), mode=mx)  # x (longitude) axis first
        return F.pad(x, (0, 0, p, p), mode=my)

    def forward(self, x: torch.Tensor, wrap_x: bool = True) -> torch.Tensor:
        """[B, cin, H, W] -> [B, cout, H/stride, W/stride]; ``wrap_x``: see the module doc."""
        if self.native or self.p == 0:
            return self.conv(x)
        return self.conv(self._pad(x, wrap_x))


def sinusoidal_embedding(
    level: torch.Tensor, dim: int, max_period: float = 10000.0
) -> torch.Tensor:
    """Transformer-style embedding of a scalar per sample: level [B] -> [B, dim] (cos | sin)."""
    half = dim // 2
    freqs = torch.exp(
        -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=level.device) / half
    )
    args = level.float()[:, None] * freqs[None, :]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=1)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv twice, the noise embedding applied as scale/shift after the 2nd norm."""

    def __init__(
        self,
        cin: int,
        cout: int,
        emb_dim: int,
        groups: int,
        dropout: float,
        padding: tuple[str, str],
    ) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(min(groups, cin), cin)
        self.conv1 = PadConv2d(cin, cout, padding=padding)
        self.emb = nn.Linear(emb_dim, 2 * cout)
        self.norm2 = nn.GroupNorm(min(groups, cout), cout)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.conv2 = PadConv2d(cout, cout, padding=padding)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor, wrap_x: bool = True) -> torch.Tensor:
        """x [B, cin, H, W], emb [B, emb_dim] (already SiLU-activated) -> [B, cout, H, W]."""
        h = self.conv1(F.silu(self.norm1(x)), wrap_x)
        scale, shift = self.emb(emb)[:, :, None, None].chunk(2, dim=1)
        h = torch.addcmul(shift, self.norm2(h), 1 + scale)
        h = self.conv2(self.dropout(F.silu(h)), wrap_x)
        return self.skip(x) + h


class Attention(nn.Module):
    """Multi-head self-attention over all grid points (residual), scaled_dot_product_attention."""

    def __init__(self, channels: int, head_channels: int, groups: int) -> None:
        super().__init__()
        if channels % head_channels:
            raise ValueError(f"head_channels: expected a divisor of the attention width "
                             f"{channels}, got {head_channels}")
        self.heads = channels // head_channels
        self.norm = nn.GroupNorm(min(groups, channels), channels)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.out = nn.Linear(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, C, H, W] -> [B, C, H, W]."""
        B, C, H, W = x.shape
        h = self.norm(x).flatten(2).transpose(1, 2)  # [B, HW, C]
        q, k, v = self.qkv(h).view(B, H * W, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v)  # [B, heads, HW, c]
        a = self.out(a.transpose(1, 2).reshape(B, H * W, C))
        return x + a.transpose(1, 2).reshape(B, C, H, W)


class Level(nn.Module):
    """Residual blocks (each optionally followed by attention) at one resolution."""

    def __init__(self, blocks: list[ResBlock], attention: list[Attention] | None) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.attn = nn.ModuleList(attention) if attention else None


class UNet(nn.Module):
    """Conditional UNet: (x [B, in_channels, H, W], noise_level [B], cond [B, cond_channels, H, W])
    -> [B, out_channels, H, W].

    ``channel_mults`` gives one width multiplier of ``base_channels`` per level; H and W must be
    divisible by 2**(len(channel_mults) - 1). ``attention_levels`` lists the levels (0 = finest)
    with self-attention; the middle block (coarsest level) has attention when ``mid_attention``.
    ``scalars`` = (first, count): channels of ``cond`` that are constant planes of per-sample
    scalars (:attr:`weather_sr.data.condition.ConditionSpec.scalar_channels`), whose values are
    mapped linearly into the noise-level embedding as well.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        cond_channels: int = 0,
        base_channels: int = 64,
        channel_mults: Sequence[int] = (1, 2, 2),
        num_res_blocks: int = 2,
        attention_levels: Sequence[int] = (),
        mid_attention: bool = True,
        head_channels: int = 32,
        dropout: float = 0.0,
        groups: int = 8,
        padding_y: str = "zeros",
        padding_x: str = "zeros",
        scalars: tuple[int, int] | None = None,
    ) -> None:
        super().__init__()
        pad = (_check_padding(padding_y, "y"), _check_padding(padding_x, "x"))
        if in_channels + cond_channels < 1 or out_channels < 1:
            raise ValueError("expected at least one input and one output channel")
        levels = len(channel_mults)
        if levels < 1 or any(a < 0 or a >= levels for a in attention_levels):
            raise ValueError(f"attention_levels: expected levels in 0..{levels - 1}, got "
                             f"{list(attention_levels)}")
        self.in_channels, self.cond_channels, self.out_channels = (
            in_channels,
            cond_channels,
            out_channels,
        )
        self.levels = levels
        self.base_channels = base_channels
        emb_dim = 4 * base_channels
        self.embed = nn.Sequential(
            nn.Linear(base_channels, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim)
        )
        # per-sample scalars: (first, count) constant planes of cond, added to the embedding
        # as EDM adds class labels (the planes are also ordinary input channels)
        self.scalars = None if scalars is None else (int(scalars[0]), int(scalars[1]))
        if self.scalars is not None:
            first, count = self.scalars
            if count < 1 or first < 0 or first + count > cond_channels:
                raise ValueError(f"scalars {scalars}: not (first, count) channels of the "
                                 f"{cond_channels} condition channels")
            self.map_scalars = nn.Linear(count, emb_dim)
        self.conv_in = PadConv2d(in_channels + cond_channels, base_channels, padding=pad)
        widths = [base_channels * m for m in channel_mults]

        def res(cin: int, cout: int) -> ResBlock:
            return ResBlock(cin, cout, emb_dim, groups, dropout, pad)

        def attn(c: int, n: int, on: bool) -> list[Attention] | None:
            return [Attention(c, head_channels, groups) for _ in range(n)] if on else None

        self.down = nn.ModuleList()
        self.downsample = nn.ModuleList()
        skips, c = [base_channels], base_channels
        for i, w in enumerate(widths):
            blocks = []
            for _ in range(num_res_blocks):
                blocks.append(res(c, w))
                c = w
                skips.append(c)
            self.down.append(Level(blocks, attn(c, num_res_blocks, i in attention_levels)))
            if i < levels - 1:
                self.downsample.append(PadConv2d(c, c, stride=2, padding=pad))
                skips.append(c)
        self.mid1 = res(c, c)
        self.mid_attn = Attention(c, head_channels, groups) if mid_attention else None
        self.mid2 = res(c, c)
        self.up = nn.ModuleList()
        self.upsample = nn.ModuleList()
        for i, w in reversed(list(enumerate(widths))):
            blocks = []
            for _ in range(num_res_blocks + 1):
                blocks.append(res(c + skips.pop(), w))
                c = w
            self.up.append(Level(blocks, attn(c, num_res_blocks + 1, i in attention_levels)))
            if i > 0:
                self.upsample.append(PadConv2d(c, c, padding=pad))
        self.norm_out = nn.GroupNorm(min(groups, c), c)
        self.conv_out = PadConv2d(c, out_channels, padding=pad)

    def check_size(self, h: int, w: int) -> None:
        """ValueError unless H and W are divisible by 2**(levels-1)."""
        m = 2 ** (self.levels - 1)
        if h % m or w % m:
            raise ValueError(f"field size {h}x{w} is not divisible by {m} = 2**(levels-1) with "
                             f"{self.levels} UNet levels")

    def forward(
        self,
        x: torch.Tensor | None,
        noise_level: torch.Tensor,
        cond: torch.Tensor | None = None,
        *,
        wrap_x: bool = True,
    ) -> torch.Tensor:
        """x [B, in_channels, H, W] (None when in_channels = 0), noise_level [B] (or scalar),
        cond [B, cond_channels, H, W] -> [B, out_channels, H, W].

        ``wrap_x``: whether the input spans the whole periodic x axis (the configured padding);
        False for a patch or tile narrower than it (a circular x is padded with zeros).
        """
        parts = [p for p in (x, cond) if p is not None]
        h = parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)
        if h.shape[1] != self.in_channels + self.cond_channels:
            raise ValueError(f"expected {self.in_channels} + {self.cond_channels} input "
                             f"channels, got {h.shape[1]}")
        self.check_size(h.shape[-2], h.shape[-1])
        level = torch.as_tensor(noise_level, device=h.device).reshape(-1).expand(h.shape[0])
        emb = self.embed(sinusoidal_embedding(level, self.base_channels).to(h.dtype))
        if self.scalars is not None and cond is not None:
            first, count = self.scalars
            # any pixel of a constant plane (tiles are padded by replication)
            emb = emb + self.map_scalars(cond[:, first : first + count, 0, 0].to(emb.dtype))
        emb = F.silu(emb)
        h = self.conv_in(h, wrap_x)
        skips = [h]
        for i, lvl in enumerate(self.down):
            for j, block in enumerate(lvl.blocks):
                h = block(h, emb, wrap_x)
                if lvl.attn is not None:
                    h = lvl.attn[j](h)
                skips.append(h)
            if i < len(self.downsample):
                h = self.downsample[i](h, wrap_x)
                skips.append(h)
        h = self.mid1(h, emb, wrap_x)
        if self.mid_attn is not None:
            h = self.mid_attn(h)
        h = self.mid2(h, emb, wrap_x)
        for i, lvl in enumerate(self.up):
            for j, block in enumerate(lvl.blocks):
                h = block(torch.cat([h, skips.pop()], dim=1), emb, wrap_x)
                if lvl.attn is not None:
                    h = lvl.attn[j](h)
            if i < len(self.upsample):
                h = self.upsample[i](F.interpolate(h, scale_factor=2.0, mode="nearest"), wrap_x)
        return self.conv_out(F.silu(self.norm_out(h)), wrap_x)
