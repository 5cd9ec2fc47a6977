"""Tiled denoiser: exact coverage, normalised smooth weights, equality with the untiled network
for local (finite receptive field) stand-ins, no seams, longitude wrap-around, bounded memory."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from weather_sr.inference.tiling import TiledDenoiser, ramp_window, tile_starts

GEN = torch.Generator().manual_seed(0)
K3 = torch.randn(2, 3, 3, 3, generator=GEN)  # 2 output channels from [x (2 ch), y (1 ch)]
K5 = torch.randn(2, 3, 5, 5, generator=GEN)


def conv_denoiser(kernel: torch.Tensor, circular_x: bool = False):
    """Translation-equivariant stand-in with receptive radius k // 2, zero (or circular-x) padding;
    records the largest input it is called with."""
    r = kernel.shape[-1] // 2
    calls: list[tuple[int, ...]] = []

    def den(x: torch.Tensor, y: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        calls.append(tuple(x.shape))
        z = torch.cat([x, y], dim=1) * (1.0 + 0.01 * t.float())[:, None, None, None]
        if circular_x:
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
    td = TiledDenoiser(lambda x, y, t: torch.full_like(x, 3.0), 16, 5, periodic_x=periodic)
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

    def den(x: torch.Tensor, y: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
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
