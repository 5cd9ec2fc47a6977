"""``--domain``: downscale another part of the domain with a model whose predictors are
regridded from their own grid (the output grid is then not given by the input file).

The points come from the static fields' grid that the checkpoint keeps (or, without static
fields, the training grid) within the bounds; their latitude/longitude (for the regridding, the
lat/lon features and the output file) from the grid mapping, or cut from the training grid's.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from weather_sr.data.condition import ConditionSpec
from weather_sr.data.grid import Grid, span_text
from weather_sr.errors import UserError

Domain = tuple[float, float, float, float]  # y0, y1, x0, x1 in the HR grid's coordinates
LATLON_ATTRS = ({"standard_name": "latitude", "units": "degrees_north"},
                {"standard_name": "longitude", "units": "degrees_east"})


def parse_domain(value: str | Sequence[float] | None, option: str = "--domain"
                 ) -> Domain | None:
    """``"Y0,Y1,X0,X1"`` (or four numbers) as a :data:`Domain`; UserError naming ``option``."""
    if value is None:
        return None
    parts = value.split(",") if isinstance(value, str) else list(value)
    try:
        numbers = [float(v) for v in parts]
    except (TypeError, ValueError):
        numbers = []
    if len(numbers) != 4 or not all(np.isfinite(numbers)):
        raise UserError(f"{option} {value!r}: give four numbers Y0,Y1,X0,X1 (the bounds in the "
                        "HR grid's coordinates, e.g. metres of its projection)")
    return numbers[0], numbers[1], numbers[2], numbers[3]


def _within(axis: np.ndarray, a: float, b: float) -> np.ndarray:
    step = float(np.median(np.abs(np.diff(axis)))) if axis.size > 1 else 1.0
    return (axis >= min(a, b) - 1e-6 * step) & (axis <= max(a, b) + 1e-6 * step)


def domain_grid(trained: Grid, spec: ConditionSpec, domain: Domain, where: str) -> Grid:
    """The HR grid of ``domain``: the points of the static fields' grid (else of the training
    grid ``trained``) within its bounds, with 2-D latitude/longitude when ``trained`` is
    projected (from its grid mapping; without one, cut from its own, inside it only)."""
    static = bool(spec.static_names) and spec.static_y is not None and spec.static_x is not None
    ys = np.asarray(spec.static_y if static else trained.lat, np.float64)
    xs = np.asarray(spec.static_x if static else trained.lon, np.float64)
    ky, kx = _within(ys, domain[0], domain[1]), _within(xs, domain[2], domain[3])
    if ky.sum() < 2 or kx.sum() < 2:
        what = "the static fields' domain" if static else "the training grid"
        raise UserError(f"{where}: --domain {','.join(f'{v:g}' for v in domain)} holds "
                        f"{int(ky.sum())}x{int(kx.sum())} points of {what} (y {span_text(ys)}, "
                        f"x {span_text(xs)}): give bounds around at least 2x2 of them")
    lat, lon = ys[ky], xs[kx]
    return Grid(lat, lon, trained.lat_name, trained.lon_name, dict(trained.lat_attrs),
                dict(trained.lon_attrs), False, _aux(trained, lat, lon, where),
                dict(trained.mapping))


def _aux(trained: Grid, lat: np.ndarray, lon: np.ndarray, where: str
         ) -> dict[str, tuple[np.ndarray, dict]]:
    """2-D latitude/longitude of the grid ``lat`` x ``lon`` under ``trained``'s names."""
    if not trained.aux:
        return {}
    names = sorted(trained.aux, key=lambda k: not k.lower().startswith("lat"))[:2]
    if trained.mapping:
        from weather_sr.data.projection import latlon_of_mapping

        values = latlon_of_mapping(trained.mapping, lat, lon, trained.lat_attrs,
                                   trained.lon_attrs, where)
        return {k: (v, {**LATLON_ATTRS[i], **trained.aux[k][1]})
                for i, (k, v) in enumerate(zip(names, values, strict=True))}
    rows = np.flatnonzero(np.isin(trained.lat, lat))
    cols = np.flatnonzero(np.isin(trained.lon, lon))
    if rows.size != lat.size or cols.size != lon.size:
        raise UserError(f"{where}: --domain reaches beyond the training grid, whose file had no "
                        "grid mapping to give the latitude/longitude there: keep --domain "
                        "inside the training grid, or train with a CF grid_mapping")
    return {k: (v[np.ix_(rows, cols)], a) for k, (v, a) in trained.aux.items()}
