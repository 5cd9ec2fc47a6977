"""ScoreAccumulator: scores of a split given chunk by chunk equal evaluate_method on the whole."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from weather_sr.errors import UserError
from weather_sr.evaluation import metrics
from weather_sr.evaluation.accumulate import ScoreAccumulator, evaluate_method

N, C, H, W, M = 7, 2, 16, 16, 4
CHUNKS = (3, 1, 3)


def assert_same(got: Any, want: Any, path: str = "result") -> None:
    """Nested dicts/lists equal: floats to rtol 1e-9, everything else (ints, None, str) exactly."""
    if isinstance(want, dict):
        assert isinstance(got, dict) and list(got) == list(want), path
        for key in want:
            assert_same(got[key], want[key], f"{path}[{key!r}]")
    elif isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), path
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            assert_same(g, w, f"{path}[{i}]")
    elif isinstance(want, float):
        assert isinstance(got, float) and math.isclose(got, want, rel_tol=1e-9), (path, got, want)
    else:
        assert type(got) is type(want) and got == want, (path, got, want)


def _chunked(
    truth: np.ndarray, pred: np.ndarray, mask: np.ndarray | None, sizes=CHUNKS, **options: Any
) -> dict[str, Any]:
    acc = ScoreAccumulator(**options)
    start = 0
    for n in sizes:
        part = slice(start, start + n)
        chunk_mask = mask if mask is None or mask.shape[0] == 1 else mask[part]
        acc.update(truth[part], pred[part], mask=chunk_mask)
        start += n
    assert start == truth.shape[0] == acc.n_fields
    return acc.result()


def _data(ensemble: bool, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centre = rng.normal(size=(N, C, H, W))
    truth = centre + rng.normal(size=centre.shape)
    shape = (N, M, C, H, W) if ensemble else (N, C, H, W)
    pred = (centre[:, None] if ensemble else centre) + 0.8 * rng.normal(size=shape) + 0.1
    truth[4, 1, 3, 5] = np.nan  # NaN truth: an invalid pixel
    return truth, pred


@pytest.mark.parametrize("ensemble", [False, True], ids=["deterministic", "ensemble"])
@pytest.mark.parametrize("with_lat", [False, True], ids=["uniform", "coslat"])
@pytest.mark.parametrize("window", ["none", "hann"])
def test_chunked_equals_whole(ensemble: bool, with_lat: bool, window: str) -> None:
    truth, pred = _data(ensemble)
    rng = np.random.default_rng(1)
    if with_lat:  # one mask shared by all fields, per channel
        mask = (rng.random((1, C, H, W)) > 0.2).astype(float)
    else:  # a mask per field
        mask = (rng.random((N, 1, H, W)) > 0.2).astype(float)
    options = {
        "lat": np.linspace(-70.0, 70.0, H) if with_lat else None,
        "channel_names": ["t2m", "tp"],
        "seed": 5,
        "window": window,
        "scale_factor": 4 if window == "hann" else None,  # both with and without above_lr
    }
    whole = evaluate_method(truth, pred, mask=mask, **options)
    assert whole["n_fields"] == N and whole["kind"] == ("ensemble" if ensemble else "deterministic")
    assert ("lsd_above_lr" in whole["mean"]) == (window == "hann")
    assert_same(_chunked(truth, pred, mask, **options), whole)


def test_rank_histogram_with_ties_is_exact_chunked() -> None:
    # rounded, half-zero "precipitation": most ranks are decided by the tie breaking
    rng = np.random.default_rng(2)
    truth = np.round(rng.gamma(1.0, 1.0, size=(N, C, H, W))) * (rng.random((N, C, H, W)) > 0.5)
    ens = np.round(rng.gamma(1.0, 1.0, size=(N, M, C, H, W))) * (
        rng.random((N, M, C, H, W)) > 0.5
    )
    assert (ens == truth[:, None]).any(axis=1).mean() > 0.5
    whole = evaluate_method(truth, ens, seed=3)
    for sizes in (CHUNKS, (1,) * N):
        assert_same(_chunked(truth, ens, None, sizes, seed=3), whole)
    counts = metrics.rank_histogram(truth, ens, seed=3)
    assert whole["rank_histogram"]["all"] == counts.sum(axis=0).tolist()
    # fields are numbered on across updates: the same field given again draws other ties
    acc = ScoreAccumulator(seed=3)
    acc.update(truth[:1], ens[:1])
    acc.update(truth[:1], ens[:1])
    twice = 2 * metrics.rank_histogram(truth[:1], ens[:1], seed=3).sum(axis=0)
    assert acc.result()["rank_histogram"]["all"] != twice.tolist()

def test_mismatched_chunks_and_empty_result_raise() -> None:
    truth, ens = _data(ensemble=True)
    acc = ScoreAccumulator()
    with pytest.raises(UserError, match="no fields"):
        acc.result()
    acc.update(truth[:2], ens[:2])
    with pytest.raises(UserError, match="3 members"):
        acc.update(truth[2:4], ens[2:4, :3])
    with pytest.raises(UserError, match="1 channels"):
        acc.update(truth[2:4, :1], ens[2:4, :, :1])
    with pytest.raises(UserError, match="deterministic"):
        acc.update(truth[2:4], ens[2:4, 0])
    assert acc.n_fields == 2  # the rejected chunks left the state as it was
    assert_same(acc.result(), evaluate_method(truth[:2], ens[:2]))
    with pytest.raises(UserError, match="channel_names"):
        ScoreAccumulator(channel_names=["a"]).update(truth, ens)
