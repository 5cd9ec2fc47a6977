"""LR/HR pairs: conservative NaN-aware coarsening, interpolation of LR onto the HR grid, grids.

Geometry. HR cell (i, j) belongs to LR block (i // s, j // s); an LR value is the (optionally
cos-latitude weighted) mean of the valid HR values of its s×s block, so on a uniform grid without
missing values the area mean is preserved exactly. The LR cell centre is the mean of its block's
HR centres. ``torch.nn.functional.interpolate(..., scale_factor=s, align_corners=False)`` maps
HR index i to LR coordinate (i + 0.5) / s - 0.5, i.e. exactly these block centres, so bicubic /
bilinear / nearest upsampling is consistent with the block geometry (the default is bicubic,
as in SR3). Borders replicate the edge cells (torch's clamping); on a global grid longitude wraps
round (periodic padding) so there is no seam.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from weather_sr.errors import UserError

INTERPOLATIONS = ("bicubic", "bilinear", "nearest")
MARGIN = 2  # LR cells of context each side: bicubic reads 2 neighbours, so windows are exact


def check_scale_factor(scale_factor: int) -> int:
    if not isinstance(scale_factor, int | np.integer) or int(scale_factor) < 1:
        raise UserError(f"data.scale_factor={scale_factor!r}: give a positive integer (2, 4, 8)")
    return int(scale_factor)


def check_interpolation(interpolation: str) -> str:
    if interpolation not in INTERPOLATIONS:
        raise UserError(
            f"data.interpolation={interpolation!r}: choose one of {', '.join(INTERPOLATIONS)}"
        )
    return interpolation


def coarsen(hr: torch.Tensor, scale_factor: int, lat: np.ndarray | None = None) -> torch.Tensor:
    """NaN-aware block mean: ``hr`` [..., H, W] -> [..., H/s, W/s] (H, W multiples of s).

    With ``lat`` ([H], degrees) each row is weighted by cos(latitude) (area weights on a regular
    lat/lon grid). A block with no valid value is NaN. Computed in float64, returned in hr's dtype.
    """
    s = check_scale_factor(scale_factor)
    *lead, H, W = hr.shape
    if H % s or W % s:
        raise UserError(f"coarsening: field size {H}x{W} is not divisible by scale_factor {s}")
    x = hr.to(torch.float64)
    valid = torch.isfinite(x)
    w = torch.ones(H, 1, dtype=torch.float64, device=x.device)
    if lat is not None:
        w = torch.as_tensor(np.cos(np.deg2rad(np.asarray(lat, np.float64))),
                            device=x.device)[:, None].clamp_min(0)
    w = w.expand(H, W) * valid
    num = torch.where(valid, x, 0.0) * w
    shape = (*lead, H // s, s, W // s, s)
    num = num.reshape(shape).sum(dim=(-3, -1))
    den = w.reshape(shape).sum(dim=(-3, -1))
    out = torch.where(den > 0, num / den.clamp_min(1e-300), torch.nan)
    return out.to(hr.dtype)


def upsample(
    lr: torch.Tensor, scale_factor: int, interpolation: str = "bicubic", periodic: bool = False
) -> torch.Tensor:
    """Interpolate ``lr`` [N, C, h, w] onto the HR grid [N, C, h*s, w*s] (no NaN allowed).

    ``periodic`` wraps longitude (last axis) round instead of replicating the edge columns.
    """
    s = check_scale_factor(scale_factor)
    mode = check_interpolation(interpolation)
    m = MARGIN
    x = F.pad(lr, (0, 0, m, m), mode="replicate")
    if periodic:  # wrap by index: also right when the field is narrower than the margin
        x = x[..., torch.arange(-m, lr.shape[-1] + m, device=lr.device) % lr.shape[-1]]
    else:
        x = F.pad(x, (m, m, 0, 0), mode="replicate")
    return _interp(x, s, mode)[..., m * s : -m * s, m * s : -m * s]


def _interp(x: torch.Tensor, s: int, mode: str) -> torch.Tensor:
    kw = {} if mode == "nearest" else {"align_corners": False}
    return F.interpolate(x, scale_factor=s, mode=mode, **kw)


def upsample_window(lr_padded: torch.Tensor, scale_factor: int, interpolation: str) -> torch.Tensor:
    """Upsample an LR window that already carries ``MARGIN`` cells of context on every side.

    [N, C, h + 2m, w + 2m] -> [N, C, h*s, w*s]; equals cropping ``upsample`` of the whole field.
    """
    s, m = scale_factor, MARGIN
    return _interp(lr_padded, s, check_interpolation(interpolation))[
        ..., m * s : -m * s, m * s : -m * s
    ]


def window_indices(start: int, stop: int, n: int, periodic: bool) -> np.ndarray:
    """LR indices start-MARGIN .. stop+MARGIN-1, wrapped (periodic) or clamped to [0, n-1]."""
    idx = np.arange(start - MARGIN, stop + MARGIN)
    return idx % n if periodic else np.clip(idx, 0, n - 1)


def block_centres(coord: np.ndarray, scale_factor: int) -> np.ndarray:
    """Centres of LR cells: the mean of each block of ``s`` HR centres ([n] -> [n / s])."""
    c = np.asarray(coord, dtype=np.float64)
    return c.reshape(-1, scale_factor).mean(axis=1)


def hr_coordinate(lr: np.ndarray, scale_factor: int) -> np.ndarray:
    """LR cell centres ``[n]`` -> HR sub-cell centres ``[n * s]`` (works for uneven spacing).

    Each LR cell spans from halfway to its left neighbour to halfway to its right one (the end
    cells mirror their inner half-width); it is split into ``s`` equal sub-cells. On a uniform
    axis this inverts :func:`block_centres`.
    """
    c = np.asarray(lr, dtype=np.float64)
    s = int(scale_factor)
    if c.size == 1:
        return np.repeat(c, s)
    mid = 0.5 * (c[1:] + c[:-1])
    edges = np.concatenate([[2 * c[0] - mid[0]], mid, [2 * c[-1] - mid[-1]]])
    frac = (np.arange(s) + 0.5) / s
    return (edges[:-1, None] + (edges[1:] - edges[:-1])[:, None] * frac[None, :]).reshape(-1)


def sub_centres(coord: np.ndarray, scale_factor: int, periodic: bool = False) -> np.ndarray:
    """HR centres inside the LR cells ([n] -> [n * s]), wrapped into [0, 360) on periodic axes."""
    c = np.asarray(coord, dtype=np.float64)
    if c.size < 2:
        raise UserError("LR grid: need at least 2 points along each axis to infer the HR grid")
    out = hr_coordinate(c, scale_factor)
    return np.mod(out, 360.0) if periodic and c.min() >= 0 else out


def crop_to_multiple(
    ny: int, nx: int, scale_factor: int, crop: bool, where: str
) -> tuple[int, int]:
    """HR size kept: the first floor(n / s) * s rows/columns (south-west corner kept)."""
    s = scale_factor
    hy, hx = ny - ny % s, nx - nx % s
    if (hy, hx) != (ny, nx) and not crop:
        raise UserError(
            f"{where}: HR size {ny}x{nx} is not divisible by scale_factor {s}: "
            "crop the domain or set crop=True"
        )
    if hy == 0 or hx == 0:
        raise UserError(f"{where}: HR size {ny}x{nx} is smaller than scale_factor {s}")
    return hy, hx


def check_lr_grid(
    hr_y: np.ndarray, hr_x: np.ndarray, lr_y: np.ndarray, lr_x: np.ndarray, s: int, where: str
) -> None:
    """UserError unless the LR centres are the HR block centres (within 1/4 HR cell)."""
    for name, hr, lr in (("latitude", hr_y, lr_y), ("longitude", hr_x, lr_x)):
        if lr.size * s != hr.size:
            raise UserError(
                f"{where}: LR {name} has {lr.size} points but HR has {hr.size} = "
                f"{hr.size // s} x scale_factor {s} (after cropping): use matching domains"
            )
        want = block_centres(hr, s)
        tol = 0.25 * float(np.abs(np.diff(np.asarray(hr, np.float64))).mean())
        diff = np.abs(np.asarray(lr, np.float64) - want)
        if name == "longitude":
            diff = np.minimum(diff, np.abs(360.0 - diff))
        if diff.max() > tol:
            raise UserError(
                f"{where}: LR {name} centres differ from the HR block centres by up to "
                f"{diff.max():.3g} (> {tol:.3g}): grids incompatible with scale_factor {s}"
            )
