"""Units of a predictor named like a target: the one rule, for training, evaluate and downscale.

Such a predictor is the residual base as it is (normalised with the target's statistics,
:func:`weather_sr.data.inputs.input_normalizer`), so it must be in the target's units: equal
units (as cf-units judges them: "K" and "kelvin") pass, convertible ones (degC -> K) are
converted lazily, anything else is a one-line UserError. Other predictors are left alone: their
own statistics absorb their units.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import xarray as xr

from weather_sr.errors import UserError


def parse_units(text: str):  # -> cf_units.Unit | None
    """``text`` as a cf_units Unit; None when cf-units does not know it (or it is no unit)."""
    import cf_units

    try:
        unit = cf_units.Unit(text)
    except ValueError:
        return None
    return None if unit.is_unknown() or unit.is_no_unit() else unit


def conversion(name: str, got: str, want: str, where: str, *,
               what: str | None = None, other: str = "the target") -> tuple[float, float] | None:
    """(scale, offset) taking ``name`` from units ``got`` to ``want`` (values * scale + offset);
    None when they are equal. UserError when they cannot be.

    ``what`` names the converted side in the message (default: the predictor ``name``, the
    residual base of the target ``name``), ``other`` the side whose units are wanted.
    """
    got, want = str(got).strip(), str(want).strip()
    if got == want:  # blank on both sides too: nothing to compare, as before
        return None
    what = what or f"{where}: predictor {name} (the residual base of the target {name})"
    if not got or not want:
        side = (f"has no units, {other} is in {want!r}: give it a units attribute" if not got
                else f"is in {got!r} but {other} has no units: give {other} a units "
                "attribute")
        raise UserError(f"{what} {side}")
    a, b = parse_units(got), parse_units(want)
    if a is None or b is None:
        raise UserError(f"{what} is in {got!r}, {other} in {want!r}: "
                        f"{(got if a is None else want)!r} is unknown to cf-units: spell the "
                        "units as cf-units reads them (e.g. 'K', 'degC', 'kg kg-1')")
    if a == b:
        return None
    if not a.is_convertible(b):
        raise UserError(f"{what} is in {got!r}, which cannot be converted to {other}'s "
                        f"{want!r}: give {name} in {want!r} (or units convertible to them)")
    offset = float(a.convert(0.0, b))
    scale = float(a.convert(1.0, b)) - offset
    if not np.isclose(float(a.convert(10.0, b)), 10.0 * scale + offset, rtol=1e-9, atol=1e-12):
        raise UserError(f"{what} is in {got!r}, which converts to {other}'s {want!r} only "
                        f"non-linearly: give {name} in {want!r}")
    return scale, offset


def to_target_units(da: xr.DataArray, targets: Mapping[str, str], where: str,
                    units: Sequence[str] | None = None) -> xr.DataArray:
    """``da`` (sample, channel, y, x) with each channel named like a target (``targets``: its
    units by name) converted to that target's units; ``da`` itself when none needs it.

    ``units``: the channels' units when not ``da.attrs["units"]`` (downscale: those of the
    training file, recorded in the checkpoint). Lazy values stay lazy.
    """
    channels = [str(c) for c in da["channel"].values]
    units = list(da.attrs.get("units") or [""] * len(channels)) if units is None else list(units)
    scale, offset = np.ones(len(channels)), np.zeros(len(channels))
    new_units = list(units)
    for c, name in enumerate(channels):
        if name not in targets or c >= len(units):
            continue
        affine = conversion(name, units[c], targets[name], where)
        if affine is not None:
            (scale[c], offset[c]), new_units[c] = affine, str(targets[name]).strip()
    if not (scale != 1.0).any() and not (offset != 0.0).any():
        return da
    dtype = da.dtype if np.issubdtype(da.dtype, np.floating) else np.dtype(np.float64)
    shape = (1, len(channels), 1, 1)
    # in float64, then back: degC -> K in float32 is exactly float32(float64(x) + 273.15)
    out = (da.astype(np.float64) * scale.reshape(shape) + offset.reshape(shape)).astype(dtype)
    out.attrs = {**da.attrs, "units": new_units}
    return out
