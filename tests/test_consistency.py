"""evaluation.consistency: members averaged back onto the LR grid against the LR input,
checked against a brute-force loop over blocks, members and fields."""

from __future__ import annotations

import math

import numpy as np
import pytest

from weather_sr.errors import UserError
from weather_sr.evaluation.consistency import ConsistencyAccumulator


def _brute(lr: np.ndarray, ens: np.ndarray, s: int, lat: np.ndarray | None):
    """Per channel (rmse, max_abs) by explicit loops; NaN pixels and NaN LR cells left out."""
    n, m, c, hh, ww = ens.shape
    out = []
    for k in range(c):
        sq, count, big = 0.0, 0, 0.0
        for f in range(n):
            for i in range(m):
                for by in range(hh // s):
                    for bx in range(ww // s):
                        num = den = 0.0
                        for yy in range(by * s, by * s + s):
                            wgt = 1.0 if lat is None else max(math.cos(math.radians(lat[yy])), 0)
                            for xx in range(bx * s, bx * s + s):
                                v = ens[f, i, k, yy, xx]
                                if np.isfinite(v):
                                    num += wgt * v
                                    den += wgt
                        if den == 0 or not np.isfinite(lr[f, k, by, bx]):
                            continue
                        d = num / den - lr[f, k, by, bx]
                        sq, count, big = sq + d * d, count + 1, max(big, abs(d))
        out.append((math.sqrt(sq / count), big))
    return out


@pytest.mark.parametrize("weighted", [False, True])
def test_equals_a_brute_force_loop_and_chunks_add_up(weighted: bool) -> None:
    rng = np.random.default_rng(0)
    s, n, m, c, h, w = 2, 3, 2, 2, 6, 8
    ens = rng.normal(size=(n, m, c, h, w))
    ens[1, 0, 1, 2, 3] = np.nan  # a missing pixel
    lr = rng.normal(size=(n, c, h // s, w // s))
    lr[2, 0, 1, 1] = np.nan  # a missing LR cell
    lat = np.linspace(-60, 70, h) if weighted else None
    acc = ConsistencyAccumulator(s, lat)
    acc.update(lr[:1], ens[:1])
    acc.update(lr[1:], ens[1:])
    got = acc.result(["a", "b"])
    for k, (rmse, big) in enumerate(_brute(lr, ens, s, lat)):
        name = "ab"[k]
        assert got[name]["rmse"] == pytest.approx(rmse, rel=1e-12)
        assert got[name]["max_abs"] == pytest.approx(big, rel=1e-12)


def test_block_constant_members_are_consistent_and_an_offset_is_measured() -> None:
    rng = np.random.default_rng(1)
    lr = rng.normal(size=(2, 1, 3, 4))
    up = np.repeat(np.repeat(lr, 4, axis=-2), 4, axis=-1)  # each block constant at its LR value
    acc = ConsistencyAccumulator(4, np.linspace(-80, 80, 12))
    acc.update(lr, np.stack([up, up + 0.25], axis=1))
    got = acc.result(["x"])["x"]
    assert got["max_abs"] == pytest.approx(0.25, abs=1e-12)
    assert got["rmse"] == pytest.approx(math.sqrt(0.25**2 / 2), abs=1e-12)
    det = ConsistencyAccumulator(4)
    det.update(lr, up)  # a deterministic prediction [n, C, H, W]
    assert det.result(["x"])["x"] == {"rmse": 0.0, "max_abs": 0.0}


def test_a_channel_without_a_finite_cell_scores_none() -> None:
    acc = ConsistencyAccumulator(2)
    lr = np.zeros((1, 2, 2, 2))
    lr[:, 1] = np.nan
    acc.update(lr, np.ones((1, 3, 2, 4, 4)))
    assert acc.result(["a", "b"]) == {"a": {"rmse": 1.0, "max_abs": 1.0},
                                      "b": {"rmse": None, "max_abs": None}}


def test_mismatched_shapes_and_no_fields_are_errors() -> None:
    acc = ConsistencyAccumulator(2)
    with pytest.raises(UserError, match="does not match"):
        acc.update(np.zeros((1, 1, 3, 3)), np.zeros((1, 1, 8, 8)))
    with pytest.raises(UserError, match="no fields"):
        acc.result(["x"])


def test_a_block_with_a_masked_pixel_is_left_out() -> None:
    """With a mask, an LR cell whose block holds an invalid pixel is not scored: the block
    mean of what is left would not be the block mean that made the LR."""
    rng = np.random.default_rng(3)
    ens = rng.normal(size=(2, 3, 1, 8, 8))
    lr = ens.mean(axis=1).reshape(2, 1, 4, 2, 4, 2).mean(axis=(3, 5))
    mask = np.ones((2, 1, 8, 8))
    mask[0, 0, 0, 0] = 0  # one pixel of block (0, 0) of field 0
    acc = ConsistencyAccumulator(2)
    acc.update(lr, ens, mask)
    keep = np.ones((2, 1, 4, 4), bool)
    keep[0, 0, 0, 0] = False
    coarse = ens.reshape(2, 3, 1, 4, 2, 4, 2).mean(axis=(4, 6))
    d = (coarse - lr[:, None])[np.broadcast_to(keep[:, None], coarse.shape)]
    got = acc.result(["x"])["x"]
    assert got["rmse"] == pytest.approx(math.sqrt((d**2).mean()), rel=1e-12)
    assert got["max_abs"] == pytest.approx(np.abs(d).max(), rel=1e-12)
