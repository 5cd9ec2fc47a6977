"""Tiled evaluation of a denoiser on domains of any size (patch-based generation, as CorrDiff).

:class:`TiledDenoiser` wraps a denoiser ``(x_t, y, t) -> eps`` into another denoiser with the same
contract that evaluates the network on overlapping tiles and blends the tile predictions with a
smooth window at *every* call, i.e. at every denoising step. Sampling then runs unchanged on the
full field (noise is drawn once, on the whole field), and the network only ever sees tiles:

- tiles are ``tile_h x tile_w``; consecutive tiles overlap by at least ``overlap`` pixels; the last
  tile of a row/column is aligned to the domain edge so the positions cover the domain exactly;
- blending weights are separable raised-cosine ramps over ``overlap`` pixels on every side that has
  a neighbouring tile (flat 1 elsewhere, including the domain edges), 0 on a tile's outermost
  pixel, normalised so they sum to 1 at every pixel; with exactly ``overlap`` pixels shared the two
  ramps already sum to 1 (sin² + cos²), so the normalisation only matters where the last tile
  overlaps more. Only for a purely local network (a convolution stack of receptive radius r) does
  a tiled evaluation equal the untiled one outside r - 1 pixels of a tile's ramps (exactly, for a
  3x3 convolution). The shipped UNet is not local: GroupNorm statistics and the middle
  self-attention span the whole tile, so tiling changes its output everywhere;
- ``periodic_x`` treats x (longitude) as circular: tiles are spread evenly round the circle and may
  straddle the seam, so a global grid has no seam in longitude;
- on a periodic field, a tile narrower than the field goes to the denoiser with ``wrap_x=False``
  (the denoiser contract, ``core.process.Denoiser``): a UNet configured with circular x padding
  pads it with zeros, since its east and west edges are not neighbours (the same rule as for
  training patches); a tile spanning the whole width, and the whole field in one call, keep the
  configured padding (circular on a global grid);
- at most ``max_batch`` tile-samples go through the network per call, so peak memory in the model is
  bounded by ``tile area x max_batch`` whatever the domain size; time is linear in the tile count.

When the whole domain fits in one tile, the network is called once on the whole field.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from weather_sr.core.process import Denoiser

# tile starts in y and x, tile height and width, windows [ny, th] and [nx, tw], weight sum [H, W]
Layout = tuple[list[int], list[int], int, int, Tensor, Tensor, Tensor]


def tile_starts(n: int, tile: int, overlap: int, *, periodic: bool = False) -> list[int]:
    """Start indices of tiles of length ``tile`` covering ``0..n-1`` with overlaps >= ``overlap``.

    Non-periodic: ``0, stride, 2 stride, ...`` with ``stride = tile - overlap`` and the last tile
    aligned to the edge (start ``n - tile``). Periodic: ``k = ceil(n / stride)`` starts spread as
    evenly as integers allow round the circle (gaps <= stride); tiles wrap modulo ``n``.
    A domain with ``n <= tile`` is one tile starting at 0 (of length ``n`` when not periodic).
    """
    if tile <= 0 or overlap < 0 or overlap >= tile:
        raise ValueError(f"need 0 <= overlap < tile, got tile={tile}, overlap={overlap}")
    if n <= tile:
        return [0]
    stride = tile - overlap
    if periodic:
        k = math.ceil(n / stride)
        return [(i * n) // k for i in range(k)]
    starts = list(range(0, n - tile, stride))
    starts.append(n - tile)
    return starts


def ramp_window(length: int, overlap: int, *, rise: bool, fall: bool) -> Tensor:
    """1-D blending window ``[length]`` (float64): raised-cosine ramps over ``overlap`` pixels.

    With ``m`` ramp pixels, ``w[i] = sin²(π/2 · i / (m - 1))`` for ``i < m`` on the rising side
    (if ``rise``), mirrored on the falling side (if ``fall``), 1 elsewhere (``m = 1``: 1/2).
    The tile's outermost pixel gets weight 0 — it is where a zero-padded network is most wrong —
    and a rising and a falling ramp over the same ``m`` pixels sum to exactly 1 (sin² + cos²).
    """
    w = torch.ones(length, dtype=torch.float64)
    m = min(overlap, length // 2) if rise and fall else min(overlap, length)
    if m == 0:
        return w
    if m == 1:
        ramp = torch.full((1,), 0.5, dtype=torch.float64)
    else:
        ramp = torch.sin(0.5 * math.pi * torch.arange(m, dtype=torch.float64) / (m - 1)) ** 2
    if rise:
        w[:m] = torch.minimum(w[:m], ramp)
    if fall:
        w[length - m :] = torch.minimum(w[length - m :], ramp.flip(0))
    return w


class TiledDenoiser:
    """Denoiser wrapper evaluating ``denoiser`` on blended overlapping tiles (see module doc).

    Args:
        denoiser: ``(x_t [N, C, th, tw], y [N, Cy, th, tw], t int64 [N]) -> eps [N, C, th, tw]``.
        tile: tile size (square int, or ``(tile_h, tile_w)``).
        overlap: minimum overlap between neighbouring tiles, in pixels (< tile).
        periodic_x: x (longitude) is circular (global grid): tiles wrap across the seam.
        max_batch: at most this many tile-samples per network call (None: all tiles in one call).
        pad_multiple: network inputs are edge-padded to multiples of this and the output cropped
            (a UNet with L levels needs 2**(L-1)); tiles should be multiples already.

    Call as ``eps = wrapper(x_t, y, t)`` with ``x_t [B, C, H, W]``, ``y [B, Cy, H, W]``,
    ``t int64 [B]`` for any H, W; returns ``eps [B, C, H, W]``. ``calls`` counts network calls
    and ``max_input_numel`` records the largest ``x_t`` the network received (for memory checks).
    """

    def __init__(
        self,
        denoiser: Denoiser,
        tile: int | tuple[int, int],
        overlap: int | tuple[int, int],
        *,
        periodic_x: bool = False,
        max_batch: int | None = None,
        pad_multiple: int = 1,
    ) -> None:
        self.denoiser = denoiser
        self.pad_multiple = max(1, int(pad_multiple))
        self.tile = (tile, tile) if isinstance(tile, int) else (int(tile[0]), int(tile[1]))
        self.overlap = (
            (overlap, overlap) if isinstance(overlap, int) else (int(overlap[0]), int(overlap[1]))
        )
        for size, ov in zip(self.tile, self.overlap, strict=True):
            if size <= 0 or ov < 0 or ov >= size:
                raise ValueError(f"need 0 <= overlap < tile, got tile={tile}, overlap={overlap}")
        if max_batch is not None and max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self.periodic_x = periodic_x
        self.max_batch = max_batch
        self.calls = 0
        self.max_input_numel = 0
        self._device_cache: dict[tuple[Any, ...], tuple[Tensor, Tensor, Tensor]] = {}
        self._layout_cache: dict[tuple[int, int], Layout] = {}

    def _layout(self, h: int, w: int) -> Layout:
        """Tile starts, tile sizes, 1-D windows per tile and the blended weight sum ``[H, W]``."""
        if (h, w) in self._layout_cache:
            return self._layout_cache[(h, w)]
        th, tw = min(self.tile[0], h), min(self.tile[1], w)
        ys = tile_starts(h, th, min(self.overlap[0], th - 1))
        xs = tile_starts(w, tw, min(self.overlap[1], tw - 1), periodic=self.periodic_x)
        wy = torch.stack([
            ramp_window(th, self.overlap[0], rise=s > 0, fall=s + th < h) for s in ys
        ])  # [ny, th]
        wrap = self.periodic_x and len(xs) > 1
        wx = torch.stack([
            ramp_window(tw, self.overlap[1], rise=wrap or s > 0, fall=wrap or s + tw < w)
            for s in xs
        ])  # [nx, tw]
        total = torch.zeros(h, w + tw, dtype=torch.float64)
        for i, y0 in enumerate(ys):
            for j, x0 in enumerate(xs):
                total[y0 : y0 + th, x0 : x0 + tw] += wy[i, :, None] * wx[j, None, :]
        total = _fold(total, w)
        if float(total.min()) <= 0.0:  # cannot happen with overlap < tile; guard the division
            raise ValueError(f"tile={self.tile}, overlap={self.overlap} leave pixels unweighted")
        layout = (ys, xs, th, tw, wy, wx, total)
        self._layout_cache[(h, w)] = layout
        return layout

    def _net(self, x: Tensor, y: Tensor, t: Tensor, whole: bool) -> Tensor:
        """One network call; inputs are edge-padded up to multiples of ``pad_multiple``.
        ``whole``: the input spans the field's width (else, on a periodic field, the denoiser
        is told ``wrap_x=False``; the keyword is passed only then)."""
        h, w = x.shape[-2:]
        m = self.pad_multiple
        ph, pw = -h % m, -w % m
        if ph or pw:  # e.g. a UNet needs sizes divisible by 2**(levels-1)
            x = F.pad(x, (0, pw, 0, ph), mode="replicate")
            y = F.pad(y, (0, pw, 0, ph), mode="replicate")
        self.calls += 1
        self.max_input_numel = max(self.max_input_numel, x.numel())
        if whole or not self.periodic_x:
            return self.denoiser(x, y, t)[..., :h, :w]
        return self.denoiser(x, y, t, wrap_x=False)[..., :h, :w]

    def __call__(self, x_t: Tensor, y: Tensor, t: Tensor) -> Tensor:
        b, _, h, w = x_t.shape
        if h <= self.tile[0] and w <= self.tile[1]:
            return self._chunked(x_t, y, t, whole=True)
        ys, xs, th, tw, wy, wx, total = self._layout(h, w)
        if self.periodic_x and len(xs) > 1:  # circular pad on the right so tiles may straddle
            x_t = torch.cat([x_t, x_t[..., :tw]], dim=-1)
            y = torch.cat([y, y[..., :tw]], dim=-1)
        positions = [(i, j) for i in range(len(ys)) for j in range(len(xs))]
        per_call = max(1, (self.max_batch or b * len(positions)) // b)
        out: Tensor | None = None
        for start in range(0, len(positions), per_call):
            group = positions[start : start + per_call]
            xb = torch.cat([x_t[..., ys[i] : ys[i] + th, xs[j] : xs[j] + tw] for i, j in group])
            yb = torch.cat([y[..., ys[i] : ys[i] + th, xs[j] : xs[j] + tw] for i, j in group])
            # a tile narrower than the field: no circular x padding
            eps = self._chunked(xb, yb, t.repeat(len(group)), whole=tw >= w)
            if out is None:
                out = eps.new_zeros((b, eps.shape[1], h, w + tw))
                wy_d, wx_d, inv_total = self._weights_on(h, w, eps, wy, wx, total)
            for k, (i, j) in enumerate(group):
                win = wy_d[i, :, None] * wx_d[j, None, :]
                out[..., ys[i] : ys[i] + th, xs[j] : xs[j] + tw] += eps[k * b : (k + 1) * b] * win
        assert out is not None
        return _fold(out, w) * inv_total

    def _weights_on(
        self, h: int, w: int, like: Tensor, wy: Tensor, wx: Tensor, total: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Windows and 1 / weight sum in ``like``'s dtype and device (cached: no copy per step)."""
        key = (h, w, like.dtype, like.device)
        if key not in self._device_cache:
            self._device_cache[key] = (wy.to(like.device, like.dtype),
                                       wx.to(like.device, like.dtype),
                                       (1.0 / total).to(like.device, like.dtype))
        return self._device_cache[key]

    def _chunked(self, x: Tensor, y: Tensor, t: Tensor, whole: bool) -> Tensor:
        """Network on ``x [N, C, h, w]`` in chunks of at most ``max_batch`` samples."""
        n = x.shape[0]
        step = self.max_batch or n
        if n <= step:
            return self._net(x, y, t, whole)
        return torch.cat([self._net(x[s : s + step], y[s : s + step], t[s : s + step], whole)
                          for s in range(0, n, step)])


def _fold(padded: Tensor, w: int) -> Tensor:
    """Fold a right-padded buffer ``[..., H, W + p]`` onto ``[..., H, W]`` (wrap-around add)."""
    out = padded[..., :w].clone()
    extra = padded[..., w:]
    p = extra.shape[-1]
    for s in range(0, p, w):  # p <= tile, usually < w; the loop also covers tile > w
        chunk = extra[..., s : s + w]
        out[..., : chunk.shape[-1]] += chunk
    return out
