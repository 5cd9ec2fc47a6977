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
from pathlib import Path

import numpy as np
import pytest
import torch

from weather_sr.core.sampling import (
    DEFAULT_SPACING,
    SAMPLER_NAMES,
    SAMPLERS,
    network_evaluations,
    sample_ancestral,
    sample_ddim,
    sample_dpmpp_2m,
    sampler_kwargs,
    sampler_timesteps,
    timesteps,
)
from weather_sr.core.schedule import NoiseSchedule, make_schedule
from weather_sr.errors import UserError

S = 0.5  # data standard deviation (the prior N(0, 1) must be contracted)
SHAPE = (4, 1, 64, 64)  # 16384 independent pixels


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def run(name: str, den, y: torch.Tensor, sch: NoiseSchedule, steps: int | None = None, **kw):
    """Sampler ``name`` on its own grid for ``steps`` (the way every caller runs one)."""
    return SAMPLERS[name](den, y, sch, sampler_timesteps(name, sch, steps), **kw)


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
    x = run(name, gaussian_denoiser(sch), m, sch, shape=SHAPE, generator=_gen(1), **kw)
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
    x = run(name, gaussian_denoiser(sch), m, sch, x_T=x_t, **kw)
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
        a = run(name, den, y, sch, shape=y.shape, generator=_gen(1), **kw)
        b = run(name, den, y, sch, shape=y.shape, generator=_gen(1), **kw)
        c = run(name, den, y, sch, shape=y.shape, generator=_gen(2), **kw)
        assert torch.equal(a, b)
        assert (a - c).abs().mean() > 0.1
        # one generator per row: row 1 does not depend on the batch it is sampled in
        rows = run(name, den, y, sch, shape=y.shape, generator=[_gen(7), _gen(8), _gen(9)], **kw)
        alone = run(name, den, y[:1], sch, shape=(1, 1, 8, 8), generator=[_gen(8)], **kw)
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
    out = run(name, den, y, sch, x_T=x_t, progress=lambda i, n: calls.append((i, n)), **kw)
    assert out.shape == (2, 1, 6, 5) and out.dtype == torch.float32
    assert calls == [(i, n_evals) for i in range(1, n_evals + 1)]
    assert n_net == n_evals == network_evaluations(name, sch, kw.get("steps"))
    assert n_evals == len(sampler_timesteps(name, sch, kw.get("steps")))


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


def test_sampler_grids_and_own_options() -> None:
    sch = make_schedule("cosine", 40)
    assert SAMPLER_NAMES == tuple(SAMPLERS) == ("ancestral", "ddim", "dpmpp_2m")
    # the default spacing of each sampler; ancestral runs every step whatever steps says
    assert DEFAULT_SPACING == {"ancestral": None, "ddim": "trailing", "dpmpp_2m": "logsnr"}
    assert sampler_timesteps("ancestral", sch, 5) == list(range(40, 0, -1))
    assert sampler_timesteps("ddim", sch, 5) == timesteps(sch, 5, "trailing")
    assert sampler_timesteps("dpmpp_2m", sch, 5) == timesteps(sch, 5, "logsnr")
    assert sampler_timesteps("ddim", sch, 5, "logsnr") == timesteps(sch, 5, "logsnr")
    assert sampler_timesteps("ddim", sch) == list(range(40, 0, -1))  # steps None: every step
    assert network_evaluations("ancestral", sch, 5) == 40
    assert network_evaluations("dpmpp_2m", sch, 7) == 7
    # only DDIM has an eta
    assert sampler_kwargs("ddim", eta=0.3) == {"eta": 0.3}
    assert sampler_kwargs("ancestral", eta=0.3) == sampler_kwargs("dpmpp_2m", eta=0.3) == {}
    # every sampler takes the same call: (denoiser, y, schedule, ts, *, x_T, shape, generator,
    # progress) plus its own options
    den = gaussian_denoiser(sch)
    y = torch.zeros(2, 1, 4, 4)
    for name in SAMPLER_NAMES:
        out = SAMPLERS[name](den, y, sch, sampler_timesteps(name, sch, 3), x_T=None,
                             shape=y.shape, generator=_gen(0), progress=None,
                             **sampler_kwargs(name, eta=0.5))
        assert out.shape == y.shape
    # an explicit ancestral grid may start below T (consecutive steps down to 1)
    x_t = torch.randn(2, 1, 4, 4, generator=_gen(3))
    part = sample_ancestral(den, y, sch, range(10, 0, -1), x_T=x_t, generator=_gen(4))
    assert part.shape == y.shape and bool(torch.isfinite(part).all())


def test_bad_options_raise_value_error_naming_no_config_key() -> None:
    sch = make_schedule("linear", 20)
    den = gaussian_denoiser(sch)
    y = torch.zeros(1, 1, 4, 4)
    cases = [
        ("eta", lambda: sample_ddim(den, y, sch, timesteps(sch, 5), eta=1.5, shape=y.shape)),
        ("steps", lambda: timesteps(sch, 21)),
        ("steps", lambda: sampler_timesteps("dpmpp_2m", sch, 0)),
        ("variance", lambda: sample_ancestral(den, y, sch, variance="sigma", shape=y.shape)),
        ("spacing", lambda: timesteps(sch, 5, "quadratic")),
        ("sampler", lambda: network_evaluations("euler", sch, 10)),
        ("sampler", lambda: sampler_timesteps("euler", sch, 10)),
        ("strictly decreasing", lambda: sample_ddim(den, y, sch, [5, 5, 1], shape=y.shape)),
        ("strictly decreasing", lambda: sample_dpmpp_2m(den, y, sch, [21, 3], shape=y.shape)),
        ("strictly decreasing", lambda: sample_dpmpp_2m(den, y, sch, [], shape=y.shape)),
        ("consecutive", lambda: sample_ancestral(den, y, sch, [20, 10, 1], shape=y.shape)),
        ("x_T or shape", lambda: sample_ddim(den, y, sch, timesteps(sch, 5))),
    ]
    for word, call in cases:
        with pytest.raises(ValueError, match=word) as info:
            call()
        assert not isinstance(info.value, UserError), word
        assert "expected" in str(info.value) or word == "x_T or shape", str(info.value)
    with pytest.raises(TypeError):
        sample_ddim(den, y, sch, [5.5, 1], shape=y.shape)


def test_one_list_of_sampler_names_for_cli_and_config(tmp_path, monkeypatch) -> None:
    """downscale's --sampler choices, evaluate's and demo's checks and the config's
    diffusion.val_sampler accept exactly SAMPLER_NAMES."""
    import argparse
    import typing

    import weather_sr.demo
    from weather_sr.cli import build_parser, main
    from weather_sr.commands.evaluate import sampling_options
    from weather_sr.config import DiffusionConfig, load_config

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for command in ("downscale", "evaluate", "demo"):
        actions = {a.dest: a for a in sub.choices[command]._actions}
        choices = actions["sampler"].choices
        assert choices is None or tuple(choices) == SAMPLER_NAMES, command
    ds = ["downscale", "--checkpoint", "c.pt", "--input", "i.nc", "--output", "o.nc"]
    for name in SAMPLER_NAMES:
        assert parser.parse_args([*ds, "--sampler", name]).sampler == name
        args = parser.parse_args(["evaluate", "--checkpoint", "c.pt", "--out", "r",
                                  "--sampler", name])
        assert sampling_options(args).sampler == name
        cfg = load_config(None, ["data.variables=[t2m]", f"diffusion.val_sampler={name}"])
        assert cfg.diffusion.val_sampler == name
    assert typing.get_args(typing.get_type_hints(DiffusionConfig)["val_sampler"]) == SAMPLER_NAMES
    with pytest.raises(SystemExit):
        parser.parse_args([*ds, "--sampler", "euler"])
    with pytest.raises(UserError, match="--sampler 'euler'"):
        sampling_options(parser.parse_args(["evaluate", "--checkpoint", "c.pt", "--out", "r",
                                            "--sampler", "euler"]))
    with pytest.raises(UserError, match="val_sampler"):
        load_config(None, ["data.variables=[t2m]", "diffusion.val_sampler=euler"])
    ran: list[str] = []
    monkeypatch.setattr(weather_sr.demo, "run_demo", lambda out, **kw: ran.append(kw["sampler"]))
    for name in (*SAMPLER_NAMES, "euler"):
        code = main(["demo", "--device", "cpu", "--out", str(tmp_path / name), "--sampler", name])
        assert code == (2 if name == "euler" else 0), name
    assert ran == list(SAMPLER_NAMES)


# ------------------------------------------------------------------ the log-SNR grid, defaults


def test_logsnr_grid_unchanged_for_the_linear_schedule() -> None:
    """The demo's grid (linear, T = 1000, 20 steps): the floor LOGSNR_MIN does not bite."""
    from weather_sr.core.sampling import LOGSNR_MIN

    sch = make_schedule("linear", 1000)
    assert float(sch.log_snr()[-1]) > LOGSNR_MIN
    assert timesteps(sch, 20, "logsnr") == [1000, 951, 899, 844, 786, 723, 654, 578, 493, 400,
                                            303, 212, 139, 87, 53, 31, 18, 10, 5, 2]


@pytest.mark.parametrize("steps", [10, 20, 50])
def test_logsnr_grid_well_spread_for_cosine(steps: int) -> None:
    """Cosine (lambda_T ~ -9.9): after t_0 = T the grid is even in lambda from LOGSNR_MIN, so
    only t_0 sits at lambda < LOGSNR_MIN (unclipped: 8 of 20 at t >= 993); and the exact
    Gaussian denoiser keeps the variance of a scale-0.1 component better than trailing."""
    from weather_sr.core.sampling import LOGSNR_MIN

    sch = make_schedule("cosine", 1000)
    ts = timesteps(sch, steps, "logsnr")
    lam = sch.log_snr()[ts].numpy()
    assert ts[0] == 1000 and int((lam < LOGSNR_MIN).sum()) == 1
    assert sum(t >= 993 for t in ts) <= (2 if steps <= 20 else 4)
    gaps = np.diff(lam[1:])  # even up to the rounding of t to integers
    h = (float(sch.log_snr()[1]) - LOGSNR_MIN) / steps
    assert 0.5 * h < gaps.min() and gaps.max() < 2 * h
    s2 = 0.01
    err = abs(exact_dpmpp_gain(sch, ts, s2) ** 2 / s2 - 1)
    trailing = abs(exact_dpmpp_gain(sch, timesteps(sch, steps), s2) ** 2 / s2 - 1)
    assert err < {10: 0.1, 20: 0.02, 50: 0.01}[steps] and err < trailing


def test_one_set_of_defaults() -> None:
    """Library, config (validation preview), Python API and CLI share core.sampling's defaults."""
    import inspect

    from weather_sr.cli import build_parser
    from weather_sr.config import DiffusionConfig
    from weather_sr.core.sampling import DEFAULT_ETA, DEFAULT_SAMPLER, DEFAULT_STEPS
    from weather_sr.demo import FULL, run_demo
    from weather_sr.inference import api
    from weather_sr.inference.ensemble import SamplingOptions
    from weather_sr.model.downscaling_model import DownscalingModel

    assert (DEFAULT_SAMPLER, DEFAULT_STEPS, DEFAULT_ETA) == ("dpmpp_2m", 20, 0.0)
    assert DEFAULT_SPACING[DEFAULT_SAMPLER] == "logsnr"
    cfg = DiffusionConfig()
    assert (cfg.val_sampler, cfg.val_sample_steps) == (DEFAULT_SAMPLER, DEFAULT_STEPS)
    opts = SamplingOptions()
    assert (opts.sampler, opts.steps, opts.eta) == (DEFAULT_SAMPLER, DEFAULT_STEPS, DEFAULT_ETA)
    params = inspect.signature(DownscalingModel.sample).parameters
    assert (params["sampler"].default, params["steps"].default) == (DEFAULT_SAMPLER, DEFAULT_STEPS)
    params = inspect.signature(api.downscale).parameters
    assert (params["sampler"].default, params["steps"].default, params["eta"].default) == (
        DEFAULT_SAMPLER, DEFAULT_STEPS, DEFAULT_ETA)
    assert inspect.signature(run_demo).parameters["sampler"].default == DEFAULT_SAMPLER
    assert FULL.sampler_steps == DEFAULT_STEPS
    parser = build_parser()
    for argv in (["downscale", "--checkpoint", "c.pt", "--input", "i", "--output", "o"],
                 ["evaluate", "--checkpoint", "c.pt", "--out", "d"]):
        args = parser.parse_args(argv)
        assert (args.sampler, args.steps, args.eta) == (DEFAULT_SAMPLER, DEFAULT_STEPS,
                                                        DEFAULT_ETA), argv[0]
    assert parser.parse_args(["demo"]).sampler == DEFAULT_SAMPLER
    for name in ("sample.yaml", "era5_example.yaml"):  # the shipped configs say the same
        text = (Path(__file__).resolve().parents[1] / "configs" / name).read_text()
        assert f"val_sampler: {DEFAULT_SAMPLER}" in text
        assert f"val_sample_steps: {DEFAULT_STEPS}\n" in text
