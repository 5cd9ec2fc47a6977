"""``--constrain``: the block-mean correction (exact, zero on consistent fields, missing LR cells
left alone, non-negative fields kept non-negative, smooth), the x0 projection of any denoiser,
the LR recovered from a condition, the sampling options and their refusals.

End to end through ``downscale`` and ``evaluate``, with the provenance of the consistency:
``tests/test_constraint_downscale.py``."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from weather_sr.core.process import eps_to_x0, project_x0
from weather_sr.core.sampler_defaults import CONSTRAINTS, DEFAULT_CONSTRAINT
from weather_sr.core.schedule import make_schedule
from weather_sr.data.normalise import Normalizer
from weather_sr.data.pairs import coarsen
from weather_sr.data.transforms import Transform
from weather_sr.errors import UserError
from weather_sr.inference.constraint import (
    BlockConstraint,
    additive,
    blocks,
    check_constraint,
    multiplicative,
    spread,
)
from weather_sr.inference.ensemble import SamplingOptions

S = 4
LAT = np.linspace(-75.0, 80.0, 24)  # rows of [.., 24, 32] fields


def _fields(seed: int, shape: tuple[int, ...] = (2, 3, 24, 32)) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g, dtype=torch.float64)


@pytest.mark.parametrize("lat", [None, LAT], ids=["plain", "cos-latitude"])
def test_additive_block_means_equal_the_lr(lat: np.ndarray | None) -> None:
    x, lr = _fields(0), 3.0 * _fields(1, (2, 3, 6, 8))
    for periodic in (False, True):
        y = additive(x, lr, S, lat=lat, periodic=periodic)
        np.testing.assert_allclose(coarsen(y, S, lat), lr, rtol=0, atol=1e-13)


@pytest.mark.parametrize("lat", [None, LAT], ids=["plain", "cos-latitude"])
def test_additive_is_the_limit_of_the_smoothing_iteration(lat: np.ndarray | None) -> None:
    """c = U((C U)^-1 d), solved per axis, is where c <- c + U(d - C(c)) goes from c = 0."""
    x, lr = _fields(10), _fields(11, (2, 3, 6, 8))
    d = lr - coarsen(x, S, lat)
    c = torch.zeros_like(x)
    for _ in range(200):  # contracts by 0.75 or better per step
        c = c + spread(d - coarsen(c, S, lat), S, True)
    np.testing.assert_allclose(additive(x, lr, S, lat=lat, periodic=True), x + c, rtol=0,
                               atol=1e-12)


@pytest.mark.parametrize("lat", [None, LAT], ids=["plain", "cos-latitude"])
def test_a_consistent_field_is_not_changed(lat: np.ndarray | None) -> None:
    x = _fields(2)
    assert torch.equal(additive(x, coarsen(x, S, lat), S, lat=lat), x)  # bit for bit
    pos = x.abs()
    np.testing.assert_allclose(multiplicative(pos, coarsen(pos, S, lat), S, lat=lat), pos,
                               rtol=1e-14, atol=0)


def test_blocks_of_missing_lr_cells_are_left_alone() -> None:
    x, lr = _fields(3), _fields(4, (2, 3, 6, 8))
    lr[0, 1, 2, 3] = lr[1, 2, 0, 0] = torch.nan
    for fix in (additive, multiplicative):
        y = fix(x.abs(), lr, S)
        hole = blocks(torch.isnan(lr), S)
        assert torch.equal(y[hole], x.abs()[hole])
        ok = torch.isfinite(lr)
        want = lr.clamp_min(0) if fix is multiplicative else lr
        np.testing.assert_allclose(coarsen(y, S)[ok], want[ok], rtol=0, atol=1e-12)


@pytest.mark.parametrize("lat", [None, LAT], ids=["plain", "cos-latitude"])
def test_multiplicative_keeps_non_negative_fields_non_negative(lat: np.ndarray | None) -> None:
    """Precipitation-like: mostly zeros, ratios up to 1e4, blocks of zeros under a wet LR cell
    (additive fallback) and a dry LR cell under a wet block."""
    g = torch.Generator().manual_seed(5)
    x = (torch.randn((2, 2, 24, 32), generator=g, dtype=torch.float64) - 0.8).clamp_min(0) ** 3
    x[0, 0, :8, :8] = 0.0  # four blocks of zeros
    lr = coarsen(x, S, lat) * torch.exp(3 * torch.randn((2, 2, 6, 8), generator=g,
                                                         dtype=torch.float64))
    lr[0, 0, :2, :2] = torch.tensor([[0.5, 2.0], [1e-3, 0.0]])
    lr[1, 1, 3, 3] = 0.0
    y = multiplicative(x, lr, S, lat=lat)
    assert bool((y >= 0).all())
    np.testing.assert_allclose(coarsen(y, S, lat), lr, rtol=1e-12, atol=1e-15)
    assert bool((y[0, 0, :4, 4:8] == 2.0).all())  # a block of zeros gets its LR uniformly
    assert bool((y[1, 1, 12:16, 12:16] == 0).all())  # a dry LR cell makes its block dry


def test_the_correction_is_smooth_where_the_departure_is() -> None:
    """A departure that varies linearly over the LR grid: the piecewise-constant correction R(d)
    jumps at every block edge, the smooth one rises by about 1/s of that per pixel."""
    x = torch.zeros((1, 1, 24, 32), dtype=torch.float64)
    ramp = torch.arange(8, dtype=torch.float64).expand(1, 1, 6, 8)
    c = additive(x, ramp, S) - x
    jump = float(torch.diff(blocks(ramp, S), dim=-1).abs().max())
    inner = c[..., 4:-4]  # away from the clamped edges of the bilinear spread
    assert float(torch.diff(inner, dim=-1).abs().max()) < 0.4 * jump


def test_project_x0_moves_the_x0_estimate_exactly() -> None:
    sched = make_schedule("linear", 50)
    x_t, eps = _fields(6, (3, 2, 8, 8)), _fields(7, (3, 2, 8, 8))  # float64: the algebra
    t = torch.tensor([50, 20, 1])

    def den(x: torch.Tensor, y: torch.Tensor, tt: torch.Tensor, **kw: bool) -> torch.Tensor:
        return eps

    assert torch.equal(project_x0(den, sched, lambda z: z)(x_t, x_t, t), eps)
    shift = project_x0(den, sched, lambda z: z + 0.5)(x_t, x_t, t)
    moved = eps_to_x0(sched, x_t.double(), t, shift.double()) - eps_to_x0(
        sched, x_t.double(), t, eps.double())
    np.testing.assert_allclose(moved, 0.5, rtol=0, atol=1e-9)  # sigma_T / a_T ~ 1e2


def test_block_constraint_of_normalised_fields() -> None:
    """In physical units through the normaliser (per-pixel statistics too), non-negative for a
    transformed channel; a consistent field comes back bit for bit."""
    g = torch.Generator().manual_seed(9)
    mean, std = np.full((2, 24, 32), 2.0), 1 + np.random.default_rng(0).random((2, 24, 32))
    norm = Normalizer("pixel", ["a", "b"], mean, std, {"a": Transform("a", "power", 0.5)})
    x = torch.randn((4, 2, 24, 32), generator=g).float()
    phys = norm.denormalise(x.double())
    lr = coarsen(phys, S) + torch.randn((4, 2, 6, 8), generator=g, dtype=torch.float64).abs()
    con = BlockConstraint(torch.cat([lr, coarsen(phys, S)]), S, norm)
    assert con.positive == [True, False]
    fixed = norm.denormalise(con.normalised(x, [0, 1, 2, 3]).double())
    np.testing.assert_allclose(coarsen(fixed, S), lr, rtol=1e-5, atol=1e-5)
    assert bool((fixed[:, 0] >= 0).all())
    assert torch.equal(con.normalised(x, [4, 5, 6, 7]), x)


def test_options_refuse_an_unknown_constraint_in_one_line() -> None:
    assert DEFAULT_CONSTRAINT == "none" == SamplingOptions().constrain
    assert set(CONSTRAINTS) == {"none", "lr-mean", "lr-mean-x0"}
    with pytest.raises(UserError) as info:
        SamplingOptions(constrain="lr_mean")
    assert str(info.value).count("\n") == 0 and "--constrain 'lr_mean'" in str(info.value)


def _model(mode: str, spectral: object = None) -> SimpleNamespace:
    spec = SimpleNamespace(mode=mode, targets=["a"], inputs=["p"], base_index=None)
    meta = SimpleNamespace(condition_spec=lambda: spec)
    return SimpleNamespace(meta=meta, spectral=spectral)


def test_models_without_lr_blocks_or_one_x0_are_refused() -> None:
    for constrain in ("lr-mean", "lr-mean-x0"):
        with pytest.raises(UserError, match="regridded from another grid"):
            check_constraint(_model("regrid"), constrain)
        with pytest.raises(UserError, match="no checkpoint metadata"):
            check_constraint(SimpleNamespace(meta=None), constrain)
    check_constraint(_model("regrid"), "none")
    per_coefficient = SimpleNamespace(shift=SimpleNamespace(none=False))
    own = _model("own", per_coefficient)
    check_constraint(own, "lr-mean")
    with pytest.raises(UserError, match="per F_R coefficient"):
        check_constraint(own, "lr-mean-x0")
