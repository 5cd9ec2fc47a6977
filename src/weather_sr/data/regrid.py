"""Predictors on their own grid -> the HR grid (xarray ``.interp``, i.e. scipy), and time matching.

Methods (``REGRID_METHODS``): ``bilinear`` (scipy "linear"), ``bicubic`` (scipy "cubic": the
tensor-product not-a-knot cubic spline, computed exactly axis by axis, i.e. scipy's
RegularGridInterpolator "cubic_legacy"; its "cubic" agrees to its solver tolerance) and
``nearest``. There is no ``conservative``: xESMF needs ESMF's esmpy, which has no PyPI wheel
(conda only); pyresample's resamplers (nearest, bilinear, gaussian, bucket) are not
area-conservative onto a finer grid.

Geometry:

- Input axes may be stored in either order (they are sorted increasing); targets in any order.
- Periodic (global) input: longitudes are taken modulo 360 and ``PAD`` columns are copied
  cyclically to each side, so targets across the seam and in either convention (-180..180 or
  0..360) interpolate across it.
- Non-periodic input: targets must lie inside the input grid's extent, its outer cell edges
  (outer centres ± half a cell), else UserError. Between an outer centre and its cell edge the
  edge value is used (coordinates clamped), as ``pairs.upsample`` replicates edge cells. On a
  longitude axis a target outside the extent is tried shifted by ±360 (the other convention).
- NaN: the interpolation runs on a copy with NaN replaced by the field's mean, then a target is
  NaN where a missing value lies in the method's stencil with nonzero weight (bilinear 2x2,
  bicubic 4x4, nearest the one value). Missing values thus spread no farther than the stencil
  (bicubic's global spline feels the fill value only slightly beyond it).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import xarray as xr
from scipy import ndimage

from weather_sr.errors import UserError

REGRID_METHODS = ("bilinear", "bicubic", "nearest")
_SCIPY_METHOD = {"bilinear": "linear", "bicubic": "cubic", "nearest": "nearest"}
PAD = 8  # periodic columns each side: a cubic spline's coupling decays by ~0.27 per node
BATCH = 64  # fields interpolated at once: bounds the float64 working memory of a chunk
_LON_NAMES = ("lon", "longitude", "nav_lon", "grid_longitude")


def check_regrid_method(method: str, where: str) -> str:
    """``method`` if it is one of ``REGRID_METHODS``, else UserError naming ``where``."""
    if method not in REGRID_METHODS:
        raise UserError(
            f"{where}: regrid method {method!r} is not available: choose one of "
            f"{', '.join(REGRID_METHODS)}"
        )
    return method


def _is_longitude(values: xr.DataArray) -> bool:
    """True when the x coordinate is a longitude in degrees (so ±360 names the same place)."""
    attrs = values["x"].attrs
    units = str(attrs.get("units", "")).lower()
    if "degree" in units and "north" not in units:
        return True
    if str(attrs.get("standard_name", "")).lower() == "longitude":
        return True
    return str(values.attrs.get("lon_name", "")).lower() in _LON_NAMES


def _extent(c: np.ndarray) -> tuple[float, float]:
    """Cell-edge extent of increasing centres ``c`` [n >= 2]."""
    return float(c[0] - 0.5 * (c[1] - c[0])), float(c[-1] + 0.5 * (c[-1] - c[-2]))


def _outside(t: np.ndarray, c: np.ndarray) -> np.ndarray:
    lo, hi = _extent(c)
    eps = 1e-6 * (hi - lo)  # rounding of coordinates written as float32
    return (t < lo - eps) | (t > hi + eps)


def _wrap_longitudes(t: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Targets outside ``c``'s extent moved by ±360 where that brings them inside."""
    for shift in (-360.0, 360.0):
        moved = t + shift
        t = np.where(_outside(t, c) & ~_outside(moved, c), moved, t)
    return t


def _fmt(a: np.ndarray | tuple[float, float]) -> str:
    return f"{float(np.min(a)):.6g}..{float(np.max(a)):.6g}"


def _sorted_axis(c: np.ndarray, name: str, n_min: int, where: str) -> np.ndarray:
    """Indices that sort ``c`` increasing; UserError when too short or with repeats."""
    if c.size < n_min:
        raise UserError(
            f"{where}: the input grid has {c.size} point(s) along {name}; this regrid method "
            f"needs at least {n_min}: use a larger input domain or regrid: nearest/bilinear"
        )
    order = np.argsort(c, kind="stable")
    if not np.all(np.diff(c[order]) > 0):
        raise UserError(f"{where}: input coordinate {name} has repeated values: fix the grid")
    return order


def regrid_to(
    values: xr.DataArray,
    target_y: np.ndarray,
    target_x: np.ndarray,
    method: str,
    periodic: bool,
    where: str,
) -> xr.DataArray:
    """Regrid ``values`` [sample, channel, y_in, x_in] onto ``target_y`` [H] x ``target_x`` [W].

    ``values`` needs 1-D coords ``y`` and ``x`` (latitude/longitude in degrees, or projected
    y/x in the same units as the targets); ``periodic`` says its x axis is global in longitude.
    Returns [sample, channel, H, W] with coords y=target_y, x=target_x (as given), the sample and
    channel coords of ``values`` and its attrs except the input grid's (periodic, lat_name,
    lon_name). Lazy when ``values`` is dask-backed: each chunk of samples is regridded on its
    own (y and x are made single chunks). Float dtypes are kept (computed in float64).
    UserError (naming ``where``) for an unknown method or targets outside a non-periodic grid.
    """
    method = check_regrid_method(method, where)
    if values.dims != ("sample", "channel", "y", "x"):
        raise ValueError(f"expected dims (sample, channel, y, x), got {values.dims}")
    for d in ("y", "x"):
        if d not in values.coords or values[d].ndim != 1:
            raise UserError(
                f"{where}: the input has no 1-D {d} coordinate: regridding needs a regular grid "
                "with 1-D latitude/longitude (or projected y/x) coordinates"
            )
    ty = np.asarray(target_y, np.float64)
    tx = np.asarray(target_x, np.float64)
    if ty.ndim != 1 or tx.ndim != 1:
        raise ValueError(f"expected 1-D target coordinates, got {ty.shape} and {tx.shape}")
    n_min = 4 if method == "bicubic" else 2
    y = np.asarray(values["y"].values, np.float64)
    x = np.asarray(values["x"].values, np.float64)
    if periodic:
        x = np.mod(x, 360.0)
    yorder = _sorted_axis(y, "y", n_min, where)
    xorder = _sorted_axis(x, "x", 1 if periodic else n_min, where)
    ys, xs = y[yorder], x[xorder]
    if periodic:  # copy PAD columns cyclically each side, shifted by ∓360
        k = np.arange(-PAD, x.size + PAD)
        xidx, xs = xorder[k % x.size], xs[k % x.size] + 360.0 * (k // x.size)
        tx_in = np.mod(tx, 360.0)
        bad = _outside(ty, ys)
    else:
        xidx = xorder
        tx_in = _wrap_longitudes(tx, xs) if _is_longitude(values) else tx
        bad = _outside(ty, ys).any() | _outside(tx_in, xs).any()
    if np.any(bad):
        xe = "global" if periodic else _fmt(_extent(xs))
        raise UserError(
            f"{where}: the target grid (y {_fmt(ty)}, x {_fmt(tx)}) extends beyond the input "
            f"grid (y {_fmt(_extent(ys))}, x {xe}, cell edges): use inputs covering the target "
            "domain"
        )
    ty_in = np.clip(ty, ys[0], ys[-1])
    if not periodic:
        tx_in = np.clip(tx_in, xs[0], xs[-1])
    src = values.isel(y=yorder, x=xidx).variable  # bare data: the block function gets coords
    if src.chunks is not None:
        src = src.chunk({"y": -1, "x": -1})
    dtype = values.dtype if np.issubdtype(values.dtype, np.floating) else np.dtype(np.float64)
    out = xr.apply_ufunc(
        _regrid_block,
        xr.DataArray(src),
        input_core_dims=[["y", "x"]],
        output_core_dims=[["y_out", "x_out"]],
        kwargs={"grid": (ys, xs), "targets": (ty_in, tx_in), "method": method, "dtype": dtype},
        dask="parallelized",
        output_dtypes=[dtype],
        dask_gufunc_kwargs={"output_sizes": {"y_out": ty.size, "x_out": tx.size}},
    ).rename(y_out="y", x_out="x")
    coords = {k: c for k, c in values.coords.items() if set(c.dims) <= {"sample", "channel"}}
    out = out.assign_coords(coords).assign_coords(y=target_y, x=target_x)
    drop = ("periodic", "lat_name", "lon_name")
    out.attrs = {k: v for k, v in values.attrs.items() if k not in drop}
    return out


def _regrid_block(
    block: np.ndarray,
    grid: tuple[np.ndarray, np.ndarray],
    targets: tuple[np.ndarray, np.ndarray],
    method: str,
    dtype: np.dtype,
) -> np.ndarray:
    """[..., h, w] on sorted ``grid`` -> [..., H, W] at ``targets`` (inside the grid)."""
    lead = block.shape[:-2]
    a = np.asarray(block, np.float64).reshape(-1, *block.shape[-2:])
    out = np.empty((a.shape[0], targets[0].size, targets[1].size), np.float64)
    for s in range(0, a.shape[0], BATCH):
        out[s : s + BATCH] = _interp_fields(a[s : s + BATCH], grid, targets, method)
    return out.reshape(*lead, *out.shape[1:]).astype(dtype, copy=False)


def _interp_fields(
    a: np.ndarray,
    grid: tuple[np.ndarray, np.ndarray],
    targets: tuple[np.ndarray, np.ndarray],
    method: str,
) -> np.ndarray:
    """[F, h, w] -> [F, H, W] by xarray's interp; NaN handled as the module docstring says."""

    def interp(arr: np.ndarray, scipy_method: str) -> np.ndarray:
        da = xr.DataArray(arr, dims=("f", "y", "x"), coords={"y": grid[0], "x": grid[1]})
        if scipy_method != "cubic":
            return da.interp(y=targets[0], x=targets[1], method=scipy_method).values
        # One axis after the other: the exact tensor-product spline (a banded solve per line).
        # A 2-D interp goes to scipy's RegularGridInterpolator "cubic", whose iterative solver
        # leaves errors of ~1e-5 of the field's scale (its "cubic_legacy" is this exact one).
        da = da.interp(y=targets[0], method="cubic", assume_sorted=True)
        return da.interp(x=targets[1], method="cubic", assume_sorted=True).values

    missing = np.isnan(a)
    if not missing.any():
        return interp(a, _SCIPY_METHOD[method])
    count = (~missing).sum(axis=(1, 2))
    mean = np.where(missing, 0.0, a).sum(axis=(1, 2)) / np.maximum(count, 1)
    out = interp(np.where(missing, mean[:, None, None], a), _SCIPY_METHOD[method])
    mask = missing.astype(np.float64)
    if method == "bicubic":  # a 4x4 stencil = the bilinear 2x2 of the mask grown by one cell
        mask = ndimage.maximum_filter(mask, size=(1, 3, 3), mode="nearest")
    hit = interp(mask, "nearest" if method == "nearest" else "linear") > 1e-9
    out[hit] = np.nan
    return out


def _time_keys(times: np.ndarray) -> list[object]:
    """Hashable, unit-independent keys: datetime64 of any unit -> int ns; others as they are."""
    t = np.asarray(times)
    if t.dtype.kind == "M":
        return t.astype("datetime64[ns]").astype(np.int64).tolist()
    return list(t.tolist()) if t.dtype.kind in "iuf" else list(t)


def _show(times: Sequence[object]) -> str:
    return ", ".join(
        np.datetime_as_string(t, unit="auto") if isinstance(t, np.datetime64) else str(t)
        for t in times
    )


def regrid_time_check(input_times: np.ndarray, target_times: np.ndarray, where: str) -> np.ndarray:
    """Index of the input row at each target time: int64 [len(target_times)], exact matches.

    ``input_times`` [N_in] must be unique (one predictor field per time; repeated times, e.g.
    ensemble members, are a UserError); ``target_times`` [N] may repeat (target members share
    their time's input row). datetime64 of any unit, cftime objects or plain numbers.
    UserError naming ``where`` that lists the first few target times missing from the input.
    """
    t_in, t_out = np.asarray(input_times), np.asarray(target_times)
    lookup: dict[object, int] = {}
    for i, k in enumerate(_time_keys(t_in)):
        if k in lookup:
            raise UserError(
                f"{where}: the input has time {_show([t_in[i]])} more than once (ensemble "
                "members?): give one predictor field per time"
            )
        lookup[k] = i
    found = [lookup.get(k, -1) for k in _time_keys(t_out)]
    missing: dict[object, object] = {}  # unique missing times, in order
    for i, (k, f) in enumerate(zip(_time_keys(t_out), found, strict=True)):
        if f < 0:
            missing.setdefault(k, t_out[i])
    if missing:
        shown = list(missing.values())
        more = f" and {len(shown) - 5} more" if len(shown) > 5 else ""
        raise UserError(
            f"{where}: {len(shown)} target time(s) missing from the input: "
            f"{_show(shown[:5])}{more}: give inputs at every target time or restrict the "
            "targets' period"
        )
    return np.asarray(found, dtype=np.int64)
