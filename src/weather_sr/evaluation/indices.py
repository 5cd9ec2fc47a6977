"""CORDEX climate indices of downscaled series, computed with xclim.

The indices of the CORDEX-ML-Bench evaluation (WCRP-CORDEX/ml-benchmark,
``evaluation/indices.py``), which are ETCCDI indices (Zhang et al. 2011, WIREs Clim. Change
2:851; https://etccdi.pacificclimate.org/list_27_indices.shtml), each computed per period
(``freq``, default calendar years) by the ``xclim.indices`` function named below (xclim: Bourgault
et al. 2023, JOSS 8:5415; API https://xclim.readthedocs.io/en/stable/api_indices.html), then
averaged over the periods present:

- precipitation (daily series ``pr``): ``rx1day`` max_1day_precipitation_amount (mm d-1);
  ``sdii`` daily_pr_intensity, wet days pr >= 1 mm/day (mm d-1); ``cdd``
  maximum_consecutive_dry_days, pr < 1 mm/day (days); ``cwd`` maximum_consecutive_wet_days,
  pr >= 1 mm/day (days); ``r20mm`` wetdays, pr >= 20 mm/day (days);
- temperature: ``txx`` tx_max of ``tasmax`` (K); ``tnn`` tn_min of ``tasmin`` (K); ``su``
  tx_days_above, tasmax > 25 °C (days).

Thresholds are converted to the data's units by xclim (pint, "hydro" context: 1 kg m-2 = 1 mm
of water). Spells are cut at period boundaries (xclim's ``resample_before_rl=True``, as the
benchmark's ``_resample_max_spell``). Differences from the benchmark: SDII is averaged over
periods (the benchmark averages all wet days of the whole record), SU uses the ETCCDI 25 °C
(the benchmark's default is 300 K), and a period with a missing day at a point gives NaN there
(xclim indicators' default ``missing="any"``) and is left out of the average. Periods cut by the
start or end of the record count as they are (a record from March counts days from March).
"""

from __future__ import annotations

import re
import warnings
from typing import Literal

import numpy as np
import xarray as xr

from weather_sr.data.units import parse_units
from weather_sr.errors import UserError

Family = Literal["precipitation", "temperature"]
DAY_S = 86400
MIN_DAYS = 3  # xclim infers the daily frequency from the time axis

PRECIPITATION_STANDARD_NAMES = frozenset({
    "precipitation_flux", "precipitation_amount", "lwe_thickness_of_precipitation_amount",
    "lwe_precipitation_rate",
})
TEMPERATURE_STANDARD_NAMES = frozenset({"air_temperature"})
# names that make an amount (mm, m, kg m-2) or a fast rate (m s-1) count as precipitation
PRECIPITATION_NAMES = frozenset({
    "pr", "tp", "rr", "prcp", "precip", "precipitation", "tot_prec", "rain", "rainfall", "tprate",
    "mtpr",
})
# names in kelvin that are not air temperature (when no standard_name says so)
NOT_AIR_TEMPERATURE_NAMES = frozenset({"d2m", "2d", "td", "dpt", "sst", "tos", "skt", "ts", "tsk"})

LONG_NAMES = {
    "rx1day": "maximum 1-day precipitation", "sdii": "simple daily intensity index",
    "cdd": "maximum consecutive dry days", "cwd": "maximum consecutive wet days",
    "r20mm": "very heavy precipitation days", "txx": "maximum of daily maximum temperature",
    "tnn": "minimum of daily minimum temperature", "su": "summer days",
}
# index -> (daily series it needs, xclim.indices function, its arguments, output units)
INDICES: dict[str, dict[str, tuple[str, str, dict[str, str], str]]] = {
    "precipitation": {
        "rx1day": ("pr", "max_1day_precipitation_amount", {}, "mm d-1"),
        "sdii": ("pr", "daily_pr_intensity", {"thresh": "1 mm/day", "op": ">="}, "mm d-1"),
        "cdd": ("pr", "maximum_consecutive_dry_days", {"thresh": "1 mm/day", "op": "<"}, "d"),
        "cwd": ("pr", "maximum_consecutive_wet_days", {"thresh": "1 mm/day", "op": ">="}, "d"),
        "r20mm": ("pr", "wetdays", {"thresh": "20 mm/day", "op": ">="}, "d"),
    },
    "temperature": {
        "txx": ("tasmax", "tx_max", {}, "K"),
        "tnn": ("tasmin", "tn_min", {}, "K"),
        "su": ("tasmax", "tx_days_above", {"thresh": "25 degC", "op": ">"}, "d"),
    },
}


def index_family(
    name: str | None = None, units: str | None = None, standard_name: str | None = None
) -> Family | None:
    """Which CORDEX indices are meaningful for a variable: ``"precipitation"``,
    ``"temperature"`` or None (no index; the caller notes it, this is no error).

    A CF ``standard_name`` decides when given: precipitation_flux, precipitation_amount,
    lwe_thickness_of_precipitation_amount, lwe_precipitation_rate -> precipitation;
    air_temperature -> temperature; any other -> None. Without one, the units (cf-units) decide:
    convertible to K -> temperature (unless the name is a dew-point, sea or skin temperature such
    as d2m, sst, skt); a mass flux (kg m-2 s-1) -> precipitation; a speed (length/time) ->
    precipitation when at most 1 mm s-1 (mm/day, mm/h) or the name is a precipitation name (pr,
    tp, ...); an amount (mm, m, kg m-2) -> precipitation only with a precipitation name (a length
    is also e.g. a boundary-layer height, kg m-2 a water-vapour column).
    """
    sn = str(standard_name or "").strip().lower()
    if sn:
        if sn in PRECIPITATION_STANDARD_NAMES:
            return "precipitation"
        return "temperature" if sn in TEMPERATURE_STANDARD_NAMES else None
    text = str(units or "").strip()
    unit = parse_units(text) if text else None
    if unit is None:
        return None
    nm = str(name or "").strip().lower()
    precip_name = nm in PRECIPITATION_NAMES or "precip" in nm
    if unit.is_convertible("K"):
        return None if nm in NOT_AIR_TEMPERATURE_NAMES or "dew" in nm else "temperature"
    if unit.is_convertible("kg m-2 s-1"):
        return "precipitation"
    if unit.is_convertible("m s-1"):
        slow = float(unit.convert(1.0, "m s-1")) <= 1e-3
        return "precipitation" if slow or precip_name else None
    if unit.is_convertible("m") or unit.is_convertible("kg m-2"):
        return "precipitation" if precip_name else None
    return None


def _family(da: xr.DataArray, family: Family | None) -> Family:
    if family is None:
        family = index_family(da.name, da.attrs.get("units"), da.attrs.get("standard_name"))
    if family not in ("precipitation", "temperature"):
        raise UserError(f"{da.name or 'variable'}: no CORDEX index applies (neither precipitation "
                        "nor air temperature by its standard_name and units)")
    return family


def _time_step(da: xr.DataArray) -> int:
    """The time step in seconds (median spacing); it must divide a day."""
    name = da.name or "variable"
    if "time" not in da.dims:
        raise UserError(f"{name}: daily indices need a 'time' dimension, got dims {da.dims}")
    t = da["time"].values
    if not np.issubdtype(t.dtype, np.datetime64):
        raise UserError(f"{name}: time must be datetime64 (a standard calendar, decoded times)")
    if t.size < 2:
        raise UserError(f"{name}: daily indices need at least 2 time steps, got {t.size}")
    d = np.diff(t).astype("timedelta64[s]").astype(np.int64)
    if np.any(d <= 0):
        raise UserError(f"{name}: times must increase strictly; sort them and drop duplicates")
    step = int(np.median(d))
    if step > DAY_S or DAY_S % step:
        raise UserError(f"{name}: time step of {step} s; daily indices need a daily step or a "
                        "sub-daily one that divides a day (e.g. 1 h, 3 h, 6 h)")
    return step


def _daily_precipitation(da: xr.DataArray) -> xr.DataArray:
    """Daily mean of a flux (kg m-2 s-1, mm/day: its units kept), or the daily total of
    amounts per step (mm, m, kg m-2) as a rate per day (e.g. "m d-1", units via pint)."""
    units = str(da.attrs.get("units", "")).strip()
    unit = parse_units(units) if units else None
    days = da.resample(time="1D")
    if unit is not None and unit.is_convertible("kg m-2 s-1"):
        return days.mean(skipna=False).assign_attrs(units=units, standard_name="precipitation_flux")
    if unit is not None and unit.is_convertible("m s-1"):
        return days.mean(skipna=False).assign_attrs(units=units,
                                                    standard_name="lwe_precipitation_rate")
    if unit is not None and (unit.is_convertible("m") or unit.is_convertible("kg m-2")):
        from xclim.core.units import pint2cfunits, units2pint
        from xclim.core.units import units as ureg

        try:
            rate = pint2cfunits(units2pint(units) / ureg.day)
        except Exception as err:  # pint's parse errors have no common base but Exception
            raise UserError(f"{da.name or 'pr'}: units {units!r} unknown to pint; use e.g. "
                            "'mm', 'm' or 'kg m-2'") from err
        return days.sum(skipna=False).assign_attrs(units=rate, standard_name="precipitation_flux")
    raise UserError(f"{da.name or 'pr'}: precipitation units {units!r} are neither a flux "
                    "(kg m-2 s-1, mm/day) nor an amount per time step (mm, m, kg m-2)")


def _daily_role(da: xr.DataArray) -> str:
    """The role of a daily temperature: tasmax / tasmin by name or cell_methods, else tas."""
    name = str(da.name or "").lower()
    methods = str(da.attrs.get("cell_methods", "")).lower()
    if "max" in name or name in ("mx2t", "tx") or re.search(r"time:\s*max", methods):
        return "tasmax"
    if "min" in name or name in ("mn2t", "tn") or re.search(r"time:\s*min", methods):
        return "tasmin"
    return "tas"


def _daily_temperature(da: xr.DataArray, per_day: int) -> dict[str, xr.DataArray]:
    units = str(da.attrs.get("units", "")).strip()
    unit = parse_units(units) if units else None
    if unit is None or not unit.is_convertible("K"):
        raise UserError(f"{da.name or 'tas'}: temperature units {units!r} are not convertible "
                        "to K; set the units attribute (e.g. 'K', 'degC')")
    days = da.resample(time="1D")
    attrs = {"units": units, "standard_name": "air_temperature"}
    if per_day == 1:
        return {_daily_role(da): days.mean(skipna=False).assign_attrs(attrs)}
    return {
        "tasmax": days.max(skipna=False).assign_attrs(attrs, cell_methods="time: maximum"),
        "tasmin": days.min(skipna=False).assign_attrs(attrs, cell_methods="time: minimum"),
        "tas": days.mean(skipna=False).assign_attrs(attrs, cell_methods="time: mean"),
    }


def daily_series(da: xr.DataArray, family: Family | None = None) -> dict[str, xr.DataArray]:
    """Daily series for xclim from ``da`` (dim ``time``, datetime64, any other dims).

    ``family``: ``index_family`` of ``da`` when None (UserError when it has none). Days are
    calendar days of the time stamps (UTC). With a sub-daily step, only complete days count
    (as many values as steps in a day): partial first and last days are dropped, an incomplete
    day inside the record becomes NaN; a step that is not one day or a divisor of it, or no
    complete day, is a UserError. A value missing (NaN) in a day makes the day NaN.

    Returns precipitation: ``{"pr"}``, the daily mean of a flux (its units kept), or the daily
    total of amounts per step as a rate per day (units "<amount> d-1"); temperature, sub-daily:
    ``{"tasmax", "tasmin", "tas"}``, the daily max, min and mean of the values (instantaneous
    samples underestimate the true extremes); temperature, daily: one series, ``tasmax`` or
    ``tasmin`` when the name (containing max/min, mx2t, mn2t) or ``cell_methods`` ("time:
    maximum"/"minimum") says so, else ``tas`` (which no CORDEX index uses).
    """
    family = _family(da, family)
    per_day = DAY_S // _time_step(da)
    count = xr.ones_like(da["time"], dtype=np.float64).resample(time="1D").sum()
    complete = count >= per_day
    days = np.flatnonzero(complete.values)
    if days.size == 0:
        raise UserError(f"{da.name or 'variable'}: no complete day ({per_day} steps) in "
                        f"{da.sizes['time']} time steps; daily indices need full days")
    if family == "precipitation":
        series = {"pr": _daily_precipitation(da)}
    else:
        series = _daily_temperature(da, per_day)
    keep = slice(int(days[0]), int(days[-1]) + 1)
    return {role: s.where(complete).isel(time=keep).assign_attrs(s.attrs).rename(role)
            for role, s in series.items()}


def cordex_indices_per_period(
    da: xr.DataArray, family: Family | None = None, freq: str = "YS"
) -> dict[str, xr.DataArray]:
    """CORDEX indices per period: ``{name: DataArray (time = period start, other dims of da)}``.

    ``da`` at any daily or sub-daily step (``daily_series``); ``family`` as ``index_family``
    (None: judged from ``da``); ``freq``: a pandas offset xclim accepts ("YS": calendar years,
    "QS-DEC": seasons). Only the indices whose daily series exists are returned (a daily mean
    temperature has none). A period with a missing day at a point is NaN there.
    """
    import xclim.indices as xi
    from xclim.core.units import convert_units_to

    family = _family(da, family)
    series = daily_series(da, family)
    out: dict[str, xr.DataArray] = {}
    with warnings.catch_warnings(), xr.set_options(keep_attrs=True):
        warnings.filterwarnings("ignore", category=DeprecationWarning, module="xclim")
        for name, (role, function, kwargs, units) in INDICES[family].items():
            s = series.get(role)
            if s is None:
                continue
            if s.sizes["time"] < MIN_DAYS:
                raise UserError(f"{da.name or role}: daily indices need at least {MIN_DAYS} "
                                f"complete days, got {s.sizes['time']}")
            value = convert_units_to(getattr(xi, function)(s, freq=freq, **kwargs), units,
                                     context="hydro")
            gap = s.isnull().resample(time=freq).max()
            value = value.where(~gap).rename(name)
            value.attrs = {"units": value.attrs["units"], "long_name": LONG_NAMES[name],
                           "method": f"xclim.indices.{function}", "freq": freq}
            out[name] = value
    return out


def cordex_indices(
    da: xr.DataArray, family: Family | None = None, freq: str = "YS"
) -> dict[str, xr.DataArray]:
    """CORDEX indices of ``da``: ``{name: DataArray over the other dims of da}``, the mean over
    periods of ``cordex_indices_per_period`` (periods with a missing day left out; NaN where
    none is left). Names and units: module docstring."""
    per_period = cordex_indices_per_period(da, family, freq)
    return {k: v.mean("time", keep_attrs=True) for k, v in per_period.items()}


def index_names(family: Family) -> list[str]:
    """The names of the indices of a family, in the order of ``INDICES``."""
    return list(INDICES[family])

