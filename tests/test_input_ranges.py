"""The input range check (issue 21, deliver 3): the bound against a brute-force reading of the
rule, the training range stored by compute_stats, kelvin, the warning mode."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import xarray as xr

from weather_sr.data.normalise import Normalizer, compute_stats
from weather_sr.data.ranges import OUT_OF_RANGE_STD, bounds, check_input_range, is_kelvin
from weather_sr.data.transforms import Transform
from weather_sr.errors import UserError


def _fields(values: np.ndarray) -> xr.DataArray:
    c = values.shape[1]
    return xr.DataArray(values, dims=("sample", "channel", "y", "x"),
                        coords={"channel": [f"v{k}" for k in range(c)]})


def test_compute_stats_stores_the_training_range_of_the_transformed_values() -> None:
    rng = np.random.default_rng(0)
    values = rng.gamma(0.3, 4.0, (10, 2, 6, 5))
    values[3, 0, 2, 2] = np.nan
    train = [0, 2, 3, 5, 7]
    t = {"v1": Transform("v1", "log1p")}
    norm = compute_stats(_fields(values), train, "channel", transforms=t)
    seen = values[train].copy()
    seen[:, 1] = np.log1p(seen[:, 1])
    # to float64 rounding of (x - ref) + ref, ref the first field's mean
    atol = 1e-14 * float(np.nanmax(seen))
    np.testing.assert_allclose(norm.low, np.nanmin(seen, axis=(0, 2, 3)), rtol=0, atol=atol)
    np.testing.assert_allclose(norm.high, np.nanmax(seen, axis=(0, 2, 3)), rtol=0, atol=atol)
    back = Normalizer.from_dict(norm.to_dict())  # checkpoint round trip
    np.testing.assert_array_equal(back.low, norm.low)
    np.testing.assert_array_equal(back.high, norm.high)


def _normalizer(low: float | None, high: float | None, mean: float = 1.0, std: float = 0.5,
                transforms: dict | None = None) -> Normalizer:
    return Normalizer("channel", ["rain"], np.full((1, 1, 1), mean), np.full((1, 1, 1), std),
                      transforms or {}, None if low is None else np.array([low]),
                      None if high is None else np.array([high]))


def test_bounds_follow_the_rule() -> None:
    # a heavy tail: the range (30) is wider than 10 std (5): widened by the range
    lo, hi = bounds(_normalizer(0.0, 30.0))
    assert (lo[0], hi[0]) == (-30.0, 60.0)
    # a narrow range: widened by 10 std
    lo, hi = bounds(_normalizer(0.9, 1.1))
    assert (lo[0], hi[0]) == pytest.approx((0.9 - 5.0, 1.1 + 5.0))
    # an older checkpoint without the range: mean +- 10 std
    lo, hi = bounds(_normalizer(None, None))
    assert (lo[0], hi[0]) == pytest.approx((1.0 - 10 * 0.5, 1.0 + 10 * 0.5))
    assert OUT_OF_RANGE_STD == 10.0


def _brute_force_first(values: np.ndarray, lo: float, hi: float) -> int | None:
    for k in range(values.shape[0]):
        for v in values[k].ravel():
            if v < lo or v > hi:
                return k
    return None


@pytest.mark.parametrize("seed", range(5))
def test_the_field_named_is_the_first_out_of_range(seed: int) -> None:
    rng = np.random.default_rng(seed)
    values = rng.uniform(0.0, 30.0, (6, 1, 4, 4))
    for k in rng.choice(6, 2, replace=False):
        values[k, 0, rng.integers(4), rng.integers(4)] = rng.choice([-40.0, 75.0])
    expected = _brute_force_first(values[:, 0], -30.0, 60.0)
    with pytest.raises(UserError, match=rf"field {expected + 3} \(time t{expected}\): rain"):
        check_input_range(values, ["mm"], _normalizer(0.0, 30.0), "in.nc",
                          times=np.array([f"t{k}" for k in range(6)]), offset=3)
    within = np.clip(values, -30.0, 60.0)  # on the bound: allowed
    check_input_range(within, ["mm"], _normalizer(0.0, 30.0), "in.nc")


def test_transform_applies_before_the_bound() -> None:
    # log1p range [0, 3.4] (rain up to 29 mm): 200 mm is log1p 5.3, inside [-3.4, 6.8]
    norm = _normalizer(0.0, 3.4, mean=0.3, std=0.2,
                       transforms={"rain": Transform("rain", "log1p")})
    check_input_range(np.full((1, 1, 2, 2), 200.0), ["mm"], norm, "in.nc")
    with pytest.raises(UserError, match=r"log1p values"):
        check_input_range(np.full((1, 1, 2, 2), 5000.0), ["mm"], norm, "in.nc")


def test_negative_kelvin_and_the_warning_mode() -> None:
    assert is_kelvin("K") and is_kelvin("kelvin") and not is_kelvin("degC")
    assert not is_kelvin("not a unit")
    norm = Normalizer("channel", ["t"], np.full((1, 1, 1), 280.0), np.full((1, 1, 1), 600.0),
                      low=np.array([200.0]), high=np.array([320.0]))
    values = np.full((2, 1, 3, 3), 280.0)
    values[1, 0, 0, 0] = -1.0  # inside mean +- 10 std (std huge), but below absolute zero
    with pytest.raises(UserError, match=r"field 1 .*t has values down to -1 K, below absolute"):
        check_input_range(values, ["K"], norm, "in.nc")
    check_input_range(values, ["degC"], norm, "in.nc")  # not an absolute temperature
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        check_input_range(values, ["K"], norm, "in.nc", allow=True)
    assert len(seen) == 1 and "--allow-out-of-range" in str(seen[0].message)
