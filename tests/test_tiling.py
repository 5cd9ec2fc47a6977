"""Tiled denoiser: exact coverage, normalised smooth weights, equality with the untiled network
for local (finite receptive field) stand-ins, no seams, longitude wrap-around, bounded memory.

With the real UNet (fixed random weights: GroupNorm, middle self-attention) the tests assert what
is true of it: no seam (blend weights sum to 1 and are as smooth as the ramps; the output is a
convex blend of the tile predictions), determinism per (field, member) whatever the batch size
(to float rounding: the CPU kernels round differently for other batch sizes), and a measured,
nonzero distance to the untiled evaluation (tiling is exact only for local stand-ins).
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from weather_sr.core.schedule import make_schedule
from weather_sr.inference.ensemble import SamplingOptions, sample_pairs, tiled
from weather_sr.inference.tiling import TiledDenoiser, _fold, ramp_window, tile_starts
from weather_sr.nn.precond import Precond
from weather_sr.nn.unet import UNet

torch.set_num_threads(1)  # small tensors: threads only contend on a shared CPU

GEN = torch.Generator().manual_seed(0)
K3 = torch.randn(2, 3, 3, 3, generator=GEN)  # 2 output channels from [x (2 ch), y (1 ch)]
K5 = torch.randn(2, 3, 5, 5, generator=GEN)


def conv_denoiser(kernel: torch.Tensor, circular_x: bool = False):
    """Translation-equivariant stand-in with receptive radius k // 2, zero (or circular-x) padding;
    records the largest input it is called with."""
    r = kernel.shape[-1] // 2
    calls: list[tuple[int, ...]] = []

    def den(x: torch.Tensor, y: torch.Tensor, t: torch.Tensor, *, wrap_x: bool = True
            ) -> torch.Tensor:
        calls.append(tuple(x.shape))
        z = torch.cat([x, y], dim=1) * (1.0 + 0.01 * t.float())[:, None, None, None]
        if circular_x and wrap_x:
            return F.conv2d(F.pad(z, (r, r, 0, 0), mode="circular"), kernel, padding=(r, 0))
        return F.conv2d(z, kernel, padding=r)

    den.calls = calls  # type: ignore[attr-defined]
    return den


def inputs(b: int, h: int, w: int, seed: int = 1) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, 2, h, w, generator=g)
    y = torch.randn(b, 1, h, w, generator=g)
    t = torch.arange(1, b + 1)
    return x, y, t


@pytest.mark.parametrize(("n", "tile", "overlap"),
                         [(70, 16, 6), (64, 16, 4), (17, 16, 8), (9, 16, 4)])
@pytest.mark.parametrize("periodic", [False, True])
def test_tile_starts_cover_with_overlap(n: int, tile: int, overlap: int, periodic: bool) -> None:
    starts = tile_starts(n, tile, overlap, periodic=periodic)
    size = min(tile, n) if not periodic or n <= tile else tile
    covered = torch.zeros(n, dtype=torch.int64)
    for s in starts:
        covered[(torch.arange(size) + s) % n] += 1
    assert bool((covered >= 1).all())
    if not periodic:
        assert starts[0] == 0 and starts[-1] + size == n  # last tile aligned to the edge
        assert all(0 <= s <= n - size for s in starts)
    ends = [*starts[1:], starts[0] + n] if periodic and len(starts) > 1 else starts[1:]
    for a, b in zip(starts, ends, strict=False):
        assert a + size - b >= overlap  # neighbours share at least `overlap` pixels


def test_ramps_complementary_and_zero_at_edges() -> None:
    w = ramp_window(20, 6, rise=True, fall=True)
    assert w[0] == 0 and w[-1] == 0 and bool((w[6:14] == 1).all())
    # a rising and a falling ramp over the same pixels sum to 1
    torch.testing.assert_close(w[:6] + w[-6:], torch.ones(6, dtype=torch.float64))
    assert bool((ramp_window(20, 6, rise=False, fall=False) == 1).all())


@pytest.mark.parametrize("periodic", [False, True])
def test_weights_sum_to_one(periodic: bool) -> None:
    x, y, t = inputs(2, 37, 53)
    td = TiledDenoiser(lambda x, y, t, **_: torch.full_like(x, 3.0), 16, 5, periodic_x=periodic)
    torch.testing.assert_close(td(x, y, t), torch.full_like(x, 3.0))


@pytest.mark.parametrize(("h", "w", "tile", "overlap", "max_batch"),
                         [(50, 70, 16, 6, 5), (33, 64, (16, 24), (4, 8), None), (40, 40, 32, 2, 1)])
def test_local_denoiser_tiled_equals_untiled(h, w, tile, overlap, max_batch) -> None:
    """Radius-1 network: every pixel wrong in a tile is its outermost one, which gets weight 0."""
    x, y, t = inputs(3, h, w)
    den = conv_denoiser(K3)
    ref = den(x, y, t)
    out = TiledDenoiser(den, tile, overlap, max_batch=max_batch)(x, y, t)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-5)


def test_wider_receptive_field_differs_only_in_overlaps_and_bounded() -> None:
    x, y, t = inputs(2, 60, 60)
    den = conv_denoiser(K5)
    ref = den(x, y, t)
    tile, overlap = 24, 8
    out = TiledDenoiser(den, tile, overlap)(x, y, t)
    diff = (out - ref).abs().amax(dim=(0, 1))  # [H, W]
    starts = tile_starts(60, tile, overlap)
    in_overlap = torch.zeros(60, dtype=torch.bool)
    for a, b in itertools.pairwise(starts):
        in_overlap[b : a + tile] = True
    away = ~in_overlap[:, None] & ~in_overlap[None, :]
    assert float(diff[away].max()) < 1e-5  # identical away from the overlaps
    assert float(diff.max()) > 1e-3  # (the stand-in really is wrong at tile edges)
    # bound: a tile is wrong only on its second pixel from an edge (weight ramp[1] there), and at
    # most 2 x 2 tiles cover a pixel; each wrong value is off by at most `edge_error`
    edge_error = max(
        float((den(x[..., a : a + tile, b : b + tile], y[..., a : a + tile, b : b + tile], t)
               - ref[..., a : a + tile, b : b + tile]).abs().max())
        for a in starts for b in starts
    )
    ramp1 = float(ramp_window(tile, overlap, rise=True, fall=False)[1])
    assert float(diff.max()) <= 4 * ramp1 * edge_error


def test_no_seam_with_non_local_denoiser() -> None:
    """A GroupNorm-like stand-in (subtracts the tile mean) disagrees between tiles; blending must
    keep the x-jumps in the overlaps no larger than inside the tiles, hard stitching must not."""
    h, w = 48, 96
    j = torch.arange(w, dtype=torch.float32)
    i = torch.arange(h, dtype=torch.float32)
    field = torch.sin(3 * math.pi * j / w)[None, :] + 0.5 * torch.cos(2 * math.pi * i / h)[:, None]
    x, y, t = field[None, None].clone(), torch.zeros(1, 1, h, w), torch.ones(1, dtype=torch.long)

    def den(x: torch.Tensor, y: torch.Tensor, t: torch.Tensor, **_: bool) -> torch.Tensor:
        return x - x.mean(dim=(-2, -1), keepdim=True)

    def jumps(overlap: int) -> tuple[float, float]:
        out = TiledDenoiser(den, 32, overlap)(x, y, t)[0, 0]
        dx = (out[:, 1:] - out[:, :-1]).abs().amax(dim=0)  # [W - 1], jump between j and j + 1
        starts = tile_starts(w, 32, overlap)
        border = torch.zeros(w - 1, dtype=torch.bool)
        for a, b in itertools.pairwise(starts):
            border[max(b - 1, 0) : a + 32] = True  # pairs touching the shared pixels
        return float(dx[border].max()), float(dx[~border].max())

    seam, inside = jumps(16)
    assert seam <= inside * 1.001
    seam_hard, inside_hard = jumps(0)
    assert seam_hard > 5 * inside_hard  # hard stitching has a visible seam: the test can fail


def test_periodic_x_equals_circular_untiled() -> None:
    h, w = 24, 70
    x, y, t = inputs(2, h, w)
    ref = conv_denoiser(K3, circular_x=True)(x, y, t)
    starts = tile_starts(w, 16, 6, periodic=True)
    assert starts[-1] + 16 > w  # a tile straddles the seam
    out = TiledDenoiser(conv_denoiser(K3), 16, 6, periodic_x=True)(x, y, t)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-5)
    # without wrap-around the seam columns see zero padding and differ
    flat = TiledDenoiser(conv_denoiser(K3), 16, 6)(x, y, t)
    assert float((flat - ref)[..., [0, w - 1]].abs().max()) > 1e-2


def test_one_call_when_domain_fits_in_one_tile() -> None:
    x, y, t = inputs(4, 20, 30)
    den = conv_denoiser(K3)
    td = TiledDenoiser(den, 32, 8)
    torch.testing.assert_close(td(x, y, t), den(x, y, t))
    assert td.calls == 1 and den.calls[0] == (4, 2, 20, 30)


def test_memory_bounded_by_tile_and_batch() -> None:
    """Largest network input is max_batch x C x tile², however large the domain."""
    b, tile, max_batch = 2, 32, 3
    for n in (64, 128, 256):
        x, y, t = inputs(b, n, n)
        den = conv_denoiser(K3)
        td = TiledDenoiser(den, tile, 8, max_batch=max_batch)
        td(x, y, t)
        largest = max(math.prod(s) for s in den.calls)
        assert largest <= max_batch * 2 * tile * tile
        assert td.max_input_numel == largest
        n_tiles = len(tile_starts(n, tile, 8)) ** 2
        assert sum(s[0] for s in den.calls) == n_tiles * b  # every tile-sample exactly once


def test_pad_multiple_feeds_divisible_sizes() -> None:
    x, y, t = inputs(1, 30, 45)
    den = conv_denoiser(K3)
    out = TiledDenoiser(den, 32, 8, pad_multiple=8)(x, y, t)
    assert out.shape == (1, 2, 30, 45)
    assert all(s[-2] % 8 == 0 and s[-1] % 8 == 0 for s in den.calls)
    ref = den(x, y, t)  # interior pixels untouched by the edge padding
    torch.testing.assert_close(out[..., 1:-1, 1:-1], ref[..., 1:-1, 1:-1], rtol=0, atol=1e-5)


def test_invalid_overlap_rejected() -> None:
    with pytest.raises(ValueError, match="overlap"):
        TiledDenoiser(conv_denoiser(K3), 16, 16)


# ------------------------------------------------------------------ the real UNet

SCHEDULE = make_schedule("linear", 1000)


def real_denoiser(padding_x: str = "zeros") -> Precond:
    """The shipped UNet with fixed random weights (base 16, mults [1, 2], GroupNorm, middle
    attention) as an epsilon denoiser of x [B, 2, H, W] given y [B, 1, H, W]."""
    torch.manual_seed(0)
    net = UNet(2, 2, 1, base_channels=16, channel_mults=(1, 2), num_res_blocks=1,
               mid_attention=True, head_channels=16, groups=8, padding_x=padding_x).eval()
    return Precond(net, SCHEDULE)


def tile_weights(td: TiledDenoiser, h: int, w: int) -> list[tuple[int, int, torch.Tensor]]:
    """(y0, x0, normalised weight map [H, W]) of every tile of ``td``'s layout."""
    ys, xs, th, tw, wy, wx, total = td._layout(h, w)
    maps = []
    for i, y0 in enumerate(ys):
        for j, x0 in enumerate(xs):
            m = torch.zeros(h, w + tw, dtype=torch.float64)
            m[y0 : y0 + th, x0 : x0 + tw] = wy[i, :, None] * wx[j, None, :]
            maps.append((y0, x0, _fold(m, w) / total))
    return maps


@pytest.mark.parametrize(("h", "w", "tile", "overlap", "periodic"),
                         [(64, 64, 32, 16, False), (32, 64, 32, 16, True),
                          (37, 70, 16, 5, False), (37, 70, 16, 5, True), (32, 64, 24, 8, True)])
def test_blend_weights_sum_to_one_and_are_smooth(h, w, tile, overlap, periodic) -> None:
    """(a) no seam: the normalised weights sum to 1 at every pixel, no tile's weight jumps between
    neighbouring pixels by more than the raised cosine's steepest step pi / (2 (m - 1)), and a
    constant denoiser output is reproduced by the blend (to float32 rounding, <= 2 ulp)."""
    td = TiledDenoiser(lambda x, y, t, **_: torch.full_like(x, 3.0), tile, overlap,
                       periodic_x=periodic)
    maps = tile_weights(td, h, w)
    assert len(maps) > 1
    total = sum(m for _, _, m in maps)
    assert float((total - 1).abs().max()) < 1e-12
    steepest = math.pi / (2 * (overlap - 1))
    for _, _, m in maps:
        assert float(m.min()) >= 0.0
        dx = (m.roll(-1, -1) - m).abs() if periodic else (m[:, 1:] - m[:, :-1]).abs()
        assert float(dx.max()) <= steepest + 1e-12
        assert float((m[1:] - m[:-1]).abs().max()) <= steepest + 1e-12
    x, y, t = inputs(2, h, w)
    out = td(x, y, t)
    assert float((out - 3.0).abs().max()) <= 2 * torch.finfo(torch.float32).eps * 3.0


@torch.no_grad()
@pytest.mark.parametrize("periodic", [False, True])
def test_real_unet_output_is_a_convex_blend_of_its_tiles(periodic: bool) -> None:
    """(a) with the real UNet the tiled output is sum_i w_i eps_i of the tile predictions eps_i
    (the network on each tile alone): it never leaves their range, so tiles that disagree are
    blended over the ramps, never stitched."""
    h, w, tile, overlap = 32, 64, 32, 16
    den = real_denoiser("circular" if periodic else "zeros")
    x, y, t = inputs(2, h, w)
    td = TiledDenoiser(den, tile, overlap, periodic_x=periodic)
    out = td(x, y, t)
    blend = torch.zeros_like(out, dtype=torch.float64)
    lo = torch.full_like(out, math.inf)
    hi = torch.full_like(out, -math.inf)
    cols = torch.arange(w)
    for y0, x0, m in tile_weights(td, h, w):
        idx = (x0 + torch.arange(tile)) % w
        eps = den(x[..., y0 : y0 + tile, :][..., idx], y[..., y0 : y0 + tile, :][..., idx], t,
                  wrap_x=False)
        full = torch.zeros_like(out)
        full[..., y0 : y0 + tile, idx] = eps
        blend += full.double() * m
        cover = (m > 0)[None, None] & torch.isin(cols, idx)[None, None, None, :]
        lo = torch.where(cover, torch.minimum(lo, full), lo)
        hi = torch.where(cover, torch.maximum(hi, full), hi)
    torch.testing.assert_close(out.double(), blend, rtol=0, atol=1e-5)
    assert bool((out >= lo - 1e-5).all() and (out <= hi + 1e-5).all())
    # the tiles really disagree where they overlap (the UNet is not local)
    assert float((hi - lo).max()) > 1e-2


def elementwise(x: torch.Tensor, y: torch.Tensor, t: torch.Tensor, **_: bool) -> torch.Tensor:
    """A batch-invariant stand-in: every output element depends on its own inputs only."""
    return 0.3 * x + 0.1 * y * (1.0 + 1e-3 * t.float())[:, None, None, None]


@torch.no_grad()
def test_tiled_samples_per_pair_do_not_depend_on_batch_size() -> None:
    """(b) fields [0, 1, 2] x members [0, 1], tiled (tile 32, overlap 16 on 32 x 64, periodic x),
    stochastic DDIM (eta 1: fresh noise at every step): batch size 1 and 3 give the same sample
    per (field, member). Exactly for a batch-invariant stand-in; for the real UNet to float
    rounding (its CPU kernels round differently for another batch size; measured max |delta| =
    2.6e-6 of mean |x0|, mean 2.7e-7), far below the distance between members (1.4)."""
    y = torch.randn(3, 1, 32, 64, generator=torch.Generator().manual_seed(5))
    pairs = [(f, m) for f in range(3) for m in range(2)]

    def run(den, batch_size: int) -> torch.Tensor:
        opts = SamplingOptions(sampler="ddim", steps=3, eta=1.0, batch_size=batch_size, tile=32,
                               overlap=16, members=2, periodic_x=True, seed=7)
        return sample_pairs(tiled(den, opts), y, SCHEDULE, pairs, channels=2, options=opts)

    a, b = run(elementwise, 1), run(elementwise, 3)
    assert torch.equal(a, b)
    den = real_denoiser("circular")
    a, b = run(den, 1), run(den, 3)
    scale = float(a.abs().mean())
    assert float((a - b).abs().max()) <= 2e-5 * scale
    assert torch.equal(run(den, 3), b)  # the same batch size: bit for bit
    members = float((a[0::2] - a[1::2]).abs().mean())  # member 0 vs 1 of each field
    assert members > 1e-2 * scale


# mean |tiled - untiled| / mean |untiled| for tile = field / 2, overlap 16, measured with the
# weights of real_denoiser() on the inputs of the test: one denoiser call on 64 x 64 (t = 50 and
# 950): 0.104 (0.104-0.105 at any single t); a 4-step DDIM trajectory from the same x_T: 0.031;
# one call on a 32 x 64 global field (circular UNet, tiles padded with zeros in x): 0.083. The
# 3x3-conv stand-in: 1.5e-8 (float rounding). Bounds: about 1.5 x the measurement, and nonzero.
CLOSENESS = {"call": (0.02, 0.15), "trajectory": (0.005, 0.05), "global": (0.02, 0.13)}


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().mean() / b.abs().mean())


@torch.no_grad()
def test_real_unet_tiled_is_close_to_untiled_but_not_exact() -> None:
    """(c) tiling changes the real UNet's output everywhere (GroupNorm statistics and attention
    over the tile), by a measured amount; the 3x3-conv stand-in is exact on the same layout."""
    x, y, t = inputs(2, 64, 64)
    t = torch.tensor([50, 950])
    den = real_denoiser()
    call = rel(TiledDenoiser(den, 32, 16)(x, y, t), den(x, y, t))
    lo, hi = CLOSENESS["call"]
    assert lo < call < hi, call

    opts = SamplingOptions(sampler="ddim", steps=4, batch_size=2, seed=3)
    tiled_opts = SamplingOptions(sampler="ddim", steps=4, batch_size=2, seed=3, tile=32, overlap=16)
    pairs = [(0, 0), (1, 0)]
    untiled_x0 = sample_pairs(tiled(den, opts), y, SCHEDULE, pairs, channels=2, options=opts)
    tiled_x0 = sample_pairs(tiled(den, tiled_opts), y, SCHEDULE, pairs, channels=2,
                            options=tiled_opts)
    traj = rel(tiled_x0, untiled_x0)
    lo, hi = CLOSENESS["trajectory"]
    assert lo < traj < hi, traj

    gx, gy, _ = inputs(2, 32, 64)
    gden = real_denoiser("circular")
    glob = rel(TiledDenoiser(gden, 32, 16, periodic_x=True)(gx, gy, t), gden(gx, gy, t))
    lo, hi = CLOSENESS["global"]
    assert lo < glob < hi, glob

    stand_in = conv_denoiser(K3)
    assert rel(TiledDenoiser(stand_in, 32, 16)(x, y, t), stand_in(x, y, t)) < 1e-6
    circ = conv_denoiser(K3, circular_x=True)  # its tiles see zeros: the ramps hide the edge
    assert rel(TiledDenoiser(conv_denoiser(K3), 32, 16, periodic_x=True)(gx, gy, t),
               circ(gx, gy, t)) < 1e-6
