"""Noise schedules: closed forms, conventions (length T + 1, index 0 = t 0), errors."""

from __future__ import annotations

import math

import pytest
import torch

from weather_sr.core.schedule import (
    NoiseSchedule,
    cosine_schedule,
    gather,
    linear_schedule,
    make_schedule,
)
from weather_sr.errors import UserError


def test_linear_schedule_conventions() -> None:
    sch = linear_schedule(T=1000)
    for v in (sch.betas, sch.alphas, sch.alpha_bars, sch.posterior_variances):
        assert v.dtype == torch.float64 and v.shape == (1001,)
    assert sch.betas[0] == 0 and sch.alpha_bars[0] == 1
    assert sch.betas[1].item() == pytest.approx(1e-4) and sch.betas[-1].item() == pytest.approx(
        0.02
    )
    torch.testing.assert_close(sch.alphas, 1 - sch.betas)
    # alpha_bar_t = prod_{s <= t} (1 - beta_s), checked by an independent loop
    prod = 1.0
    for t in (1, 2, 10, 500, 1000):
        prod = math.prod(1 - sch.betas[s].item() for s in range(1, t + 1))
        assert sch.alpha_bars[t].item() == pytest.approx(prod, rel=1e-12)
    assert 0 < sch.alpha_bars[-1] < 1e-4


def test_posterior_variance_closed_form() -> None:
    sch = linear_schedule(T=50)
    assert sch.posterior_variances[1] == 0  # x_0 is known given x_1 and x_0
    for t in (2, 7, 50):
        ab, abp, b = (sch.alpha_bars[t].item(), sch.alpha_bars[t - 1].item(), sch.betas[t].item())
        assert sch.posterior_variances[t].item() == pytest.approx((1 - abp) / (1 - ab) * b)
    assert bool((sch.posterior_variances[1:] <= sch.betas[1:]).all())


def test_cosine_schedule_matches_closed_form() -> None:
    T, s = 1000, 0.008
    sch = cosine_schedule(T, s)

    def f(t: float) -> float:
        return math.cos((t / T + s) / (1 + s) * math.pi / 2) ** 2

    unclipped = (sch.betas[1:] < 0.999).nonzero().flatten() + 1
    assert len(unclipped) >= T - 2  # the clip only bites at the very end
    for t in [*unclipped.tolist()[::37], 1, int(unclipped[-1])]:
        assert sch.alpha_bars[t].item() == pytest.approx(f(t) / f(0), rel=1e-9)
    assert sch.betas.max().item() <= 0.999


def test_make_schedule_scales_linear_betas() -> None:
    sch = make_schedule("linear", 200)
    assert sch.T == 200
    assert sch.betas[1].item() == pytest.approx(5e-4) and sch.betas[-1].item() == pytest.approx(0.1)
    ref = make_schedule("linear", 1000)
    assert sch.alpha_bars[-1].item() == pytest.approx(ref.alpha_bars[-1].item(), rel=0.5)
    torch.testing.assert_close(
        make_schedule("cosine", 100).alpha_bars, cosine_schedule(100).alpha_bars
    )


def test_bad_input_raises_value_error_not_user_error() -> None:
    # core states what it expected and got; naming config keys is config.validate's job
    with pytest.raises(ValueError, match=r"expected a kind in .*got 'quadratic'") as info:
        make_schedule("quadratic", 100)
    assert not isinstance(info.value, UserError)
    with pytest.raises(ValueError, match="expected an integer T >= 1"):
        make_schedule("linear", 0)
    with pytest.raises(ValueError, match="beta_start"):
        linear_schedule(10, beta_start=0.5, beta_end=0.1)
    with pytest.raises(ValueError, match="offset s"):
        cosine_schedule(10, s=0.0)
    with pytest.raises(ValueError):
        NoiseSchedule(3, torch.zeros(4), torch.zeros(4), torch.zeros(4), torch.zeros(4))


def test_gather_shape_dtype_device() -> None:
    sch = linear_schedule(T=10)
    x = torch.zeros(3, 2, 4, 4, dtype=torch.float32)
    t = torch.tensor([1, 5, 10])
    g = gather(sch.alpha_bars, t, x)
    assert g.shape == (3, 1, 1, 1) and g.dtype == torch.float32
    torch.testing.assert_close(g.flatten(), sch.alpha_bars[t].float())


def test_log_snr() -> None:
    sch = linear_schedule(T=10)
    lam = sch.log_snr()
    ab = sch.alpha_bars
    torch.testing.assert_close(lam[1:], 0.5 * torch.log(ab[1:] / (1 - ab[1:])))
    assert bool((lam[1:].diff() < 0).all())
