"""The HR grid that output writers need: coordinates, names, attributes, periodicity."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import xarray as xr

from weather_sr.data.pairs import block_centres, sub_centres


def _plain(attrs: dict[str, Any]) -> dict[str, Any]:
    """Attributes as JSON-able plain values."""
    out: dict[str, Any] = {}
    for k, v in attrs.items():
        if isinstance(v, np.ndarray):
            v = v.tolist()
        elif isinstance(v, np.generic):
            v = v.item()
        if isinstance(v, str | int | float | bool | list):
            out[str(k)] = v
    return out


@dataclass
class Grid:
    """HR grid: ``lat`` [H] (increasing), ``lon`` [W], original dim names and attributes."""

    lat: np.ndarray
    lon: np.ndarray
    lat_name: str = "latitude"
    lon_name: str = "longitude"
    lat_attrs: dict[str, Any] = field(default_factory=dict)
    lon_attrs: dict[str, Any] = field(default_factory=dict)
    periodic: bool = False
    aux: dict[str, tuple[np.ndarray, dict[str, Any]]] = field(default_factory=dict)
    """2-D coordinates over (lat, lon) dims, e.g. latitude/longitude of a projected grid."""
    mapping: dict[str, Any] = field(default_factory=dict)
    """The CF grid mapping, ``{"name": ..., "attrs": {...}}`` ({}: none)."""

    @property
    def shape(self) -> tuple[int, int]:
        return (int(self.lat.size), int(self.lon.size))

    def coarsened(self, scale_factor: int) -> Grid:
        """The LR grid whose cells are the s×s blocks of this grid (aux coords block-averaged)."""
        s = scale_factor
        aux = {
            k: (v.reshape(v.shape[0] // s, s, v.shape[1] // s, s).mean(axis=(1, 3)), a)
            for k, (v, a) in self.aux.items()
        }
        return Grid(
            block_centres(self.lat, s), block_centres(self.lon, s), self.lat_name,
            self.lon_name, self.lat_attrs, self.lon_attrs, self.periodic, aux, self.mapping,
        )  # fmt: skip

    def coords(self) -> dict[str, xr.DataArray]:
        """xarray coordinates for output fields, keyed by the original names (1-D and aux)."""
        dims = (self.lat_name, self.lon_name)
        out = {
            self.lat_name: xr.DataArray(self.lat, dims=self.lat_name, attrs=self.lat_attrs),
            self.lon_name: xr.DataArray(self.lon, dims=self.lon_name, attrs=self.lon_attrs),
        }
        for k, (v, a) in self.aux.items():
            out[k] = xr.DataArray(v, dims=dims, attrs=a)
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict (plain lists) for checkpoints."""
        return {
            "lat": self.lat.tolist(), "lon": self.lon.tolist(),
            "lat_name": self.lat_name, "lon_name": self.lon_name,
            "lat_attrs": _plain(self.lat_attrs), "lon_attrs": _plain(self.lon_attrs),
            "periodic": bool(self.periodic),
            "aux": {k: [v.tolist(), _plain(a)] for k, (v, a) in self.aux.items()},
            "mapping": self.mapping,
        }  # fmt: skip

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Grid:
        aux = {k: (np.asarray(v, np.float64), dict(a)) for k, (v, a) in d.get("aux", {}).items()}
        return cls(
            np.asarray(d["lat"], np.float64), np.asarray(d["lon"], np.float64),
            str(d["lat_name"]), str(d["lon_name"]), dict(d["lat_attrs"]), dict(d["lon_attrs"]),
            bool(d["periodic"]), aux, dict(d.get("mapping") or {}),
        )  # fmt: skip


def span_text(values: np.ndarray | tuple[float, float]) -> str:
    """``"min..max"`` of coordinate values, for messages."""
    return f"{float(np.min(values)):.6g}..{float(np.max(values)):.6g}"


def same_axis(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether coordinate axes ``a`` and ``b`` are the same: same shape and equal to 1e-6 of
    the magnitude of ``b`` (float rounding of degrees or metres, not a shifted grid)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    scale = 1.0 + float(np.abs(b).max(initial=0.0))
    return a.shape == b.shape and bool(np.allclose(a, b, rtol=0.0, atol=1e-6 * scale))


def grid_of(fields: xr.DataArray) -> Grid:
    """The grid of standardised fields (sample, channel, y, x)."""
    ny, nx = fields.sizes["y"], fields.sizes["x"]
    lat = fields["y"] if "y" in fields.coords else xr.DataArray(np.arange(ny), dims="y")
    lon = fields["x"] if "x" in fields.coords else xr.DataArray(np.arange(nx), dims="x")
    aux = {
        str(k): (np.asarray(c.values), _plain(dict(c.attrs)))
        for k, c in fields.coords.items()
        if c.dims == ("y", "x")
    }
    return Grid(
        np.asarray(lat.values), np.asarray(lon.values),
        str(fields.attrs.get("lat_name", "y")), str(fields.attrs.get("lon_name", "x")),
        _plain(dict(lat.attrs)), _plain(dict(lon.attrs)),
        bool(fields.attrs.get("periodic", False)), aux,
        dict(fields.attrs.get("grid_mapping") or {}),
    )  # fmt: skip


def hr_grid_from_lr(fields: xr.DataArray | Grid, scale_factor: int) -> Grid:
    """The HR grid of an LR grid: s×s sub-cell centres of every LR cell (uniform axes).

    2-D aux coordinates cannot be refined exactly and are dropped.
    """
    g = fields if isinstance(fields, Grid) else grid_of(fields)
    return Grid(
        sub_centres(g.lat, scale_factor), sub_centres(g.lon, scale_factor, g.periodic),
        g.lat_name, g.lon_name, g.lat_attrs, g.lon_attrs, g.periodic, mapping=g.mapping,
    )  # fmt: skip
