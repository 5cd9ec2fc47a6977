"""Scalar conditions: one number per field (lead time, a forcing index, ...), ``data.scalars``.

A scalar is a coordinate or a data variable of a file whose only dimension is the time axis
(e.g. a ``lead_time`` coordinate along ``time``). Durations become hours; dates are refused (the
features ``doy``/``hour`` are for the calendar). The fields of a file find their value by time,
so the scalar may sit in the targets' file or in the predictors' file, whichever holds it.
Normalised by the training split's mean and standard deviation, a scalar reaches the network
as a constant plane of the condition, which the UNet reads into its noise-level embedding
(:class:`weather_sr.nn.unet.UNet`, ``scalars``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import xarray as xr

from weather_sr.errors import UserError

TIME_DIMS = ("time", "valid_time", "step", "t")  # data.reading's names of the time axis


def _time_dim(da: xr.DataArray) -> str | None:
    """``da``'s one dim when it is a time axis (by name or CF ``axis: T``), else None."""
    if da.ndim != 1:
        return None
    dim = str(da.dims[0])
    axis = str(da[dim].attrs.get("axis", "")).upper() if dim in da.coords else ""
    return dim if dim.lower() in TIME_DIMS or axis == "T" else None


def scalar_series(ds: xr.Dataset, name: str, where: str) -> tuple[np.ndarray, np.ndarray] | None:
    """(times [T], float64 values [T]) of scalar ``name`` in ``ds``; None when ``ds`` has no
    variable or coordinate of that name. UserError (naming ``where``) for one that is not 1-D
    along time, a date, not numeric, or missing somewhere."""
    if name not in ds.variables:
        return None
    da = ds[name]
    dim = _time_dim(da)
    if dim is None:
        raise UserError(f"{where}: scalar {name!r} has dims {tuple(map(str, da.dims))}: "
                        "data.scalars takes a coordinate or variable along time only")
    values = np.asarray(da.values)
    if np.issubdtype(values.dtype, np.timedelta64):
        values = values / np.timedelta64(1, "h")  # durations in hours
    elif not np.issubdtype(values.dtype, np.number) or np.issubdtype(values.dtype,
                                                                       np.datetime64):
        raise UserError(f"{where}: scalar {name!r} is {values.dtype}, not a number or a "
                        "duration (dates: use data.features doy/hour)")
    values = values.astype(np.float64)
    if not np.isfinite(values).all():
        raise UserError(f"{where}: scalar {name!r} has missing (NaN) values: fill them")
    times = ds["valid_time"].values if dim == "step" and "valid_time" in ds.coords else (
        ds[dim].values if dim in ds.coords else np.arange(values.size))
    return np.asarray(times), values


def scalars_at(sources: Sequence[tuple[xr.Dataset, str]], names: Sequence[str],
               times: np.ndarray, fix: str) -> np.ndarray:
    """The scalars ``names`` at ``times`` [N] (the fields' times): float64 [N, K].

    ``sources``: (dataset, where) in the order searched; a name is taken from the first that
    has it. UserError naming the scalar and the files when none has it (``fix``: what to do),
    or when a field's time is missing or repeated in the scalar's time axis."""
    out = np.empty((len(times), len(names)), np.float64)
    for k, name in enumerate(names):
        found = next(((s, where) for ds, where in sources
                      if (s := scalar_series(ds, name, where)) is not None), None)
        if found is None:
            places = [where for _, where in sources]
            found_in = (f"is not in {places[0]}" if len(places) == 1 else
                        f"is in neither {', '.join(places[:-1])} nor {places[-1]}")
            raise UserError(f"scalar {name!r} {found_in}: {fix}")
        (axis, values), where = found
        index = {t: i for i, t in enumerate(_keys(axis))}
        if len(index) != axis.size:
            raise UserError(f"{where}: scalar {name!r} lies on a time axis with repeated "
                            "times: give one value per time")
        try:
            out[:, k] = values[[index[t] for t in _keys(np.asarray(times))]]
        except KeyError as missing:
            raise UserError(f"{where}: scalar {name!r} has no value at time {missing.args[0]} "
                            "of the fields: give it along the fields' time axis") from None
    return out


def _keys(times: np.ndarray) -> list:
    """Hashable time keys, datetimes at one resolution (files may store s or ns)."""
    if np.issubdtype(times.dtype, np.datetime64):
        return times.astype("datetime64[ns]").astype(np.int64).tolist()
    return times.tolist()


def scalar_statistics(values: np.ndarray, names: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation [K] of training ``values`` [N, K]; UserError for a scalar
    constant over the training split (it cannot tell the fields apart)."""
    mean, std = values.mean(axis=0), values.std(axis=0)
    for k, name in enumerate(names):
        if not std[k] > 0:
            raise UserError(f"data.scalars: {name} is constant ({mean[k]:g}) over the training "
                            "split: it cannot condition the model; drop it")
    return mean, std
