"""Per-variable transforms: round trips, non-negativity, dict round trip, errors (e)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import xarray as xr
import yaml

from weather_sr.data.transforms import (
    Transform,
    check_non_negative,
    parse_transforms,
    transforms_from_dict,
    transforms_to_dict,
)
from weather_sr.errors import UserError

WHERE = "data.transforms"
KINDS = [Transform("tp", "log1p"), Transform("ws", "power", 0.5), Transform("x", "power", 0.3)]


@pytest.mark.parametrize("t", KINDS, ids=lambda t: t.spec)
def test_round_trip_numpy_and_torch(t: Transform) -> None:
    x = np.concatenate([[0.0, 1e-6, 0.5, 1.0], np.random.default_rng(0).gamma(0.5, 4.0, 200)])
    y = t.forward(x)
    np.testing.assert_allclose(t.inverse(y), x, rtol=1e-12, atol=1e-15)
    x32 = x.astype(np.float32)
    assert t.forward(x32).dtype == np.float32 and t.inverse(t.forward(x32)).dtype == np.float32
    np.testing.assert_allclose(t.inverse(t.forward(x32)), x32, rtol=1e-5, atol=1e-7)
    xt = torch.as_tensor(x32)
    yt = t.forward(xt)
    assert isinstance(yt, torch.Tensor) and yt.dtype == torch.float32
    np.testing.assert_allclose(yt.numpy(), y.astype(np.float32), rtol=1e-5, atol=1e-7)
    back = t.inverse(t.forward(torch.as_tensor(x)))
    assert back.dtype == torch.float64
    np.testing.assert_allclose(back.numpy(), x, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("t", KINDS, ids=lambda t: t.spec)
def test_inverse_is_never_negative_and_zero_maps_to_zero(t: Transform) -> None:
    y = np.array([-1e30, -1e6, -50.0, -1.0, -1e-9, 0.0, 1e-9, 3.0, 20.0])
    assert (t.inverse(y) >= 0).all()
    assert (t.inverse(torch.as_tensor(y, dtype=torch.float32)) >= 0).all()
    assert t.inverse(t.forward(np.zeros(3))).tolist() == [0.0, 0.0, 0.0]
    assert t.inverse(t.forward(torch.zeros(2))).tolist() == [0.0, 0.0]
    assert t.forward(np.array([-1e-12]))[0] == 0.0  # packing noise counts as 0
    assert np.isnan(t.inverse(np.array([np.nan])))[0]  # missing stays missing


def test_closed_forms_and_xarray() -> None:
    np.testing.assert_allclose(Transform("tp", "log1p").forward(np.e - 1), 1.0)
    np.testing.assert_allclose(Transform("ws", "power", 0.5).forward(9.0), 3.0)
    np.testing.assert_allclose(Transform("ws", "power", 0.5).inverse(3.0), 9.0)
    da = xr.DataArray(np.array([0.0, 4.0]), dims="x")
    out = Transform("ws", "power", 0.5).forward(da)
    assert isinstance(out, xr.DataArray) and out.values.tolist() == [0.0, 2.0]


def test_device_kept() -> None:
    t = Transform("tp", "log1p")
    x = torch.ones(3, device="cpu", requires_grad=True)
    y = t.forward(x)
    assert y.device == x.device
    y.sum().backward()  # differentiable: usable inside a loss
    np.testing.assert_allclose(x.grad.numpy(), 0.5)


def test_parse_yaml_spec_and_dict_round_trip() -> None:
    spec = yaml.safe_load("transforms: {tp: log1p, wind: power:0.5, q: ' Power : 1 '}")
    got = parse_transforms(spec["transforms"], ["t2m", "tp", "wind", "q"], WHERE)
    assert got == {
        "tp": Transform("tp", "log1p"),
        "wind": Transform("wind", "power", 0.5),
        "q": Transform("q", "power", 1.0),
    }
    assert [t.spec for t in got.values()] == ["log1p", "power:0.5", "power:1"]
    stored = json.loads(json.dumps(transforms_to_dict(got)))  # plain JSON types
    assert transforms_from_dict(stored) == got
    assert Transform.from_dict(got["wind"].to_dict()) == got["wind"]
    assert parse_transforms(None, ["t2m"], WHERE) == {} and transforms_from_dict(None) == {}


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ({"t2m": "log1p", "rain": "log1p"}, "'rain', which is not.*among t2m, tp"),
        ({"tp": "sqrt"}, "unknown transform 'sqrt' of tp: choose log1p or power:P"),
        ({"tp": "log1p:2"}, "unknown transform"),
        ({"tp": "power"}, "unknown transform"),
        ({"tp": "power:1.5"}, r"exponent must be in \(0, 1\]"),
        ({"tp": "power:0"}, "exponent"),
        ({"tp": "power:abc"}, "exponent"),
        ({"tp": {"power": 0.5}}, "give a string"),
        (["tp"], "give a mapping"),
    ],
)
def test_parse_errors(spec: object, match: str) -> None:
    with pytest.raises(UserError, match=match) as err:
        parse_transforms(spec, ["t2m", "tp"], WHERE)  # type: ignore[arg-type]
    assert str(err.value).startswith(WHERE) and "\n" not in str(err.value)


def test_check_non_negative() -> None:
    where = "data file hr.nc"
    check_non_negative(np.array([0.0, 1.0, np.nan, 5.0]), "tp", where)
    check_non_negative(np.array([-1e-9, 1.0, 300.0]), "tp", where)  # packing noise
    check_non_negative(np.full(3, np.nan), "tp", where)
    check_non_negative(torch.tensor([0.0, 2.0]), "tp", where)
    bad = xr.DataArray(np.array([[1.0, -0.5], [2.0, 3.0]]), dims=("y", "x"))
    with pytest.raises(UserError) as err:
        check_non_negative(bad, "tp", where)
    msg = str(err.value)
    assert "hr.nc" in msg and "variable tp" in msg and "-0.5" in msg and "\n" not in msg
    with pytest.raises(UserError, match="tp"):
        check_non_negative(torch.tensor([-1.0, 2.0]), "tp", where)


def test_invalid_dataclass_is_a_programming_error() -> None:
    for kind, p in (("log1p", 0.5), ("power", None), ("power", 2.0), ("exp", None)):
        with pytest.raises(ValueError):
            Transform("x", kind, p)
