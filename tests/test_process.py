"""Forward process and posterior: Bayes' rule evaluated independently, moments, conversions."""

from __future__ import annotations

import math

import pytest
import torch

from weather_sr.core.process import (
    eps_to_x0,
    posterior_mean_variance,
    q_sample,
    randint_batch,
    randn_like_batch,
    x0_to_eps,
)
from weather_sr.core.schedule import cosine_schedule, linear_schedule


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_posterior_equals_bayes_rule_numerically() -> None:
    """q(x_{t-1} | x_t, x_0) ∝ q(x_t | x_{t-1}) q(x_{t-1} | x_0), evaluated on a grid in 1-D."""
    sch = linear_schedule(T=100)
    grid = torch.linspace(-8, 8, 400001, dtype=torch.float64)
    for t, x0, xt in [(2, 0.7, -0.3), (30, -1.2, 0.5), (100, 2.0, 1.5)]:
        a_t, ab_prev = sch.alphas[t].item(), sch.alpha_bars[t - 1].item()
        log_lik = -((xt - math.sqrt(a_t) * grid) ** 2) / (2 * (1 - a_t))  # q(x_t | x_{t-1})
        log_prior = -((grid - math.sqrt(ab_prev) * x0) ** 2) / (2 * (1 - ab_prev))
        w = torch.exp(log_lik + log_prior - (log_lik + log_prior).max())
        w = w / w.sum()
        mean_num = (w * grid).sum().item()
        var_num = (w * (grid - mean_num) ** 2).sum().item()
        mean, var = posterior_mean_variance(
            sch,
            torch.full((1, 1, 1, 1), x0, dtype=torch.float64),
            torch.full((1, 1, 1, 1), xt, dtype=torch.float64),
            torch.tensor([t]),
        )
        assert abs(mean.item() - mean_num) < 1e-6
        assert abs(var.item() - var_num) / var_num < 1e-4


def test_posterior_at_t1_returns_x0() -> None:
    sch = linear_schedule(T=10)
    x0 = torch.randn(2, 1, 3, 3, generator=_gen(), dtype=torch.float64)
    xt = torch.randn(2, 1, 3, 3, generator=_gen(1), dtype=torch.float64)
    mean, var = posterior_mean_variance(sch, x0, xt, torch.tensor([1, 1]))
    torch.testing.assert_close(mean, x0)
    assert bool((var == 0).all())


def test_q_sample_moments() -> None:
    sch = cosine_schedule(T=200)
    n = 200000
    x0 = torch.full((n, 1, 1, 1), 1.5, dtype=torch.float64)
    t = torch.full((n,), 80)
    noise = randn_like_batch(x0.shape, _gen(2), "cpu", torch.float64)
    xt = q_sample(sch, x0, t, noise)
    ab = sch.alpha_bars[80].item()
    se = math.sqrt((1 - ab) / n)
    assert abs(xt.mean().item() - math.sqrt(ab) * 1.5) < 5 * se
    assert abs(xt.var().item() / (1 - ab) - 1) < 5 * math.sqrt(2 / n)
    # python int t broadcasts like a tensor
    torch.testing.assert_close(q_sample(sch, x0[:3], 80, noise[:3]), xt[:3])


def test_eps_x0_round_trip() -> None:
    sch = linear_schedule(T=1000)
    x0 = torch.randn(4, 2, 5, 5, generator=_gen(3), dtype=torch.float64)
    eps = torch.randn(4, 2, 5, 5, generator=_gen(4), dtype=torch.float64)
    t = torch.tensor([1, 10, 500, 1000])
    xt = q_sample(sch, x0, t, eps)
    torch.testing.assert_close(eps_to_x0(sch, xt, t, eps), x0, atol=1e-9, rtol=0)
    torch.testing.assert_close(x0_to_eps(sch, xt, t, x0), eps, atol=1e-9, rtol=0)


def test_randn_like_batch_per_row_generators() -> None:
    gens = [_gen(10), _gen(11), _gen(12)]
    batch = randn_like_batch((3, 2, 4), gens, "cpu", torch.float32)
    for b, seed in enumerate((10, 11, 12)):
        torch.testing.assert_close(batch[b], torch.randn(2, 4, generator=_gen(seed)))
    one = randn_like_batch((3, 2, 4), _gen(10), "cpu", torch.float32)
    torch.testing.assert_close(one, torch.randn(3, 2, 4, generator=_gen(10)))


def test_randint_batch_draws_like_randn_like_batch() -> None:
    # one generator: one randint((n,)); a list: entry b alone from generator b (what the joint
    # loss draws its t with, so t does not depend on the batch either)
    one = randint_batch(1, 51, 4, _gen(3), "cpu")
    assert one.dtype == torch.long
    assert torch.equal(one, torch.randint(1, 51, (4,), generator=_gen(3)))
    rows = randint_batch(1, 51, 3, [_gen(4), _gen(5), _gen(6)], "cpu")
    expected = torch.cat([torch.randint(1, 51, (1,), generator=_gen(s)) for s in (4, 5, 6)])
    assert torch.equal(rows, expected)
    for draw in (lambda g: randint_batch(1, 5, 3, g, "cpu"),
                 lambda g: randn_like_batch((3, 2), g, "cpu", torch.float32)):
        with pytest.raises(ValueError, match="2 generators for a batch of 3"):
            draw([_gen(1), _gen(2)])
