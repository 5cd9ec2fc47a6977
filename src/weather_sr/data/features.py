"""Built-in feature channels (``data.features``): position on the globe and time of day/year.

Each name gives two channels, sin and cos of an angle, so the feature is continuous across the
date line, the new year and midnight:

- ``lat``: latitude (degrees); ``lon``: longitude (degrees; either convention);
- ``doy``: 2π · (fractional day of year, 0 at 1 January 00:00) / 365.25;
- ``hour``: 2π · (fractional hour of the day) / 24.

The values are already in [-1, 1] and need no normalisation: concatenate them to the condition
as they are. Projected grids pass their 2-D latitude/longitude (``Grid.aux``). Times are
datetime64 (any unit) or cftime objects (``doy`` of a 360_day calendar divides by 360).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from weather_sr.errors import UserError

FEATURES = ("lat", "lon", "doy", "hour")
TIME_FEATURES = ("doy", "hour")


def check_features(names: Sequence[str] | str | None, where: str) -> list[str]:
    """The feature names as a list (a single string = one name, None = none).

    UserError naming ``where`` for an unknown or repeated name, listing the choices.
    """
    if names is None:
        return []
    names = [names] if isinstance(names, str) else list(names)
    for n in names:
        if n not in FEATURES:
            raise UserError(f"{where}: unknown feature {n!r}: choose among {', '.join(FEATURES)}")
    if len(set(names)) < len(names):
        raise UserError(f"{where}: feature names repeat in {names}: give each one once")
    return names


def feature_names(names: Sequence[str]) -> list[str]:
    """Channel names, two per feature: ``["sin_lat", "cos_lat", "sin_hour", ...]``."""
    return [f"{f}_{n}" for n in check_features(names, "data.features") for f in ("sin", "cos")]


def _phases(times: np.ndarray, where: str) -> tuple[np.ndarray, np.ndarray]:
    """(day-of-year phase, hour phase) in radians for ``times`` [N]."""
    t = np.asarray(times)
    if t.dtype.kind == "M":
        ns = t.astype("datetime64[ns]")
        # floor to the year/day (numpy truncates towards -inf, also before 1970)
        day = (ns - ns.astype("datetime64[Y]")) / np.timedelta64(1, "D")
        hour = (ns - ns.astype("datetime64[D]")) / np.timedelta64(1, "h")
        return 2 * np.pi * day / 365.25, 2 * np.pi * hour / 24.0
    vals = list(t.ravel())
    if t.dtype == object and vals and all(hasattr(v, "dayofyr") for v in vals):  # cftime
        hour = np.array([v.hour + v.minute / 60 + v.second / 3600 for v in vals], np.float64)
        hour += np.array([v.microsecond for v in vals]) / 3.6e9
        day = np.array([v.dayofyr - 1 for v in vals]) + hour / 24.0
        year = [360.0 if getattr(v, "calendar", "") == "360_day" else 365.25 for v in vals]
        return 2 * np.pi * day / np.array(year), 2 * np.pi * hour / 24.0
    raise UserError(
        f"{where}: the data has no time coordinate (got {t.dtype} values), which the "
        f"features {', '.join(TIME_FEATURES)} need: add a time coordinate or remove them"
    )


def _grid(lat: np.ndarray, lon: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """1-D or 2-D latitude/longitude -> both [H, W] (1-D lat is along H, 1-D lon along W)."""
    la, lo = np.asarray(lat, np.float64), np.asarray(lon, np.float64)
    if la.ndim == 1 and lo.ndim == 1:
        return np.meshgrid(la, lo, indexing="ij")
    la = la[:, None] if la.ndim == 1 else la
    lo = lo[None, :] if lo.ndim == 1 else lo
    if la.ndim != 2 or lo.ndim != 2:
        raise ValueError(f"expected 1-D or 2-D lat/lon, got shapes {la.shape} and {lo.shape}")
    return np.broadcast_arrays(la, lo)  # ValueError on a shape mismatch


def feature_channels(
    names: Sequence[str],
    lat: np.ndarray,
    lon: np.ndarray,
    times: np.ndarray | None,
    where: str = "data.features",
) -> np.ndarray:
    """Feature channels float32 [N, 2F, H, W] in the order of ``names`` (see ``feature_names``).

    ``lat`` [H] or [H, W], ``lon`` [W] or [H, W] in degrees; ``times`` [N] (datetime64 or
    cftime). Without times (None) N = 1: only ``lat``/``lon`` may be asked for, and the one
    field broadcasts over samples. UserError naming ``where`` for unknown names, time features
    without times, or a latitude/longitude that is not in degrees (|lat| > 90, |lon| > 720) or
    has missing values.
    """
    names = check_features(names, where)
    la, lo = _grid(lat, lon)
    H, W = la.shape
    wants_time = any(n in TIME_FEATURES for n in names)
    if times is None and wants_time:
        raise UserError(
            f"{where}: the data has no time coordinate, which the features "
            f"{', '.join(TIME_FEATURES)} need: add a time coordinate or remove them"
        )
    N = 1 if times is None else int(np.asarray(times).size)
    doy, hour = _phases(times, where) if wants_time else (None, None)
    for n, c, limit in (("lat", la, 90.0), ("lon", lo, 720.0)):
        if n not in names:
            continue
        if not np.isfinite(c).all():
            raise UserError(f"{where}: feature {n}: the grid's {n} has missing values")
        if np.abs(c).max() > limit * (1 + 1e-6):
            raise UserError(
                f"{where}: feature {n}: the grid's {n} reaches {np.abs(c).max():.4g}, not "
                "degrees (a projected coordinate?): give the 2-D latitude/longitude"
            )
    out = np.empty((N, 2 * len(names), H, W), np.float32)
    for k, n in enumerate(names):
        if n in ("lat", "lon"):
            angle = np.deg2rad(la if n == "lat" else lo)
            out[:, 2 * k] = np.sin(angle)
            out[:, 2 * k + 1] = np.cos(angle)
        else:
            phase = doy if n == "doy" else hour
            out[:, 2 * k] = np.sin(phase)[:, None, None]
            out[:, 2 * k + 1] = np.cos(phase)[:, None, None]
    return out
