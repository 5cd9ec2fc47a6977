"""Regridding of predictors onto the HR grid: scipy references, seams, accuracy, errors (c)."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
from scipy.interpolate import RegularGridInterpolator, interpn

from weather_sr.data.regrid import REGRID_METHODS, regrid_time_check, regrid_to
from weather_sr.errors import UserError

WHERE = "input file era5.nc"
SCIPY = {"bilinear": "linear", "bicubic": "cubic_legacy", "nearest": "nearest"}


def fields(values: np.ndarray, y: np.ndarray, x: np.ndarray, **attrs: object) -> xr.DataArray:
    """Standardised fields [sample, channel, y, x] as reading.open_fields returns them."""
    n, c = values.shape[:2]
    times = np.datetime64("2020-01-01T00") + np.arange(n) * np.timedelta64(6, "h")
    return xr.DataArray(
        values,
        dims=("sample", "channel", "y", "x"),
        coords={
            "time": ("sample", times),
            "channel": [f"v{i}" for i in range(c)],
            "y": y,
            "x": xr.DataArray(x, dims="x", attrs={"units": "degrees_east"}),
        },
        attrs={"source": ["era5.nc"], "units": ["K"] * c, "periodic": False},
    )


def reference(a: np.ndarray, y: np.ndarray, x: np.ndarray, ty, tx, method: str) -> np.ndarray:
    """scipy's RegularGridInterpolator at the outer product of ``ty`` and ``tx``, per field."""
    pts = np.stack(np.meshgrid(ty, tx, indexing="ij"), axis=-1)
    flat = a.reshape(-1, *a.shape[-2:])
    out = [RegularGridInterpolator((y, x), f, method=method)(pts) for f in flat]
    return np.stack(out).reshape(*a.shape[:-2], len(ty), len(tx))


@pytest.fixture
def shifted() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A coarse input grid (1.3 deg, offset) and an HR grid (0.25 deg) it does not nest in."""
    rng = np.random.default_rng(0)
    y = 40.1 + 1.3 * np.arange(9)
    x = -10.35 + 1.3 * np.arange(12)
    ty = 41.01 + 0.25 * np.arange(36)  # no target on an input grid line (no ties for nearest)
    tx = -9.02 + 0.25 * np.arange(48)
    return rng.normal(size=(3, 2, 9, 12)), y, x, ty, tx


@pytest.mark.parametrize("method", REGRID_METHODS)
def test_matches_scipy_on_non_nesting_grid(shifted, method: str) -> None:
    a, y, x, ty, tx = shifted
    out = regrid_to(fields(a, y, x), ty, tx, method, periodic=False, where=WHERE)
    assert out.dims == ("sample", "channel", "y", "x") and out.shape == (3, 2, 36, 48)
    np.testing.assert_allclose(out.values, reference(a, y, x, ty, tx, SCIPY[method]), atol=1e-12)
    np.testing.assert_array_equal(out["y"].values, ty)
    assert list(out["channel"].values) == ["v0", "v1"] and out["time"].shape == (3,)
    assert "periodic" not in out.attrs and out.attrs["source"] == ["era5.nc"]


def test_latitude_order_dtype_and_dask(shifted) -> None:
    a, y, x, ty, tx = shifted
    want = regrid_to(fields(a, y, x), ty, tx, "bicubic", False, WHERE).values
    flipped = fields(a[:, :, ::-1].astype(np.float32), y[::-1], x)
    lazy = regrid_to(flipped.chunk({"sample": 1}), ty[::-1], tx, "bicubic", False, WHERE)
    assert lazy.chunks is not None and lazy.dtype == np.float32  # still lazy
    np.testing.assert_allclose(lazy.values, want[:, :, ::-1], atol=1e-5)


@pytest.mark.parametrize("method", ["bilinear", "nearest"])
def test_periodic_seam_both_conventions(method: str) -> None:
    rng = np.random.default_rng(1)
    x = 2.5 * np.arange(144)  # 0 .. 357.5
    y = -60.0 + 5.0 * np.arange(20)
    a = rng.normal(size=(2, 1, 20, 144))
    tx = np.array([358.1, 359.0, -1.0, -0.4, 0.3, 180.2])
    ty = np.array([-50.3, 0.4, -12.6])
    out = regrid_to(fields(a, y, x), ty, tx, method, periodic=True, where=WHERE)
    # explicit wrap: the column at -2.5 (= 357.5) before and at 360 (= 0) after
    xw = np.concatenate([[-2.5], x, [360.0]])
    aw = np.concatenate([a[..., -1:], a, a[..., :1]], axis=-1)
    txw = np.where(tx > 359.99, tx - 360, tx)  # the reference grid spans -2.5 .. 360
    np.testing.assert_allclose(out.values, reference(aw, y, xw, ty, txw, SCIPY[method]), atol=1e-12)
    np.testing.assert_array_equal(out["x"].values, tx)  # targets keep their own convention


def test_periodic_seam_bicubic_and_unsorted_input() -> None:
    rng = np.random.default_rng(2)
    x = 2.5 * np.arange(144)
    y = 2.5 * np.arange(12)
    a = rng.normal(size=(1, 1, 12, 144))
    roll = np.roll(np.arange(144), 72)  # stored as -180 .. 177.5
    da = fields(a[..., roll], y, np.where(x[roll] >= 180, x[roll] - 360, x[roll]))
    tx, ty = np.array([359.0, -1.0, 0.7]), np.array([5.1, 20.3])
    out = regrid_to(da, ty, tx, "bicubic", periodic=True, where=WHERE)
    xw = np.concatenate([x - 360, x, x + 360])  # three full copies: the spline sees no seam
    ref = reference(np.concatenate([a, a, a], axis=-1), y, xw, ty, tx, "cubic_legacy")
    np.testing.assert_allclose(out.values, ref, atol=1e-4)  # PAD columns: the seam decays
    np.testing.assert_allclose(out.values[..., 0], out.values[..., 1], atol=1e-12)


@pytest.mark.parametrize(("method", "order"), [("bilinear", 2), ("bicubic", 4), ("nearest", 1)])
def test_smooth_field_order_of_accuracy(method: str, order: int) -> None:
    def f(lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
        la, lo = np.deg2rad(lat)[:, None], np.deg2rad(lon)[None, :]
        return np.sin(3 * la) * np.cos(2 * lo) + np.cos(la + lo)

    ty, tx = np.linspace(-30, 30, 41), np.linspace(10, 70, 43)
    errors = []
    for h in (4.0, 2.0):
        y, x = np.arange(-34.3, 36, h), np.arange(6.1, 75, h)
        da = fields(f(y, x)[None, None], y, x)
        out = regrid_to(da, ty, tx, method, periodic=False, where=WHERE).values[0, 0]
        errors.append(np.abs(out - f(ty, tx)).max())
    assert errors[1] < (0.1 if method == "nearest" else 0.01)
    assert errors[0] / errors[1] > 0.75 * 2**order  # halving h divides the error by ~2**order


def test_nan_stays_within_the_stencil(shifted) -> None:
    a, y, x, ty, tx = shifted
    a = a.copy()
    a[0, 0, 4, 5] = np.nan
    for method in REGRID_METHODS:
        out = regrid_to(fields(a, y, x), ty, tx, method, False, WHERE).values
        if method != "bicubic":  # scipy gives NaN exactly where a NaN has a nonzero weight
            ref = reference(a, y, x, ty, tx, SCIPY[method])
            np.testing.assert_allclose(out, ref, atol=1e-12)
        near = (np.abs(ty - y[4]) < 2 * 1.3)[:, None] & (np.abs(tx - x[5]) < 2 * 1.3)[None, :]
        nan = np.isnan(out[0, 0])
        assert nan.any() and not nan[~near].any() and not np.isnan(out[1:]).any()
        assert not np.isnan(out[0, 1]).any()
    on_line = regrid_to(fields(a, y, x), y[3:4], x[5:6] + 0.4, "bilinear", False, WHERE).values
    assert np.isfinite(on_line[0, 0]).all()  # the NaN row has weight 0 on the line y[3]


def test_non_periodic_longitude_conventions_and_edges() -> None:
    rng = np.random.default_rng(3)
    y, x = np.arange(10.0, 20.0), np.arange(-30.0, 31.0, 2.0)
    a = rng.normal(size=(1, 1, 10, 31))
    da = fields(a, y, x)
    out = regrid_to(da, y, np.array([340.0, 350.5, 0.0, 10.0]), "bilinear", False, WHERE)
    want = regrid_to(da, y, np.array([-20.0, -9.5, 0.0, 10.0]), "bilinear", False, WHERE)
    np.testing.assert_allclose(out.values, want.values)
    # within half a cell beyond the outer centres: the edge value (as pairs.upsample replicates)
    edge = regrid_to(da, np.array([9.6, 19.4]), np.array([-30.9]), "bicubic", False, WHERE)
    np.testing.assert_allclose(edge.values[0, 0, :, 0], a[0, 0, [0, -1], 0], atol=1e-12)


def test_out_of_extent_names_file_and_extent() -> None:
    y, x = np.arange(10.0, 20.0), np.arange(0.0, 10.0)
    da = fields(np.zeros((1, 1, 10, 10)), y, x)
    with pytest.raises(UserError, match=r"era5\.nc.*beyond the input grid \(y 9\.5\.\.19\.5"):
        regrid_to(da, np.array([15.0, 21.0]), x, "bilinear", False, WHERE)
    with pytest.raises(UserError, match=r"era5\.nc"):
        regrid_to(da, y, np.array([-3.0]), "nearest", False, WHERE)
    with pytest.raises(UserError, match=r"era5\.nc.*beyond"):  # latitude is never periodic
        regrid_to(da, np.array([25.0]), x, "bilinear", True, WHERE)
    with pytest.raises(UserError, match="choose one of bilinear, bicubic, nearest"):
        regrid_to(da, y, x, "conservative", False, WHERE)
    with pytest.raises(UserError, match="at least 4"):
        regrid_to(da.isel(y=slice(0, 3)), [10.5], x, "bicubic", False, WHERE)


def test_time_check_indices_and_units() -> None:
    t_in = np.datetime64("2020-01-01T00", "s") + np.arange(8) * np.timedelta64(3, "h")
    t_out = np.array(["2020-01-01T06", "2020-01-01T06", "2020-01-01T21"], "datetime64[ns]")
    np.testing.assert_array_equal(regrid_time_check(t_in, t_out, WHERE), [2, 2, 7])
    np.testing.assert_array_equal(regrid_time_check(t_in[::-1], t_in[:2], WHERE), [7, 6])


def test_time_check_lists_missing_times() -> None:
    t_in = np.arange("2020-01-01", "2020-01-05", dtype="datetime64[D]")
    t_out = np.arange("2020-01-03", "2020-01-12", dtype="datetime64[D]")
    with pytest.raises(UserError) as err:
        regrid_time_check(t_in, t_out, WHERE)
    msg = str(err.value)
    assert "era5.nc" in msg and "7 target time(s) missing" in msg and "\n" not in msg
    assert "2020-01-05, 2020-01-06" in msg and "and 2 more" in msg and "2020-01-03" not in msg
    with pytest.raises(UserError, match="more than once"):
        regrid_time_check(np.repeat(t_in, 2), t_in, WHERE)


def test_bicubic_equals_scipy_cubic_to_its_solver_tolerance(shifted) -> None:
    """scipy's current "cubic" (iterative solver) agrees with our exact spline (and interpn)."""
    a, y, x, ty, tx = shifted
    out = regrid_to(fields(a, y, x), ty, tx, "bicubic", False, WHERE).values
    pts = np.stack(np.meshgrid(ty, tx, indexing="ij"), axis=-1)
    np.testing.assert_allclose(out[0, 0], interpn((y, x), a[0, 0], pts, method="cubic"), atol=1e-3)
