"""The real orthonormal Fourier operator F_R (DESIGN.md section 2), computed with FFTs.

For a real vector x of length n, F_R x lists the independent real numbers of its spectrum
X = DFT(x) (X_k = sum_m x_m e^{-2 pi i k m / n}) in the seed's row order and signs:

    [Re X_0, Re X_1, Im X_1, Re X_2, Im X_2, ..., Re X_{n/2} (even n only)]

scaled so that F_R is orthogonal: 1/sqrt(n) for the DC and (even n) Nyquist entries, sqrt(2/n)
for every other entry. Hence F_R^{-1} = F_R^T, ||F_R x|| = ||x||, and F_R maps N(0, I) to N(0, I).

Everything here is O(n log n): ``torch.fft.rfft`` / ``irfft`` along each axis, then one scaled
strided copy that interleaves and scales the coefficients. It works in float32 and float64 on any
device and passes leading dims through. Autograd is explicit: F_R is orthogonal, so the backward
of F_R is F_R^{-1} and vice versa (custom ``autograd.Function``s, twice differentiable).
The explicit n x n matrix exists only in the tests, as the reference.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import torch
from torch import Tensor

__all__ = [
    "inverse_real_fourier",
    "inverse_real_fourier2",
    "radial_frequency",
    "radial_power_spectrum",
    "real_fourier",
    "real_fourier2",
    "wavenumbers",
]


R2 = math.sqrt(2.0)

# A block (dst, src, scale): F_R entries ``dst`` (a slice along the axis) are ``scale`` times the
# spectrum entries ``src``. Rows (outer axis) index the complex spectrum ``[k, part]`` (part 0 =
# Re, 1 = Im): interleaving them needs strided row slices. Columns (last axis) index the
# ``view_as_real(...).flatten(-2)`` buffer ``[Re0, Im0, Re1, Im1, ...]`` of length 2 (n//2 + 1),
# where the F_R order is that buffer without Im0 (and, for even n, without the Nyquist Im).
_RowBlock = tuple[slice, slice, int, float]
_ColBlock = tuple[slice, slice, float]


@functools.lru_cache(maxsize=128)
def _row_blocks(n: int) -> tuple[_RowBlock, ...]:
    k = (n - 1) // 2  # number of (cos, sin) pairs
    blocks: list[_RowBlock] = [(slice(0, 1), slice(0, 1), 0, 1.0)]
    if k > 0:
        blocks.append((slice(1, 2 * k, 2), slice(1, k + 1), 0, R2))
        blocks.append((slice(2, 2 * k + 1, 2), slice(1, k + 1), 1, R2))
    if n % 2 == 0:
        blocks.append((slice(n - 1, n), slice(n // 2, n // 2 + 1), 0, 1.0))
    return tuple(blocks)


@functools.lru_cache(maxsize=128)
def _col_blocks(n: int) -> tuple[_ColBlock, ...]:
    k = (n - 1) // 2
    blocks: list[_ColBlock] = [(slice(0, 1), slice(0, 1), 1.0)]
    if k > 0:
        blocks.append((slice(1, 2 * k + 1), slice(2, 2 * k + 2), R2))
    if n % 2 == 0:
        blocks.append((slice(n - 1, n), slice(n, n + 1), 1.0))
    return tuple(blocks)


def _zero_imag_cols(n: int) -> list[int]:
    """Buffer columns that hold Im X_0 (and Im X_{n/2} for even n): zero for real signals."""
    return [1, n + 1] if n % 2 == 0 else [1]


def _scaled_copy(dst: Tensor, src: Tensor, scale: float) -> None:
    """dst <- scale * src in one pass (dst is a strided view; no autograd here)."""
    if scale == 1.0:
        dst.copy_(src)
    else:
        torch.mul(src, scale, out=dst)


def _fwd_last(x: Tensor) -> Tensor:
    """F_R along the last dim. [..., n] -> [..., n]."""
    n = x.shape[-1]
    buf = torch.view_as_real(torch.fft.rfft(x, dim=-1, norm="ortho")).flatten(-2)
    out = x.new_empty(x.shape)
    for dst, src, scale in _col_blocks(n):
        _scaled_copy(out[..., dst], buf[..., src], scale)
    return out


def _inv_last(c: Tensor) -> Tensor:
    """F_R^{-1} along the last dim. [..., n] -> [..., n]."""
    n = c.shape[-1]
    buf = c.new_empty((*c.shape[:-1], 2 * (n // 2 + 1)))
    buf[..., _zero_imag_cols(n)] = 0.0
    for dst, src, scale in _col_blocks(n):
        _scaled_copy(buf[..., src], c[..., dst], 1.0 / scale)
    spec = torch.view_as_complex(buf.unflatten(-1, (n // 2 + 1, 2)))
    return torch.fft.irfft(spec, n=n, dim=-1, norm="ortho")


def _fwd_2d(x: Tensor) -> Tensor:
    """2-D F_R on the last two dims. [..., H, W] -> [..., H, W].

    rfft along W, keep the whole interleaved buffer (real, [..., H, 2 (W//2 + 1)]), rfft along H,
    then one scaled strided copy per (row block, column block) into the output.
    """
    h, w = x.shape[-2:]
    cols = torch.view_as_real(torch.fft.rfft(x, dim=-1, norm="ortho")).flatten(-2)
    spec = torch.view_as_real(torch.fft.rfft(cols, dim=-2, norm="ortho"))  # [..., H2, 2 W2, 2]
    out = x.new_empty(x.shape)
    for rdst, rsrc, part, rscale in _row_blocks(h):
        for cdst, csrc, cscale in _col_blocks(w):
            _scaled_copy(out[..., rdst, cdst], spec[..., rsrc, csrc, part], rscale * cscale)
    return out


def _inv_2d(c: Tensor) -> Tensor:
    """Inverse of :func:`_fwd_2d`. [..., H, W] -> [..., H, W]."""
    h, w = c.shape[-2:]
    spec = c.new_empty((*c.shape[:-2], h // 2 + 1, 2 * (w // 2 + 1), 2))
    spec[..., _zero_imag_cols(w), :] = 0.0
    spec[..., [0, h // 2] if h % 2 == 0 else [0], :, 1] = 0.0  # Im of the DC (Nyquist) row
    for rdst, rsrc, part, rscale in _row_blocks(h):
        for cdst, csrc, cscale in _col_blocks(w):
            _scaled_copy(spec[..., rsrc, csrc, part], c[..., rdst, cdst], 1.0 / (rscale * cscale))
    cols = torch.fft.irfft(torch.view_as_complex(spec), n=h, dim=-2, norm="ortho")
    cols = torch.view_as_complex(cols.contiguous().unflatten(-1, (w // 2 + 1, 2)))
    return torch.fft.irfft(cols, n=w, dim=-1, norm="ortho")


class _RealFourier(torch.autograd.Function):
    """F_R along one dim; its adjoint (backward) is F_R^T = F_R^{-1} since F_R is orthogonal."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, dim: int) -> Tensor:
        ctx.dim = dim
        return _fwd_last(x.movedim(dim, -1)).movedim(-1, dim)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        return inverse_real_fourier(grad, ctx.dim), None


class _InverseRealFourier(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, c: Tensor, dim: int) -> Tensor:
        ctx.dim = dim
        return _inv_last(c.movedim(dim, -1)).movedim(-1, dim)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        return real_fourier(grad, ctx.dim), None


class _RealFourier2(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        return _fwd_2d(x)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        return inverse_real_fourier2(grad)


class _InverseRealFourier2(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, c: Tensor) -> Tensor:
        return _inv_2d(c)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        return real_fourier2(grad)


def _check(x: Tensor, name: str, ndim: int) -> None:
    if not x.is_floating_point():
        raise TypeError(f"{name}: expected a real floating tensor, got {x.dtype}")
    if x.ndim < ndim:
        raise ValueError(f"{name}: expected at least {ndim} dims, got shape {tuple(x.shape)}")


def real_fourier(x: Tensor, dim: int = -1) -> Tensor:
    """F_R along ``dim``: real coefficients in the seed's order, orthonormal scaling.

    Args:
        x: real tensor ``[..., n, ...]`` (float32 or float64), transform along ``dim``.
    Returns:
        Tensor of the same shape and dtype; along ``dim`` entry 0 is X_0/sqrt(n), entries
        2k-1, 2k are sqrt(2/n) (Re X_k, Im X_k), and for even n the last is Re X_{n/2}/sqrt(n).
    """
    _check(x, "real_fourier", 1)
    return _RealFourier.apply(x, dim % x.ndim)


def inverse_real_fourier(x: Tensor, dim: int = -1) -> Tensor:
    """F_R^{-1} = F_R^T along ``dim``: coefficients in the seed's order back to values.

    Args:
        x: real tensor ``[..., n, ...]`` of F_R coefficients along ``dim``.
    Returns:
        Tensor of the same shape and dtype; ``real_fourier(inverse_real_fourier(x)) == x``.
    """
    _check(x, "inverse_real_fourier", 1)
    return _InverseRealFourier.apply(x, dim % x.ndim)


def real_fourier2(x: Tensor) -> Tensor:
    """Separable 2-D F_R on the last two dims: ``F_R,H @ X @ F_R,W^T`` (orthogonal on R^{HxW}).

    Args:
        x: real tensor ``[..., H, W]``.
    Returns:
        ``[..., H, W]``; coefficient (i, j) has wavenumbers
        ``(wavenumbers(H)[i], wavenumbers(W)[j])``.
    """
    _check(x, "real_fourier2", 2)
    return _RealFourier2.apply(x)


def inverse_real_fourier2(x: Tensor) -> Tensor:
    """Inverse (= transpose) of :func:`real_fourier2`: ``F_R,H^T @ C @ F_R,W``. ``[..., H, W]``."""
    _check(x, "inverse_real_fourier2", 2)
    return _InverseRealFourier2.apply(x)


def wavenumbers(n: int) -> Tensor:
    """Integer wavenumber k of each F_R coefficient of a length-n signal.

    Returns:
        LongTensor ``[n]``: ``[0, 1, 1, 2, 2, ...]`` (for even n the last entry is n/2 alone).
    """
    if n < 1:
        raise ValueError(f"wavenumbers: n must be >= 1, got {n}")
    return torch.div(torch.arange(n) + 1, 2, rounding_mode="floor")


def radial_frequency(h: int, w: int) -> Tensor:
    """Radial frequency nu = sqrt((k_y/H)^2 + (k_x/W)^2) of each 2-D F_R coefficient.

    Returns:
        float64 ``[h, w]`` in cycles per grid spacing, 0 <= nu <= sqrt(0.5).
    """
    ky = wavenumbers(h).to(torch.float64) / h
    kx = wavenumbers(w).to(torch.float64) / w
    return torch.sqrt(ky[:, None] ** 2 + kx[None, :] ** 2)


def radial_power_spectrum(x: Tensor) -> tuple[Tensor, Tensor]:
    """Radially averaged power spectral density of fields ``[..., H, W]``.

    Binning: with N = min(H, W), coefficient (i, j) falls in bin b = round(nu * N) (nu from
    :func:`radial_frequency`), i.e. bins of width 1/N cycles per grid spacing; bins
    b = 0..N//2 are kept (the corners beyond the shorter axis' Nyquist frequency are dropped).

    Normalisation: the power of a bin is the *mean* of the squared F_R coefficients in it. As F_R
    is orthonormal, white noise of variance s^2 has power s^2 in every bin, and the squared
    coefficients of all bins sum to ||x||^2 (Parseval). Equivalently it is the mean of
    |DFT(x)|^2 / (H W) over the DFT bins of that annulus.

    Args:
        x: real ``[..., H, W]``.
    Returns:
        ``(frequencies, power)``: frequencies float64 ``[N//2 + 1]`` = b / N (cycles per grid
        spacing); power ``[..., N//2 + 1]`` in x's dtype.
    """
    _check(x, "radial_power_spectrum", 2)
    h, w = x.shape[-2:]
    n = min(h, w)
    bins = torch.round(radial_frequency(h, w) * n).long().flatten()
    nbins = n // 2 + 1
    keep = (bins < nbins).nonzero().squeeze(-1)
    bins = bins[keep]
    counts = torch.bincount(bins, minlength=nbins).to(x.dtype)
    power = real_fourier2(x).flatten(-2).square()
    keep, bins = keep.to(x.device), bins.to(x.device)
    sums = power.new_zeros((*power.shape[:-1], nbins))
    sums = sums.index_add(-1, bins, power.index_select(-1, keep))
    freqs = torch.arange(nbins, dtype=torch.float64) / n
    return freqs, sums / counts.to(x.device)
