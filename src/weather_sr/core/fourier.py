"""The real orthonormal Fourier operator F_R (docs/method.md §2), computed with FFTs.

For a real vector x of length n, F_R x lists the independent real numbers of its spectrum
X = DFT(x) (X_k = sum_m x_m e^{-2 pi i k m / n}) in the founding derivation's row order and
signs:

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
    "real_fourier",
    "real_fourier2",
    "wavenumbers",
]


R2 = math.sqrt(2.0)

# A column block (dst, src, scale): F_R entries ``dst`` (a slice of the last axis) are ``scale``
# times the entries ``src`` of the ``view_as_real(rfft(x)).flatten(-2)`` buffer
# ``[Re0, Im0, Re1, Im1, ...]`` (length 2 (n//2 + 1)); F_R's order is that buffer without Im0
# (and, for even n, without the Nyquist Im).
_ColBlock = tuple[slice, slice, float]


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
    """2-D F_R on the last two dims from one ``rfft2``. [..., H, W] -> [..., H, W].

    With B = rfft2(x) (rows k_y = 0..H-1, columns k_x = 0..W/2), U = B[k] and V = B[H - k],
    the F_R rows of the pair k are the column-interleaved complex rows U + V (cos_y row) and
    -i (U - V) (sin_y row); the DC (and Nyquist) row is sqrt(2) B[k]. Then the DC (and Nyquist)
    column is divided by sqrt(2). Every op reads and writes whole rows (no transposes), which
    is what keeps this within a small factor of ``rfft2`` itself.
    """
    h, w = x.shape[-2:]
    kh, n_odd, n_even = (h - 1) // 2, w // 2, (w - 1) // 2
    bf = torch.view_as_real(torch.fft.rfft2(x, norm="ortho")).flatten(-2)  # [..., H, 2 W2]
    out = x.new_empty(x.shape)
    for r_out, r_b in _edge_rows(h):
        torch.mul(bf[..., r_b, 0], R2, out=out[..., r_out, 0])
        torch.mul(bf[..., r_b, 2 : w + 1], R2, out=out[..., r_out, 1:])
    if kh > 0:
        u = bf[..., 1 : kh + 1, :]
        v = bf[..., h - kh :, :].flip(-2)
        rc, rs = out[..., 1 : 2 * kh : 2, :], out[..., 2 : 2 * kh + 1 : 2, :]
        torch.add(u[..., 0], v[..., 0], out=rc[..., 0])
        torch.add(u[..., 2 : w + 1], v[..., 2 : w + 1], out=rc[..., 1:])
        torch.sub(u[..., 1], v[..., 1], out=rs[..., 0])
        odd, even = slice(3, 3 + 2 * n_odd, 2), slice(2, 2 + 2 * n_even, 2)
        torch.sub(u[..., odd], v[..., odd], out=rs[..., 1::2])  # Re(-i D) = Im D
        torch.sub(v[..., even], u[..., even], out=rs[..., 2::2])  # Im(-i D) = -Re D
    out[..., 0].mul_(1.0 / R2)
    if w % 2 == 0:
        out[..., w - 1].mul_(1.0 / R2)
    return out


def _inv_2d(c: Tensor) -> Tensor:
    """Inverse of :func:`_fwd_2d` through one ``irfft2``. [..., H, W] -> [..., H, W].

    Builds B' = 2 B row by row (U' = P + i S, V' = P - i S from the cos_y row P and the sin_y
    row S of each pair; sqrt(2) times the DC/Nyquist rows), then x = irfft2(B') / 2.
    """
    h, w = c.shape[-2:]
    kh, kw = (h - 1) // 2, (w - 1) // 2
    bf = c.new_empty((*c.shape[:-2], h, 2 * (w // 2 + 1)))
    for r_out, r_b in _edge_rows(h):
        torch.mul(c[..., r_out, 0], 2.0, out=bf[..., r_b, 0])
        torch.mul(c[..., r_out, 1:], R2, out=bf[..., r_b, 2 : w + 1])
        bf[..., r_b, 1] = 0.0
        if w % 2 == 0:
            bf[..., r_b, w] *= R2  # Nyquist column: 2 c, not sqrt(2) c
            bf[..., r_b, w + 1] = 0.0
    if kh > 0:
        cc, cs = c[..., 1 : 2 * kh : 2, :], c[..., 2 : 2 * kh + 1 : 2, :]
        u = bf[..., 1 : kh + 1, :]
        v = torch.empty_like(u)
        re_c, im_c = cc[..., 1 : 2 * kw : 2], cc[..., 2 : 2 * kw + 1 : 2]
        re_s, im_s = cs[..., 1 : 2 * kw : 2], cs[..., 2 : 2 * kw + 1 : 2]
        re, im = slice(2, 2 + 2 * kw, 2), slice(3, 3 + 2 * kw, 2)
        torch.sub(re_c, im_s, out=u[..., re])
        torch.add(im_c, re_s, out=u[..., im])
        torch.add(re_c, im_s, out=v[..., re])
        torch.sub(im_c, re_s, out=v[..., im])
        cols = [0] if w % 2 else [0, w - 1]
        for col, slot in zip(cols, [0, w][: len(cols)], strict=True):
            torch.mul(cc[..., col], R2, out=u[..., slot])
            torch.mul(cs[..., col], R2, out=u[..., slot + 1])
            torch.mul(cc[..., col], R2, out=v[..., slot])
            torch.mul(cs[..., col], -R2, out=v[..., slot + 1])
        bf[..., h - kh :, :] = v.flip(-2)
    spec = torch.view_as_complex(bf.unflatten(-1, (w // 2 + 1, 2)))
    return torch.fft.irfft2(spec, s=(h, w), norm="ortho").mul_(0.5)


def _edge_rows(h: int) -> list[tuple[int, int]]:
    """(F_R row, rfft2 row) of the rows without a sin partner: DC, and Nyquist for even H."""
    return [(0, 0), (h - 1, h // 2)] if h % 2 == 0 else [(0, 0)]


class _RealFourier(torch.autograd.Function):
    """F_R along one dim; its adjoint (backward) is F_R^T = F_R^{-1} since F_R is orthogonal."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, dim: int) -> Tensor:
        ctx.dim = dim
        if x.numel() == 0:  # MKL rejects empty transforms
            return x.new_empty(x.shape)
        return _fwd_last(x.movedim(dim, -1)).movedim(-1, dim)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        return inverse_real_fourier(grad, ctx.dim), None


class _InverseRealFourier(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, c: Tensor, dim: int) -> Tensor:
        ctx.dim = dim
        if c.numel() == 0:
            return c.new_empty(c.shape)
        return _inv_last(c.movedim(dim, -1)).movedim(-1, dim)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        return real_fourier(grad, ctx.dim), None


class _RealFourier2(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        return _fwd_2d(x) if x.numel() else x.new_empty(x.shape)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        return inverse_real_fourier2(grad)


class _InverseRealFourier2(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, c: Tensor) -> Tensor:
        return _inv_2d(c) if c.numel() else c.new_empty(c.shape)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        return real_fourier2(grad)


def _check(x: Tensor, name: str, ndim: int) -> None:
    if not x.is_floating_point():
        raise TypeError(f"{name}: expected a real floating tensor, got {x.dtype}")
    if x.ndim < ndim:
        raise ValueError(f"{name}: expected at least {ndim} dims, got shape {tuple(x.shape)}")


def real_fourier(x: Tensor, dim: int = -1) -> Tensor:
    """F_R along ``dim``: coefficients in the founding derivation's order, orthonormal.

    Args:
        x: real tensor ``[..., n, ...]`` (float32 or float64), transform along ``dim``.
    Returns:
        Tensor of the same shape and dtype; along ``dim`` entry 0 is X_0/sqrt(n), entries
        2k-1, 2k are sqrt(2/n) (Re X_k, Im X_k), and for even n the last is Re X_{n/2}/sqrt(n).
    """
    _check(x, "real_fourier", 1)
    return _RealFourier.apply(x, dim % x.ndim)


def inverse_real_fourier(x: Tensor, dim: int = -1) -> Tensor:
    """F_R^{-1} = F_R^T along ``dim``: coefficients (founding derivation's order) to values.

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
