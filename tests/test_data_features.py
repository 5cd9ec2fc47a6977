"""Built-in feature channels: closed forms, shapes, names, 2-D coordinates, errors."""

from __future__ import annotations

import cftime
import numpy as np
import pytest

from weather_sr.data.features import FEATURES, check_features, feature_channels, feature_names
from weather_sr.errors import UserError

WHERE = "data.features"
LAT = np.array([-90.0, 0.0, 30.0, 90.0])
LON = np.array([-180.0, 0.0, 90.0, 180.0, 270.0])


def at(*stamps: str) -> np.ndarray:
    return np.array(stamps, dtype="datetime64[ns]")


def test_names_and_shapes() -> None:
    assert feature_names(["lat", "hour"]) == ["sin_lat", "cos_lat", "sin_hour", "cos_hour"]
    assert len(feature_names(FEATURES)) == 8
    out = feature_channels(FEATURES, LAT, LON, at("2020-01-01", "2020-07-01", "2021-03-05"))
    assert out.shape == (3, 8, 4, 5) and out.dtype == np.float32
    assert np.abs(out).max() <= 1.0 and np.isfinite(out).all()
    # sin² + cos² = 1 for every pair
    np.testing.assert_allclose(out[:, 0::2] ** 2 + out[:, 1::2] ** 2, 1.0, atol=1e-6)
    assert feature_channels(["lat"], LAT, LON, None).shape == (1, 2, 4, 5)


def test_lat_lon_closed_forms() -> None:
    out = feature_channels(["lat", "lon"], LAT, LON, None)[0]
    np.testing.assert_allclose(out[0, :, 0], [-1, 0, 0.5, 1], atol=1e-6)  # sin lat
    np.testing.assert_allclose(out[1, :, 0], [0, 1, np.sqrt(3) / 2, 0], atol=1e-6)  # cos lat
    np.testing.assert_allclose(out[2, 0], [0, 0, 1, 0, -1], atol=1e-6)  # sin lon
    np.testing.assert_allclose(out[3, 0], [-1, 1, 0, -1, 0], atol=1e-6)  # cos lon
    assert (out[0, :, 0:1] == out[0]).all()  # lat is constant along a row
    # the other convention gives the same channels: -90 = 270
    np.testing.assert_allclose(
        feature_channels(["lon"], LAT, np.array([-90.0]), None),
        feature_channels(["lon"], LAT, np.array([270.0]), None),
        atol=1e-6,
    )


def test_time_closed_forms() -> None:
    times = at("2021-01-01T00:00", "2021-03-05T06:00", "2021-03-05T18:00", "1969-12-31T12:00")
    out = feature_channels(["hour", "doy"], LAT, LON, times)
    sin_h, cos_h = out[:, 0, 0, 0], out[:, 1, 0, 0]
    np.testing.assert_allclose(sin_h, [0, 1, -1, 0], atol=1e-6)
    np.testing.assert_allclose(cos_h, [1, 0, 0, -1], atol=1e-6)
    assert (out[:, 0] == out[:, 0, :1, :1]).all()  # constant in space
    sin_d, cos_d = out[:, 2, 0, 0], out[:, 3, 0, 0]
    assert sin_d[0] == 0.0 and cos_d[0] == 1.0  # 1 Jan 00:00: phase 0
    phase = 2 * np.pi * (31 + 28 + 4 + 0.25) / 365.25  # 5 March 06:00 (2021: no leap day)
    np.testing.assert_allclose([sin_d[1], cos_d[1]], [np.sin(phase), np.cos(phase)], atol=1e-6)
    phase = 2 * np.pi * 364.5 / 365.25  # before 1970: floors to the right year and day
    np.testing.assert_allclose([sin_d[3], cos_d[3]], [np.sin(phase), np.cos(phase)], atol=1e-6)
    seconds = feature_channels(["hour"], LAT, LON, at("2021-01-01T06:00").astype("M8[s]"))
    np.testing.assert_allclose(seconds[0, :, 0, 0], [1, 0], atol=1e-6)  # any datetime64 unit


def test_cftime_times() -> None:
    times = np.array(
        [cftime.DatetimeNoLeap(2001, 1, 1, 6), cftime.Datetime360Day(2001, 7, 1, 18, 30)]
    )
    out = feature_channels(["doy", "hour"], LAT, LON, times)[:, :, 0, 0]
    np.testing.assert_allclose(out[0], [np.sin(np.pi / 2 / 365.25), np.cos(np.pi / 2 / 365.25),
                                        1, 0], atol=1e-6)  # fmt: skip
    day = 180 + 18.5 / 24  # 1 July of a 360-day year is day 181
    np.testing.assert_allclose(out[1, :2], [np.sin(2 * np.pi * day / 360),
                                            np.cos(2 * np.pi * day / 360)], atol=1e-6)  # fmt: skip
    np.testing.assert_allclose(out[1, 2], np.sin(2 * np.pi * 18.5 / 24), atol=1e-6)


def test_projected_grid_with_2d_lat_lon() -> None:
    y, x = np.meshgrid(np.arange(3.0), np.arange(4.0), indexing="ij")
    lat2, lon2 = 45.0 + y + 0.1 * x, 10.0 + 2 * x - 0.3 * y  # rotated, curvilinear
    out = feature_channels(["lat", "lon"], lat2, lon2, at("2020-01-01", "2020-01-02"))
    assert out.shape == (2, 4, 3, 4)
    np.testing.assert_allclose(out[1, 0], np.sin(np.deg2rad(lat2)), atol=1e-6)
    np.testing.assert_allclose(out[0, 3], np.cos(np.deg2rad(lon2)), atol=1e-6)
    mixed = feature_channels(["lat"], lat2[:, 0], lon2, None)  # 1-D lat with 2-D lon
    np.testing.assert_allclose(mixed[0, 0], np.sin(np.deg2rad(lat2[:, :1])) + 0 * lon2, atol=1e-6)
    with pytest.raises(ValueError):
        feature_channels(["lat"], lat2, lon2[:2], None)


def test_errors() -> None:
    with pytest.raises(UserError, match="unknown feature 'month': choose among lat, lon, doy"):
        check_features(["lat", "month"], WHERE)
    with pytest.raises(UserError, match="repeat"):
        check_features(["hour", "hour"], WHERE)
    assert check_features("hour", WHERE) == ["hour"] and check_features(None, WHERE) == []
    for times in (None, np.arange(3)):  # no time coordinate: reading gives sample numbers
        with pytest.raises(UserError, match=r"data file hr\.nc: the data has no time coordinate"):
            feature_channels(["lat", "doy"], LAT, LON, times, where="data file hr.nc")
    with pytest.raises(UserError, match=r"reaches 5e\+05, not degrees"):
        feature_channels(["lat"], np.array([0.0, 5e5]), LON, None)
    with pytest.raises(UserError, match="missing values"):
        feature_channels(["lon"], LAT, np.array([0.0, np.nan]), None)
    assert feature_channels(["lat", "lon"], LAT, LON, np.arange(2)).shape == (2, 4, 4, 5)
