"""Samplers with the exact denoiser of Gaussian data, x_0 ~ N(m, s^2 I) per pixel (y = m).

For such data E[eps | x_t] = sqrt(1 - ab) (x_t - sqrt(ab) m) / (ab s^2 + 1 - ab), and every
sampler is an affine map per pixel: u = x - sqrt(ab_t) m evolves as u <- k u (+ sigma z). So the
exact law of each *discretised* sampler is computable with scalars, independently of the code
under test. The tests check (a) the implementation against that law (exactly for deterministic
samplers, within sampling error otherwise) and (b) the law against the data, N(m, s^2), with the
tolerance set by each sampler's discretisation error (stated next to each case).
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from weather_sr.core.sampling import (
    SAMPLERS,
    network_evaluations,
    sample_ancestral,
    sample_ddim,
    sample_dpmpp_2m,
    timesteps,
)
from weather_sr.core.schedule import NoiseSchedule, make_schedule
from weather_sr.errors import UserError

S = 0.5  # data standard deviation (the prior N(0, 1) must be contracted)
SHAPE = (4, 1, 64, 64)  # 16384 independent pixels


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def gaussian_denoiser(schedule: NoiseSchedule, s: float = S):
    ab = schedule.alpha_bars

    def denoiser(x: torch.Tensor, y: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        a = ab[t].to(x.dtype).view(-1, 1, 1, 1)
        return (1 - a).sqrt() * (x - a.sqrt() * y) / (a * s * s + 1 - a)

    return denoiser


def _gain(ab_t: float, ab_s: float, sigma: float, s2: float) -> float:
    """k with u_s = k u_t + sigma z for the DDIM-type step t -> s (x0_hat, eps exact)."""
    den = ab_t * s2 + 1 - ab_t
    return (
        math.sqrt(ab_s * ab_t) * s2 + math.sqrt(max(1 - ab_s - sigma**2, 0.0) * (1 - ab_t))
    ) / den


def exact_ddim_variance(sch: NoiseSchedule, taus: list[int], eta: float, s2: float) -> float:
    """Var(x_0 - m) of DDIM from x_T ~ N(0, 1) (u_T has variance 1 + O(ab_T))."""
    ab = sch.alpha_bars.tolist()
    var = 1.0
    for i, t in enumerate(taus):
        s = taus[i + 1] if i + 1 < len(taus) else 0
        sigma = eta * math.sqrt((1 - ab[s]) / (1 - ab[t]) * (1 - ab[t] / ab[s]))
        var = _gain(ab[t], ab[s], sigma, s2) ** 2 * var + sigma**2
    return var


def exact_ancestral_variance(sch: NoiseSchedule, var_kind: str, s2: float) -> float:
    ab, beta = sch.alpha_bars.tolist(), sch.betas.tolist()
    noise = beta if var_kind == "beta" else sch.posterior_variances.tolist()
    var = 1.0
    for t in range(sch.T, 0, -1):
        k = (1 - beta[t] / (ab[t] * s2 + 1 - ab[t])) / math.sqrt(1 - beta[t])
        var = k * k * var + (noise[t] if t > 1 else 0.0)
    return var


def exact_dpmpp_gain(sch: NoiseSchedule, taus: list[int], s2: float) -> float:
    """K with x_0 - m = K u_T for DPM-Solver++(2M) (Lu et al. 2022), written with scalars."""
    ab = sch.alpha_bars.tolist()

    def lam(t: int) -> float:
        return 0.5 * math.log(ab[t] / (1 - ab[t]))

    u, d_prev, h_prev = 1.0, None, 0.0
    for i, t in enumerate(taus):
        d = u * math.sqrt(ab[t]) * s2 / (ab[t] * s2 + 1 - ab[t])  # D - m, exact posterior mean
        if i + 1 == len(taus):
            return d
        s = taus[i + 1]
        h = lam(s) - lam(t)
        dd = d if d_prev is None else d + (d - d_prev) * h / (2 * h_prev)
        u = math.sqrt((1 - ab[s]) / (1 - ab[t])) * u - math.sqrt(ab[s]) * math.expm1(-h) * dd
        d_prev, h_prev = d, h
    raise AssertionError


@pytest.fixture(scope="module")
def setup() -> tuple[NoiseSchedule, torch.Tensor]:
    sch = make_schedule("linear", 1000)
    m = 1.5 + torch.randn(SHAPE, generator=_gen(0), dtype=torch.float64)
    return sch, m


# (sampler, kwargs, exact law, tolerance on |Var / s^2 - 1| from discretisation, why)
CASES = [
    ("ancestral", {"variance": "beta"}, 0.03, "T = 1000 steps: law within 1.5% of the data"),
    ("ancestral", {"variance": "beta_tilde"}, 0.03, "T = 1000 steps: law within 0.6%"),
    ("ddim", {"steps": 50}, 0.15, "first order, 50 trailing steps: law 11% under"),
    ("ddim", {"steps": 50, "eta": 1.0}, 0.25, "first order + noise: law 21% under"),
    ("dpmpp_2m", {"steps": 20}, 0.05, "second order, 20 logSNR steps: law 3% over"),
]


def _exact_variance(sch: NoiseSchedule, name: str, kw: dict) -> float:
    s2 = S * S
    if name == "ancestral":
        return exact_ancestral_variance(sch, kw["variance"], s2)
    if name == "ddim":
        taus = timesteps(sch, kw["steps"], "trailing")
        return exact_ddim_variance(sch, taus, kw.get("eta", 0.0), s2)
    return exact_dpmpp_gain(sch, timesteps(sch, kw["steps"], "logsnr"), s2) ** 2


@pytest.mark.parametrize(("name", "kw", "tol", "why"), CASES)
def test_gaussian_data_moments(setup, name: str, kw: dict, tol: float, why: str) -> None:
    sch, m = setup
    x = SAMPLERS[name](gaussian_denoiser(sch), m, sch, shape=SHAPE, generator=_gen(1), **kw)
    z = (x - m) / S
    n = z.numel()
    exact = _exact_variance(sch, name, kw) / S**2
    # (a) the implementation follows its exact law, within 4.5 standard errors
    assert abs(z.mean().item()) < 4.5 * math.sqrt(exact / n)
    assert abs(z.var().item() / exact - 1) < 4.5 * math.sqrt(2 / n)
    # (b) the law reproduces the data variance within the discretisation tolerance
    assert abs(exact - 1) < tol, why


@pytest.mark.parametrize(("name", "kw"), [("ddim", {"steps": 50}), ("dpmpp_2m", {"steps": 20})])
def test_deterministic_samplers_equal_their_exact_affine_map(setup, name: str, kw: dict) -> None:
    sch, m = setup
    x_t = torch.randn(SHAPE, generator=_gen(5), dtype=torch.float64)
    x = SAMPLERS[name](gaussian_denoiser(sch), m, sch, x_T=x_t, **kw)
    if name == "ddim":
        taus = timesteps(sch, kw["steps"])
        k = math.prod(
            _gain(sch.alpha_bars[t].item(), sch.alpha_bars[s].item(), 0.0, S * S)
            for t, s in zip(taus, [*taus[1:], 0], strict=True)
        )
    else:
        k = exact_dpmpp_gain(sch, timesteps(sch, kw["steps"], "logsnr"), S * S)
    expected = m + k * (x_t - sch.alpha_bars[sch.T].sqrt().item() * m)
    torch.testing.assert_close(x, expected, atol=1e-10, rtol=0)


def test_second_order_beats_first_order_and_errors_shrink_with_steps(setup) -> None:
    sch, _ = setup
    s2 = S * S

    def ddim_err(steps: int) -> float:
        return abs(exact_ddim_variance(sch, timesteps(sch, steps), 0.0, s2) / s2 - 1)

    def dpm_err(steps: int) -> float:
        return abs(exact_dpmpp_gain(sch, timesteps(sch, steps, "logsnr"), s2) ** 2 / s2 - 1)

    assert ddim_err(10) > ddim_err(20) > ddim_err(50) > ddim_err(200)
    assert dpm_err(20) < dpm_err(10) and dpm_err(50) < dpm_err(20)
    for steps in (10, 20, 50):
        assert dpm_err(steps) < ddim_err(steps)


def test_reproducibility_and_generator_lists() -> None:
    sch = make_schedule("linear", 30)
    den = gaussian_denoiser(sch)
    y = torch.zeros(3, 1, 8, 8)
    for name, kw in [("ancestral", {}), ("ddim", {"steps": 10, "eta": 1.0})]:
        fn = SAMPLERS[name]
        a = fn(den, y, sch, shape=y.shape, generator=_gen(1), **kw)
        b = fn(den, y, sch, shape=y.shape, generator=_gen(1), **kw)
        c = fn(den, y, sch, shape=y.shape, generator=_gen(2), **kw)
        assert torch.equal(a, b)
        assert (a - c).abs().mean() > 0.1
        # one generator per row: row 1 does not depend on the batch it is sampled in
        rows = fn(den, y, sch, shape=y.shape, generator=[_gen(7), _gen(8), _gen(9)], **kw)
        alone = fn(den, y[:1], sch, shape=(1, 1, 8, 8), generator=[_gen(8)], **kw)
        torch.testing.assert_close(rows[1:2], alone)


@pytest.mark.parametrize(
    ("name", "kw", "n_evals"),
    [("ancestral", {}, 25), ("ddim", {"steps": 7}, 7), ("dpmpp_2m", {"steps": 5}, 5)],
)
def test_progress_calls_dtype_and_shape_from_x_t(name: str, kw: dict, n_evals: int) -> None:
    sch = make_schedule("cosine", 25)
    calls: list[tuple[int, int]] = []
    n_net = 0
    den0 = gaussian_denoiser(sch)

    def den(x: torch.Tensor, y: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        nonlocal n_net
        n_net += 1
        assert x.dtype == torch.float32 and t.dtype == torch.long and t.shape == (2,)
        return den0(x, y, t)

    y = torch.zeros(2, 1, 6, 5, dtype=torch.float32)
    x_t = torch.randn(2, 1, 6, 5, generator=_gen(0), dtype=torch.float64)
    out = SAMPLERS[name](den, y, sch, x_T=x_t, progress=lambda i, n: calls.append((i, n)), **kw)
    assert out.shape == (2, 1, 6, 5) and out.dtype == torch.float32
    assert calls == [(i, n_evals) for i in range(1, n_evals + 1)]
    assert n_net == n_evals == network_evaluations(name, kw.get("steps"), sch.T)


def test_timesteps_properties() -> None:
    for kind in ("linear", "cosine"):
        sch = make_schedule(kind, 100)
        for spacing in ("trailing", "logsnr"):
            for steps in (1, 2, 7, 20, 99, 100):
                ts = timesteps(sch, steps, spacing)
                assert len(ts) == steps and ts[0] == 100 and ts[-1] >= 1
                assert all(a > b for a, b in itertools.pairwise(ts))
            assert timesteps(sch, 100, spacing) == list(range(100, 0, -1))
    assert timesteps(make_schedule("linear", 1000), 4) == [1000, 750, 500, 250]


def test_bad_options_raise_user_error() -> None:
    sch = make_schedule("linear", 20)
    den = gaussian_denoiser(sch)
    y = torch.zeros(1, 1, 4, 4)
    with pytest.raises(UserError, match="eta"):
        sample_ddim(den, y, sch, steps=5, eta=1.5, shape=y.shape)
    with pytest.raises(UserError, match="steps"):
        sample_dpmpp_2m(den, y, sch, steps=21, shape=y.shape)
    with pytest.raises(UserError, match="variance"):
        sample_ancestral(den, y, sch, variance="sigma", shape=y.shape)
    with pytest.raises(UserError, match="spacing"):
        sample_ddim(den, y, sch, steps=5, spacing="quadratic", shape=y.shape)
    with pytest.raises(UserError, match="sampler"):
        network_evaluations("euler", 10, 20)
    with pytest.raises(ValueError, match="x_T or shape"):
        sample_ddim(den, y, sch, steps=5)
