"""CORDEX indices (weather_sr.evaluation.indices) against xclim itself and hand-computed cases."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from weather_sr.errors import UserError
from weather_sr.evaluation import indices as I

xi = pytest.importorskip("xclim.indices")
xunits = pytest.importorskip("xclim.core.units")

DAYS = pd.date_range("2001-01-01", "2003-12-31", freq="D")  # 3 years, 1095 days


def _daily(values: np.ndarray, name: str, units: str, **attrs: str) -> xr.DataArray:
    coords = {"time": DAYS[: values.shape[0]], "point": np.arange(values.shape[1])}
    return xr.DataArray(values, dims=("time", "point"), coords=coords, name=name,
                        attrs={"units": units, **attrs})


def _precip(seed: int = 0, p: int = 4) -> xr.DataArray:
    """Daily precipitation flux (kg m-2 s-1): ~40 % dry days, gamma amounts up to > 20 mm."""
    rng = np.random.default_rng(seed)
    mm = rng.gamma(0.8, 8.0, size=(DAYS.size, p)) * (rng.random((DAYS.size, p)) > 0.4)
    return _daily(mm / 86400.0, "pr", "kg m-2 s-1", standard_name="precipitation_flux")


def _tasmax(seed: int = 1, p: int = 4) -> xr.DataArray:
    rng = np.random.default_rng(seed)
    doy = DAYS.day_of_year.values[:, None]
    kelvin = 288.0 + 10.0 * np.sin(2 * np.pi * (doy - 105) / 365.0) + 3 * rng.normal(size=(
        DAYS.size, p))
    return _daily(kelvin, "tasmax", "K", standard_name="air_temperature")


def _xclim(function: str, da: xr.DataArray, units: str, **kwargs) -> xr.DataArray:
    """The index by xclim.indices directly, in ``units``, averaged over years."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        out = getattr(xi, function)(da, freq="YS", **kwargs)
        return xunits.convert_units_to(out, units, context="hydro").mean("time")


def test_index_family():
    assert I.index_family("pr", "kg m-2 s-1", "precipitation_flux") == "precipitation"
    assert I.index_family("tp", "m", "lwe_thickness_of_precipitation_amount") == "precipitation"
    assert I.index_family("x", "mm/day") == "precipitation"
    assert I.index_family("prate", "kg m-2 s-1") == "precipitation"
    assert I.index_family("tp", "m") == "precipitation"  # an amount with a precipitation name
    assert I.index_family("t2m", "K", "air_temperature") == "temperature"
    assert I.index_family("t2m", "degC") == "temperature"
    assert I.index_family("z", "m2 s-2", "geopotential") is None
    assert I.index_family("z", "m2 s-2") is None
    assert I.index_family("d2m", "K", "dew_point_temperature") is None
    assert I.index_family("d2m", "K") is None
    assert I.index_family("u10", "m s-1") is None  # a speed, not a rain rate
    assert I.index_family("blh", "m") is None  # a length that is no precipitation
    assert I.index_family("tcwv", "kg m-2") is None
    assert I.index_family("x", "bananas") is None  # unknown to cf-units
    assert I.index_family("x", None) is None


def test_precipitation_indices_equal_xclim():
    pr = _precip()
    got = I.cordex_indices(pr)
    assert sorted(got) == sorted(I.index_names("precipitation"))
    expected = {
        "rx1day": _xclim("max_1day_precipitation_amount", pr, "mm d-1"),
        "sdii": _xclim("daily_pr_intensity", pr, "mm d-1", thresh="1 mm/day"),
        "cdd": _xclim("maximum_consecutive_dry_days", pr, "d", thresh="1 mm/day"),
        "cwd": _xclim("maximum_consecutive_wet_days", pr, "d", thresh="1 mm/day"),
        "r20mm": _xclim("wetdays", pr, "d", thresh="20 mm/day", op=">="),
    }
    for name, ref in expected.items():
        assert got[name].dims == ("point",)
        np.testing.assert_allclose(got[name].values, ref.values, rtol=1e-12, err_msg=name)
    assert got["rx1day"].attrs["units"] == "mm d-1" and got["cdd"].attrs["units"] == "d"
    # by hand, in mm/day: the annual maximum and the count of days >= 20 mm
    mm = pr.values * 86400.0
    years = DAYS.year.values
    rx1 = np.mean([mm[years == y].max(axis=0) for y in (2001, 2002, 2003)], axis=0)
    np.testing.assert_allclose(got["rx1day"].values, rx1, rtol=1e-12)
    r20 = np.mean([(mm[years == y] >= 20).sum(axis=0) for y in (2001, 2002, 2003)], axis=0)
    np.testing.assert_allclose(got["r20mm"].values, r20)


def test_temperature_indices_equal_xclim():
    tx = _tasmax()
    got = I.cordex_indices(tx)
    assert sorted(got) == ["su", "txx"]  # a daily maximum gives no TNn
    np.testing.assert_allclose(got["txx"].values, _xclim("tx_max", tx, "K").values, rtol=1e-12)
    np.testing.assert_allclose(got["su"].values,
                               _xclim("tx_days_above", tx, "d", thresh="25 degC").values)
    hand = np.mean([(tx.values[DAYS.year == y] > 298.15).sum(axis=0) for y in (2001, 2002, 2003)],
                   axis=0)
    np.testing.assert_allclose(got["su"].values, hand)
    tn = tx.rename("tasmin")
    np.testing.assert_allclose(I.cordex_indices(tn)["tnn"].values,
                               _xclim("tn_min", tn, "K").values, rtol=1e-12)
    assert I.cordex_indices(tx.rename("tas")) == {}  # a daily mean: no CORDEX index
    # degC in, K out: the same numbers
    c = (tx - 273.15).assign_attrs(units="degC")
    np.testing.assert_allclose(I.cordex_indices(c)["txx"].values, got["txx"].values, rtol=1e-12)


def test_planted_extremes_and_dry_spell():
    p = 3
    mm = np.full((DAYS.size, p), 5.0)  # wet every day
    years = DAYS.year.values
    mm[np.flatnonzero(years == 2002)[40:75], 1] = 0.2  # a 35-day dry spell in 2002 at point 1
    mm[np.flatnonzero(years == 2001)[100], 0] = 80.0
    mm[np.flatnonzero(years == 2003)[200], 0] = 50.0
    pr = _daily(mm, "pr", "mm/day")
    got = I.cordex_indices(pr)
    np.testing.assert_allclose(got["rx1day"].values, [(80 + 5 + 50) / 3, 5.0, 5.0])
    np.testing.assert_allclose(got["cdd"].values, [0.0, 35 / 3, 0.0])
    np.testing.assert_allclose(got["r20mm"].values, [2 / 3, 0.0, 0.0])
    per_year = I.cordex_indices_per_period(pr)["cwd"]  # 2002: wet 40 days, dry 35, wet 290
    assert per_year.sizes["time"] == 3
    np.testing.assert_allclose(per_year.isel(point=1).values, [365, 290, 365])


def test_year_with_missing_day_is_left_out():
    pr = _precip(3)
    full = I.cordex_indices_per_period(pr)["rx1day"]
    gappy = pr.copy()
    gappy[400, 2] = np.nan  # a day of 2002 at point 2
    got = I.cordex_indices(gappy)["rx1day"]
    assert np.isnan(I.cordex_indices_per_period(gappy)["rx1day"].isel(time=1, point=2))
    np.testing.assert_allclose(got.isel(point=2), full.isel(time=[0, 2], point=2).mean())
    np.testing.assert_allclose(got.isel(point=0), full.isel(point=0).mean())


def test_subdaily_aggregation_equals_hand_resample():
    rng = np.random.default_rng(5)
    hours = pd.date_range("2001-03-01 18:00", "2001-03-06 09:00", freq="3h")  # partial ends
    kelvin = 280 + rng.normal(size=(hours.size, 2))
    t2m = xr.DataArray(kelvin, dims=("time", "point"), coords={"time": hours}, name="t2m",
                       attrs={"units": "K"})
    daily = I.daily_series(t2m)
    assert sorted(daily) == ["tas", "tasmax", "tasmin"]
    first = np.flatnonzero(hours == np.datetime64("2001-03-02T00:00"))[0]
    block = kelvin[first: first + 4 * 8].reshape(4, 8, 2)  # the 4 complete days, 8 steps each
    assert daily["tasmax"].sizes["time"] == 4
    np.testing.assert_array_equal(daily["tasmax"].time.values,
                                  pd.date_range("2001-03-02", periods=4, freq="D").values)
    np.testing.assert_allclose(daily["tasmax"].values, block.max(axis=1))
    np.testing.assert_allclose(daily["tasmin"].values, block.min(axis=1))
    np.testing.assert_allclose(daily["tas"].values, block.mean(axis=1))
    # hourly amounts in m -> daily totals as a rate in m d-1
    amounts = xr.DataArray(rng.random((hours.size, 2)) * 1e-3, dims=("time", "point"),
                           coords={"time": hours}, name="tp", attrs={"units": "m"})
    pr = I.daily_series(amounts)["pr"]
    np.testing.assert_allclose(pr.values, amounts.values[first: first + 32].reshape(4, 8, 2)
                               .sum(axis=1))
    assert xunits.units2pint(pr.attrs["units"]) == xunits.units2pint("m d-1")
    # the same as a 3-hourly flux -> its daily mean (units kept): the same mm per day
    flux = (amounts * 1000.0 / 10800.0).assign_attrs(units="kg m-2 s-1").rename("pr")
    np.testing.assert_allclose(I.daily_series(flux)["pr"].values * 86400.0, pr.values * 1000.0)


def test_subdaily_indices_use_daily_totals():
    hours = pd.date_range("2001-01-01", "2002-12-31 23:00", freq="6h")
    rng = np.random.default_rng(6)
    mm = rng.gamma(0.5, 3.0, size=(hours.size, 2))
    attrs = {"units": "m", "standard_name": "lwe_thickness_of_precipitation_amount"}
    tp = xr.DataArray(mm / 1000, dims=("time", "point"), coords={"time": hours}, name="tp",
                      attrs=attrs)
    got = I.cordex_indices(tp)["rx1day"]
    daily_mm = mm.reshape(-1, 4, 2).sum(axis=1)
    days = pd.date_range("2001-01-01", "2002-12-31", freq="D")
    hand = np.mean([daily_mm[days.year == y].max(axis=0) for y in (2001, 2002)], axis=0)
    np.testing.assert_allclose(got.values, hand, rtol=1e-12)


def test_user_errors():
    hours = pd.date_range("2001-01-01 03:00", periods=12, freq="h")
    short = xr.DataArray(np.zeros(12), dims="time", coords={"time": hours}, name="t2m",
                         attrs={"units": "K"})
    with pytest.raises(UserError, match="no complete day"):
        I.daily_series(short)
    z = short.rename("z").assign_attrs(units="m2 s-2", standard_name="geopotential")
    with pytest.raises(UserError, match="no CORDEX index applies"):
        I.cordex_indices(z)
    monthly = _tasmax().resample(time="MS").mean().assign_attrs(units="K")
    with pytest.raises(UserError, match="time step"):
        I.cordex_indices(monthly)
    with pytest.raises(UserError, match="precipitation units"):
        I.cordex_indices(_precip().assign_attrs(units="K"), family="precipitation")
    with pytest.raises(UserError, match="'time' dimension"):
        I.cordex_indices(_tasmax().rename(time="t"))
    with pytest.raises(UserError, match="at least 3"):
        I.cordex_indices(_tasmax()[:2])
