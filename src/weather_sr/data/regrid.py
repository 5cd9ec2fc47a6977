"""Predictors on their own grid -> the HR grid, and time matching.

Methods (``REGRID_METHODS``): ``bilinear`` and ``nearest`` (scipy's RegularGridInterpolator
"linear" and "nearest", as a sparse weight matrix computed once:
:mod:`weather_sr.data.regrid_weights`), and ``bicubic`` (scipy "cubic" through xarray: the
tensor-product not-a-knot cubic spline, computed exactly axis by axis, i.e. scipy's
RegularGridInterpolator "cubic_legacy"; its "cubic" agrees to its solver tolerance). The
targets are 1-D axes of the inputs' coordinates, or (bilinear, nearest) any points in them:
the 2-D latitude/longitude of a projected, rotated-pole or curvilinear HR grid fed from
latitude/longitude predictors. There is no ``conservative``: xESMF needs ESMF's esmpy, which has
no PyPI wheel (conda only); pyresample's resamplers (nearest, bilinear, gaussian, bucket) are
not area-conservative onto a finer grid.

Geometry:

- Input axes may be stored in either order (they are sorted increasing); targets in any order.
- Periodic (global) input: longitudes are taken modulo 360 and the seam is one more interval
  (bicubic: ``PAD`` columns are copied cyclically to each side), so targets across the seam
  and in either convention (-180..180 or 0..360) interpolate across it.
- Non-periodic input: targets must lie inside the input grid's extent, its outer cell edges
  (outer centres ± half a cell), else UserError. Between an outer centre and its cell edge the
  edge value is used (coordinates clamped), as ``pairs.upsample`` replicates edge cells. On a
  longitude axis a target outside the extent is tried shifted by ±360 (the other convention).
- NaN: a target is NaN where a missing value lies in the method's stencil with nonzero weight
  (bilinear 2x2, bicubic 4x4, nearest the one value). Missing values thus spread no farther
  than the stencil (bicubic runs on a copy with NaN replaced by the field's mean: its global
  spline feels the fill value only slightly beyond it).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import xarray as xr
from scipy import ndimage

from weather_sr.data.grid import Grid, span_text
from weather_sr.data.regrid_weights import WEIGHT_METHODS, RegridWeights, point_weights
from weather_sr.errors import UserError

REGRID_METHODS = ("bilinear", "bicubic", "nearest")
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


def check_regrid(regrid: Any, where: str, variables: Sequence[str] | None = None
                 ) -> str | dict[str, str]:
    """``data.inputs.regrid``: one method for every predictor, or ``{variable: method}`` for
    some of them (the others bilinear); UserError naming ``where`` for an unknown method or a
    variable that is not one of ``variables`` (when given)."""
    if not isinstance(regrid, Mapping):
        return check_regrid_method(str(regrid), where)
    out = {str(k): check_regrid_method(str(v), f"{where}.{k}") for k, v in regrid.items()}
    unknown = [k for k in out if variables is not None and k not in variables]
    if unknown:
        raise UserError(f"{where}: {', '.join(unknown)} is not among the predictors "
                        f"{list(variables or [])}: name predictor variables")
    return out


def channel_methods(regrid: str | Mapping[str, str], channels: Sequence[str]) -> list[str]:
    """The method of each predictor channel: a variable's (its channels are the variable or
    ``variable_level``), else bilinear; ``regrid`` a name: that one for all."""
    if not isinstance(regrid, Mapping):
        return [str(regrid)] * len(channels)

    def variable(channel: str) -> str | None:
        names = [v for v in regrid if channel == v or channel.startswith(f"{v}_")]
        return max(names, key=len) if names else None

    return [regrid.get(variable(c) or "", "bilinear") for c in channels]


def regrid_channels(values: xr.DataArray, target_y: np.ndarray, target_x: np.ndarray,
                    methods: Sequence[str], periodic: bool, where: str,
                    weights: Mapping[str, RegridWeights] | None = None) -> xr.DataArray:
    """:func:`regrid_to` with a method per channel of ``values`` (``methods``, one each): the
    channels of each method regridded together, back in their order; ``weights``: those of
    the methods already computed for these targets ({method: weights})."""
    weights = weights or {}
    groups = method_groups(methods)
    parts = [regrid_to(values.isel(channel=idx) if len(groups) > 1 else values, target_y,
                       target_x, m, periodic, where, weights=weights.get(m))
             for m, idx in groups]
    if len(parts) == 1:
        return parts[0]
    order = np.argsort(np.concatenate([idx for _, idx in groups]))
    return xr.concat(parts, dim="channel").isel(channel=order)


def method_groups(methods: Sequence[str]) -> list[tuple[str, np.ndarray]]:
    """(method, the channel indices using it), in the order methods first appear."""
    names = list(dict.fromkeys(methods))
    return [(m, np.flatnonzero(np.asarray(methods) == m)) for m in names]


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


def _geometry(
    values: xr.DataArray, target_y: np.ndarray, target_x: np.ndarray, method: str,
    periodic: bool, where: str,
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray], np.ndarray, np.ndarray]:
    """The input's sorted axes (centres, stored index of each; periodic: PAD columns copied to
    each side) and the targets moved inside them (the rules of the module docstring);
    UserError naming ``where`` for a short axis, repeated values or targets outside."""
    for d in ("y", "x"):
        if d not in values.coords or values[d].ndim != 1:
            raise UserError(
                f"{where}: the input has no 1-D {d} coordinate: regridding needs a regular grid "
                "with 1-D latitude/longitude (or projected y/x) coordinates"
            )
    ty = np.asarray(target_y, np.float64)
    tx = np.asarray(target_x, np.float64)
    n_min = 4 if method == "bicubic" else 2
    y = np.asarray(values["y"].values, np.float64)
    x = np.asarray(values["x"].values, np.float64)
    if periodic:
        x = np.mod(x, 360.0)
    yorder = _sorted_axis(y, "y", n_min, where)
    xorder = _sorted_axis(x, "x", 1 if periodic else n_min, where)
    ys, xs = y[yorder], x[xorder]
    if periodic:
        tx_in = np.mod(tx, 360.0)
        bad = _outside(ty, ys)
    else:
        tx_in = _wrap_longitudes(tx, xs) if _is_longitude(values) else tx
        bad = _outside(ty, ys).any() | _outside(tx_in, xs).any()
    if np.any(bad):
        xe = "global" if periodic else span_text(_extent(xs))
        raise UserError(
            f"{where}: the target grid (y {span_text(ty)}, x {span_text(tx)}) extends beyond "
            f"the input grid (y {span_text(_extent(ys))}, x {xe}, cell edges): use inputs "
            "covering the target domain"
        )
    ty_in = np.clip(ty, ys[0], ys[-1])
    if not periodic:
        tx_in = np.clip(tx_in, xs[0], xs[-1])
    return (ys, yorder), (xs, xorder), ty_in, tx_in


def target_points(grid: Grid, inputs: xr.DataArray, where: str
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Where the predictors ``inputs`` (sample, channel, y, x) are regridded to on the HR
    ``grid``: its 1-D axes when they are in the inputs' coordinates (both latitude/longitude,
    or the same projection); the latitude/longitude [H, W] of its points when latitude/longitude
    inputs feed a projected or rotated-pole grid (its 2-D coordinates, or its grid mapping's)."""
    from weather_sr.data.condition import grid_latlon
    from weather_sr.data.projection import is_geographic

    ya, xa = dict(inputs["y"].attrs), dict(inputs["x"].attrs)
    inputs_geo = is_geographic(ya, xa, str(inputs.attrs.get("lat_name", "y")))
    if not inputs_geo or is_geographic(grid.lat_attrs, grid.lon_attrs, grid.lat_name):
        return np.asarray(grid.lat), np.asarray(grid.lon)
    return grid_latlon(grid, fix="add 2-D latitude/longitude coordinates or a CF grid_mapping "
                       "to the targets' file")


def regrid_weights(
    values: xr.DataArray, target_y: np.ndarray, target_x: np.ndarray, method: str,
    periodic: bool, where: str,
) -> RegridWeights:
    """The bilinear or nearest weights from the grid of ``values`` (its 1-D ``y``, ``x``) to the
    target points ``target_y``, ``target_x`` (1-D axes [H], [W]: their outer product; or 2-D
    [H, W] each). UserError naming ``where`` as :func:`regrid_to`."""
    method = check_regrid_method(method, where)
    if method not in WEIGHT_METHODS:
        raise UserError(f"{where}: regrid {method} has no weights (a spline through the whole "
                        "field): use bilinear or nearest")
    ty, tx = np.asarray(target_y, np.float64), np.asarray(target_x, np.float64)
    if ty.ndim == 1 and tx.ndim == 1:
        ty, tx = np.meshgrid(ty, tx, indexing="ij")
    if ty.shape != tx.shape or ty.ndim != 2:
        raise ValueError(f"expected 1-D axes or 2-D points of one shape, got {ty.shape}, "
                         f"{tx.shape}")
    sy, sx, ty_in, tx_in = _geometry(values, ty, tx, method, periodic, where)
    shape = (values.sizes["y"], values.sizes["x"])
    return point_weights(sy, sx, ty_in, tx_in, method, periodic, shape)


def regrid_to(
    values: xr.DataArray,
    target_y: np.ndarray,
    target_x: np.ndarray,
    method: str,
    periodic: bool,
    where: str,
    weights: RegridWeights | None = None,
) -> xr.DataArray:
    """Regrid ``values`` [sample, channel, y_in, x_in] onto ``target_y`` x ``target_x``.

    ``values`` needs 1-D coords ``y`` and ``x`` (latitude/longitude in degrees, or projected
    y/x in the same units as the targets); ``periodic`` says its x axis is global in longitude.
    The targets: 1-D axes [H], [W] (the output's coords y=target_y, x=target_x, as given), or
    2-D points [H, W] each, e.g. the latitude/longitude of a projected grid (bilinear and
    nearest only; the output has no y/x coords). Returns [sample, channel, H, W] with the sample
    and channel coords of ``values`` and its attrs except the input grid's (periodic, lat_name,
    lon_name). Lazy when ``values`` is dask-backed: each chunk of samples is regridded on its
    own (y and x are made single chunks). Float dtypes are kept (computed in float64).
    UserError (naming ``where``) for an unknown method or targets outside a non-periodic grid.
    ``weights``: :func:`regrid_weights` of this method onto these targets, when already computed.
    """
    method = check_regrid_method(method, where)
    if values.dims != ("sample", "channel", "y", "x"):
        raise ValueError(f"expected dims (sample, channel, y, x), got {values.dims}")
    ty, tx = np.asarray(target_y), np.asarray(target_x)
    points = ty.ndim == 2
    if method == "bicubic":
        if points:
            raise UserError(f"{where}: regrid bicubic needs a target grid on the inputs' own "
                            "axes (latitude/longitude): use bilinear or nearest")
        sy, sx, ty_in, tx_in = _geometry(values, ty, tx, method, periodic, where)
        ys, xs, xidx = _padded(sy, sx, periodic)
        kwargs: dict[str, Any] = {"spline": (ys, xs), "targets": (ty_in, tx_in)}
        src = values.isel(y=sy[1], x=xidx).variable
    else:
        kwargs = {"weights": weights or regrid_weights(values, ty, tx, method, periodic, where)}
        src = values.variable  # the weights index the stored order
    if src.chunks is not None:
        src = src.chunk({"y": -1, "x": -1})
    dtype = values.dtype if np.issubdtype(values.dtype, np.floating) else np.dtype(np.float64)
    H, W = ty.shape if points else (ty.size, tx.size)
    out = xr.apply_ufunc(
        _regrid_block,
        xr.DataArray(src),  # bare data: the block function gets coords
        input_core_dims=[["y", "x"]],
        output_core_dims=[["y_out", "x_out"]],
        kwargs={**kwargs, "dtype": dtype},
        dask="parallelized",
        output_dtypes=[dtype],
        dask_gufunc_kwargs={"output_sizes": {"y_out": H, "x_out": W}},
    ).rename(y_out="y", x_out="x")
    coords = {k: c for k, c in values.coords.items() if set(c.dims) <= {"sample", "channel"}}
    out = out.assign_coords(coords)
    if not points:
        out = out.assign_coords(y=target_y, x=target_x)
    drop = ("periodic", "lat_name", "lon_name")
    out.attrs = {k: v for k, v in values.attrs.items() if k not in drop}
    return out


def _padded(sy: tuple[np.ndarray, np.ndarray], sx: tuple[np.ndarray, np.ndarray],
            periodic: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The spline's grid (sorted y, sorted x with PAD columns copied cyclically each side,
    shifted by ∓360, when periodic) and the stored x index of each of its columns."""
    (ys, _), (xs, xorder) = sy, sx
    if not periodic:
        return ys, xs, xorder
    k = np.arange(-PAD, xs.size + PAD)
    return ys, xs[k % xs.size] + 360.0 * (k // xs.size), xorder[k % xs.size]


def _regrid_block(
    block: np.ndarray,
    dtype: np.dtype,
    weights: RegridWeights | None = None,
    spline: tuple[np.ndarray, np.ndarray] | None = None,
    targets: tuple[np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
    """[..., h, w] -> [..., H, W] by ``weights``, or bicubic on the sorted ``spline`` grid at
    1-D ``targets`` (inside it)."""
    if weights is not None:
        return weights.apply(block).astype(dtype, copy=False)
    assert spline is not None and targets is not None
    lead = block.shape[:-2]
    a = np.asarray(block, np.float64).reshape(-1, *block.shape[-2:])
    out = np.empty((a.shape[0], targets[0].size, targets[1].size), np.float64)
    for s in range(0, a.shape[0], BATCH):
        out[s : s + BATCH] = _bicubic(a[s : s + BATCH], spline, targets)
    return out.reshape(*lead, *out.shape[1:]).astype(dtype, copy=False)


def _bicubic(
    a: np.ndarray, grid: tuple[np.ndarray, np.ndarray], targets: tuple[np.ndarray, np.ndarray]
) -> np.ndarray:
    """[F, h, w] -> [F, H, W] by xarray's cubic interp; NaN as the module docstring says."""

    def interp(arr: np.ndarray, method: str) -> np.ndarray:
        da = xr.DataArray(arr, dims=("f", "y", "x"), coords={"y": grid[0], "x": grid[1]})
        if method == "linear":
            return da.interp(y=targets[0], x=targets[1], method="linear").values
        # One axis after the other: the exact tensor-product spline (a banded solve per line).
        # A 2-D interp goes to scipy's RegularGridInterpolator "cubic", whose iterative solver
        # leaves errors of ~1e-5 of the field's scale (its "cubic_legacy" is this exact one).
        da = da.interp(y=targets[0], method="cubic", assume_sorted=True)
        return da.interp(x=targets[1], method="cubic", assume_sorted=True).values

    missing = np.isnan(a)
    if not missing.any():
        return interp(a, "cubic")
    count = (~missing).sum(axis=(1, 2))
    mean = np.where(missing, 0.0, a).sum(axis=(1, 2)) / np.maximum(count, 1)
    out = interp(np.where(missing, mean[:, None, None], a), "cubic")
    # a 4x4 stencil = the bilinear 2x2 of the mask grown by one cell
    mask = ndimage.maximum_filter(missing.astype(np.float64), size=(1, 3, 3), mode="nearest")
    out[interp(mask, "linear") > 1e-9] = np.nan
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
