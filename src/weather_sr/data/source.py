"""Where the HR (and paired LR) values come from: arrays in memory, or files reopened per process.

A ``FieldSource`` answers two questions for one sample: the HR values of a window, and the LR
values of an LR window (given as index arrays, already wrapped or clamped). With ``load=False``
only the path and options are kept; each process (DataLoader worker) opens the files itself on
first use, so nothing unpicklable crosses a fork or spawn, and only the window is read.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import xarray as xr

from weather_sr.data.files import PathSpec
from weather_sr.data.pairs import coarsen
from weather_sr.data.reading import open_fields
from weather_sr.data.regrid_weights import RegridWeights, apply_box


@dataclass
class LazyFields:
    """Reopens ``open_fields(path, variables)`` in each process, cropped to ``ny`` x ``nx``;
    channels named like a target (``target_units``: its units by name) in the target's units
    (:func:`weather_sr.data.units.to_target_units`, as when the inputs were first read)."""

    path: PathSpec
    variables: Sequence[str]
    ny: int
    nx: int
    target_units: Mapping[str, str] | None = None
    _cache: tuple[int, xr.DataArray] | None = field(default=None, repr=False)

    def get(self) -> xr.DataArray:
        pid = os.getpid()
        if self._cache is None or self._cache[0] != pid:
            da = open_fields(self.path, self.variables).isel(
                y=slice(0, self.ny), x=slice(0, self.nx)
            )
            if self.target_units:
                from weather_sr.data.units import to_target_units

                da = to_target_units(da, self.target_units, f"data file {da.attrs['source'][0]}")
            self._cache = (pid, da)
        return self._cache[1]

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_cache"] = None  # open file handles never travel to workers
        return state


def _read(values: np.ndarray | LazyFields, i: int, ys: slice, xs: slice) -> np.ndarray:
    if isinstance(values, np.ndarray):
        return values[i, :, ys, xs]
    # one small window: the synchronous scheduler avoids dask thread pools, which do not
    # survive the fork of DataLoader workers
    window = values.get().isel(sample=i, y=ys, x=xs).data
    return np.asarray(window.compute(scheduler="synchronous"))


def _span(idx: np.ndarray) -> slice:
    return slice(int(idx.min()), int(idx.max()) + 1)


@dataclass
class FieldSource:
    """HR values [N, C, H, W] (physical units, cropped) and either paired LR values
    [N, C, H/s, W/s] or coarsening of HR on the fly. ``lr_samples`` maps HR to LR sample rows."""

    hr: np.ndarray | LazyFields
    scale_factor: int
    shape: tuple[int, int]
    lr: np.ndarray | LazyFields | None = None
    lr_samples: np.ndarray | None = None
    lat_weights: np.ndarray | None = None  # HR latitudes when coarsening is area weighted

    def hr_window(self, i: int, ys: slice, xs: slice) -> np.ndarray:
        """HR values [C, hy, hx] of sample ``i`` (float32, NaN where missing)."""
        return _read(self.hr, i, ys, xs).astype(np.float32, copy=False)

    def lr_window(self, i: int, ly: np.ndarray, lx: np.ndarray) -> np.ndarray:
        """LR values [C, len(ly), len(lx)] of sample ``i`` at LR indices ``ly``, ``lx``."""
        ys, xs = _span(ly), _span(lx)
        if self.lr is not None:
            j = int(self.lr_samples[i]) if self.lr_samples is not None else i
            block = _read(self.lr, j, ys, xs)
        else:
            s = self.scale_factor
            hys, hxs = slice(ys.start * s, ys.stop * s), slice(xs.start * s, xs.stop * s)
            hr = torch.from_numpy(np.ascontiguousarray(_read(self.hr, i, hys, hxs), np.float64))
            lat = None if self.lat_weights is None else self.lat_weights[hys]
            block = coarsen(hr, s, lat).numpy()
        return block[:, ly - ys.start][:, :, lx - xs.start].astype(np.float32, copy=False)


@dataclass
class RegriddedInputs:
    """Predictors regridded onto the HR grid window by window: ``values`` [N_in, Ci, h, w] on
    their own grid (physical, in memory or reopened per process), ``groups`` the channel
    indices of each regrid method with its weights from that grid to the HR grid [H, W]
    (:mod:`weather_sr.data.regrid_weights`); ``samples`` maps an HR sample row to its row of
    ``values`` (matched by time). ``groups`` None (bicubic, a spline through whole fields):
    ``values`` are already on the HR grid [N_in, Ci, H, W]."""

    values: np.ndarray | LazyFields
    samples: np.ndarray
    groups: list[tuple[np.ndarray, RegridWeights]] | None = None

    def window(self, i: int, ys: slice, xs: slice) -> np.ndarray:
        """Inputs [Ci, hy, hx] of HR sample ``i`` on the HR window (ys, xs), reading only the
        box of the predictors' grid that the window's weights touch."""
        row = int(self.samples[i])
        if self.groups is None:
            return _read(self.values, row, ys, xs).astype(np.float32, copy=False)
        H, W = self.groups[0][1].target_shape
        shape = (len(range(*ys.indices(H))), len(range(*xs.indices(W))))
        parts = [(idx, *weights.window(ys, xs)) for idx, weights in self.groups]
        by = _union([p[2] for p in parts])  # one read: the box every method's window touches
        bx = _union([p[3] for p in parts])
        box = _read(self.values, row, by, bx)
        out = np.empty((sum(idx.size for idx, *_ in parts), *shape), np.float32)
        for idx, matrix, my, mx in parts:  # the channels of one method and their weights
            sub = box[idx, my.start - by.start : my.stop - by.start,
                      mx.start - bx.start : mx.stop - bx.start]
            out[idx] = apply_box(matrix, sub, shape)
        return out


def _union(spans: list[slice]) -> slice:
    """The smallest slice holding every one of ``spans``."""
    return slice(min(s.start for s in spans), max(s.stop for s in spans))
