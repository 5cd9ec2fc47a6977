"""Shaped forward noise, per-coefficient schedules and coloured-noise sampling
(weather_sr.core.spectral, docs/method.md §9), against references written here from the
definitions: the explicit formulas of s(nu) and ab_t(nu), the exact laws of the discretised
samplers on Gaussian data (scalar recursions per F_R coefficient), and today's samplers.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from weather_sr.core.fourier import inverse_real_fourier2, radial_frequency, real_fourier2
from weather_sr.core.loss import joint_loss
from weather_sr.core.sampling import SAMPLERS, sampler_timesteps
from weather_sr.core.schedule import make_schedule
from weather_sr.core.spectral import (
    AMPLITUDE_FLOOR,
    NoiseShape,
    RadialSpectrum,
    SpectralProcess,
    SpectralShift,
    colour_gains,
    make_process,
)
from weather_sr.core.spectral_sampling import sample_process, training_view

H = W = 8
SCH = make_schedule("linear", 100)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _red_fields(n: int, seed: int, channels: int = 2) -> torch.Tensor:
    """Fields with a red spectrum (variance ~ (nu + 1/8)^-3 per coefficient), float64."""
    nu = radial_frequency(H, W)
    amp = (nu + 1 / 8) ** -1.5
    c = torch.randn(n, channels, H, W, generator=_gen(seed), dtype=torch.float64)
    return inverse_real_fourier2(c * amp)


def _spectrum(channels: int = 2) -> RadialSpectrum:
    spec = RadialSpectrum(channels, H, W)
    spec.add(_red_fields(64, 0, channels))
    return spec


# ------------------------------------------------------------------- today's process, bit for bit


@pytest.mark.parametrize(("name", "kw"), [("ancestral", {}), ("ddim", {"eta": 0.0}),
                                          ("ddim", {"eta": 0.7}), ("dpmpp_2m", {})])
def test_white_shared_process_is_todays_sampler_bit_for_bit(name: str, kw: dict) -> None:
    y = torch.randn(3, 1, H, W, generator=_gen(1))

    def den(x, y, t, *, wrap_x=True):
        return 0.3 * x + 0.1 * y

    ts = sampler_timesteps(name, SCH, 10)
    today = SAMPLERS[name](den, y, SCH, ts, shape=(3, 1, H, W), generator=_gen(2), **kw)
    for process in (None, SpectralProcess()):
        out = sample_process(SAMPLERS[name], den, y, SCH, ts, process, shape=(3, 1, H, W),
                             generator=_gen(2), noise_colour="white", **kw)
        assert torch.equal(out, today)


def test_white_shared_training_view_is_the_plain_loss() -> None:
    grid = SpectralProcess().on_grid(SCH, H, W)
    x0 = torch.randn(2, 1, H, W, generator=_gen(3))

    def den(x, y, t, *, wrap_x=True):
        return 0.5 * x

    den2, x2, sch2, draws = training_view(den, x0, grid)
    assert den2 is den and x2 is x0 and sch2 is SCH and draws == {}


# ------------------------------------------------------------------- the noise shapes


def test_power_shape_is_its_formula_with_unit_mean_power_on_the_patch() -> None:
    proc = make_process("power:1.5", "none", 1, (16, 12))
    nu = radial_frequency(16, 12)
    raw = (nu + 1 / 16) ** -1.5
    expected = raw / raw.square().mean().sqrt()
    s = proc.noise.on_grid(16, 12)
    torch.testing.assert_close(s[0], expected, rtol=1e-12, atol=0)
    # the same function of nu on another grid (not re-normalised there)
    s32 = proc.noise.on_grid(32, 32)[0]
    nu32 = radial_frequency(32, 32)
    torch.testing.assert_close(s32, expected.flatten()[0] / raw.flatten()[0]
                               * (nu32 + 1 / 16) ** -1.5, rtol=1e-12, atol=0)


def test_equal_snr_shape_follows_the_measured_amplitude() -> None:
    spec = _spectrum()
    _, amp = spec.table()
    proc = make_process("equal_snr", "none", 2, (H, W), spec)
    s = proc.noise.on_grid(H, W)
    assert s.shape == (2, H, W)
    torch.testing.assert_close(s.square().mean((1, 2)), torch.ones(2, dtype=torch.float64))
    # the shape is the (smoothed) amplitude up to one factor per channel
    amp_t = torch.tensor(amp)
    ratio = torch.tensor(proc.noise.amplitude) / amp_t
    torch.testing.assert_close(ratio, ratio[:, :1].expand_as(ratio))
    assert bool((amp_t >= AMPLITUDE_FLOOR * amp_t.max(1, keepdim=True).values - 1e-15).all())
    # red data: more noise at large scales than at small ones
    assert bool((s[:, 0, 0] > 3 * s[:, H - 1, W - 1]).all())


def test_radial_spectrum_is_a_brute_force_radial_mean() -> None:
    x = _red_fields(5, 7, channels=1)
    spec = RadialSpectrum(1, H, W)
    spec.add(x[:2])
    spec.add(x[2:])
    coef = real_fourier2(x)[:, 0]
    nu = radial_frequency(H, W)
    raw = []
    for k in range(round(float(nu.max()) * H) + 1):
        sel = torch.round(nu * H) == k
        raw.append(0.5 * math.log(float(coef[:, sel].square().mean())))
    raw_t = torch.tensor(raw, dtype=torch.float64)
    padded = torch.cat([raw_t[:1], raw_t, raw_t[-1:]])
    smooth = ((padded[:-2] + padded[1:-1] + padded[2:]) / 3).exp()
    smooth = torch.maximum(smooth, AMPLITUDE_FLOOR * smooth.max())
    torch.testing.assert_close(torch.tensor(spec.table()[1][0], dtype=torch.float64), smooth)


@pytest.mark.parametrize("weighting", ["whitened", "field"])
@pytest.mark.parametrize("noise", ["power:1", "equal_snr"])
def test_forward_marginal_psd_is_s_squared(noise: str, weighting: str) -> None:
    """(x_t - sqrt(ab) x0) / sqrt(1 - ab), with x_t what the network is given, has the radial
    power s^2 (within the sampling error of the draws), whichever loss is taken."""
    proc = make_process(noise, "none", 2, (H, W), _spectrum())
    grid = proc.on_grid(SCH, H, W)
    n, t = 1500, 40
    x0 = _red_fields(n, 11).float()
    seen = []

    def spy(x, y, tt, *, wrap_x=True):
        seen.append(x)
        return torch.zeros_like(x)

    den, v0, sch, draws = training_view(spy, x0, grid, weighting, generator=_gen(12))
    draws["t"] = torch.full((n,), t, dtype=torch.long)
    out = joint_loss(den, v0, x0, sch, lam=0.0, generator=_gen(12), **draws)
    ab = float(SCH.alpha_bars[t])
    noise_x = (seen[0].double() - math.sqrt(ab) * x0.double()) / math.sqrt(1 - ab)
    power = real_fourier2(noise_x).square().mean(0)  # [C, H, W]
    s2 = grid.s.square().expand(2, H, W)
    # each coefficient: a mean of n chi^2_1 / 1 draws, standard error sqrt(2 / n)
    assert float(((power / s2) - 1).abs().max()) < 5 * math.sqrt(2 / n)
    # with a zero network the loss is the target's mean square: the white eps (whitened), or
    # the coloured noise, whose mean power is mean s^2 = 1 per channel as well (field)
    assert abs(float(out.loss_x.mean()) - 1.0) < 0.05


def test_field_weighting_is_the_loss_on_the_coloured_noise() -> None:
    """The field loss of a network output D is mean (Σ^½ eps - D)^2, the whitened one
    mean (eps - Σ^-½ D)^2, for the same draws (t, then the noise)."""
    proc = make_process("power:1", "none", 1, (H, W))
    grid = proc.on_grid(SCH, H, W)
    x0 = _red_fields(4, 13, channels=1).float()
    d = torch.randn(4, 1, H, W, generator=_gen(14))

    def net(x, y, t, *, wrap_x=True):
        return d

    for weighting in ("whitened", "field"):
        den, v0, sch, draws = training_view(net, x0, grid, weighting, generator=_gen(15))
        out = joint_loss(den, v0, x0, sch, lam=0.0, generator=_gen(15), **draws)
        g = _gen(15)
        torch.randint(1, SCH.T + 1, (4,), generator=g)
        eps = torch.randn(x0.shape, generator=g)
        err = grid.colour(eps) - d if weighting == "field" else eps - grid.whiten(d)
        torch.testing.assert_close(out.loss_x, err.square().flatten(1).mean(1))


# ------------------------------------------------------------------- exact laws on Gaussian data


def _abar_reference(t: int, delta: np.ndarray, time_scaled: bool) -> np.ndarray:
    """ab_t(nu) from its definition: sigmoid(2 (lambda_t + f(t) Delta)) (1 at t = 0)."""
    if t == 0:
        return np.ones_like(delta)
    ab = float(SCH.alpha_bars[t])
    lam = 0.5 * math.log(ab / (1 - ab)) + (t / SCH.T if time_scaled else 1.0) * delta
    return 1.0 / (1.0 + np.exp(-2.0 * lam))


def _gaussian_setup(schedule: str):
    """Data x0 ~ N(0, F_R^-1 diag(d) F_R) (red), power:1 noise, and ``schedule``."""
    proc = make_process("power:1", schedule, 1, (H, W), _spectrum(1))
    grid = proc.on_grid(SCH, H, W)
    nu = radial_frequency(H, W).numpy()
    d = (nu + 1 / 8) ** -2.0 / 20.0  # data variance per coefficient
    s2 = grid.s[0].numpy() ** 2
    delta = np.zeros_like(nu) if grid.delta is None else grid.delta[0].numpy()
    return proc, grid, d, s2, delta, grid.time_scaled


def _oracle(grid, d: np.ndarray, s2: np.ndarray, delta: np.ndarray, time_scaled: bool):
    """The exact x-space network output of the Gaussian data: Sigma^1/2 E[eps_u | u_t]."""
    du = torch.from_numpy(d / s2)

    def den(x, y, t, *, wrap_x=True):
        ab = torch.from_numpy(_abar_reference(int(t[0]), delta, time_scaled)).to(x)
        c = real_fourier2(grid.whiten(x))
        eps = (1 - ab).sqrt() * c / (ab * du.to(x) + 1 - ab)
        return grid.colour(inverse_real_fourier2(eps))

    return den


def _exact_gain_and_noise(name: str, kw: dict, ts: list[int], du: np.ndarray,
                          delta: np.ndarray, time_scaled: bool) -> tuple[np.ndarray, np.ndarray]:
    """Per coefficient of u: x0 = K u_T + (noise of variance V): (K, V), by the scalar
    recursions of each sampler (test_sampling's, per coefficient)."""
    ab = [_abar_reference(t, delta, time_scaled) for t in range(SCH.T + 1)]
    k, v = np.ones_like(du), np.zeros_like(du)
    if name == "dpmpp_2m":
        lam = [0.5 * np.log(a / (1 - a)) if t else None for t, a in enumerate(ab)]
        d_prev = h_prev = None
        for i, t in enumerate(ts):
            d = k * np.sqrt(ab[t]) * du / (ab[t] * du + 1 - ab[t])
            if i + 1 == len(ts):
                return d, v
            s = ts[i + 1]
            h = lam[s] - lam[t]
            dd = d if d_prev is None else d + (d - d_prev) * h / (2 * h_prev)
            k = np.sqrt((1 - ab[s]) / (1 - ab[t])) * k - np.sqrt(ab[s]) * np.expm1(-h) * dd
            d_prev, h_prev = d, h
    pairs = list(zip(ts, [*ts[1:], 0], strict=True))
    for t, s in pairs:
        if name == "ancestral":
            beta = 1 - ab[t] / ab[s]
            gain = (1 - beta / (ab[t] * du + 1 - ab[t])) / np.sqrt(1 - beta)
            var = beta if s > 0 else 0.0
        else:
            eta = kw.get("eta", 0.0)
            sigma = eta * np.sqrt((1 - ab[s]) / (1 - ab[t]) * (1 - ab[t] / ab[s]))
            gain = (np.sqrt(ab[s] * ab[t]) * du
                    + np.sqrt(np.maximum(1 - ab[s] - sigma**2, 0) * (1 - ab[t]))) / (
                ab[t] * du + 1 - ab[t])
            var = sigma**2
        k, v = gain * k, gain**2 * v + var
    return k, v


CASES = [("ddim", {"eta": 0.0}, 12), ("dpmpp_2m", {}, 12), ("ddim", {"eta": 1.0}, 12),
         ("ancestral", {}, None)]


@pytest.mark.parametrize("schedule", ["none", "blur:3", "equal_snr"])
@pytest.mark.parametrize(("name", "kw", "steps"), CASES)
def test_exact_law_on_gaussian_data(schedule: str, name: str, kw: dict, steps) -> None:
    """Shaped noise (power:1) and a shared or per-coefficient schedule: deterministic samplers
    equal their exact affine map per F_R coefficient (1e-9, float64); stochastic ones have the
    exact mean (0) and covariance (diagonal in the F_R basis) within sampling error."""
    proc, grid, d, s2, delta, scaled = _gaussian_setup(schedule)
    den = _oracle(grid, d, s2, delta, scaled)
    ts = sampler_timesteps(name, SCH, steps)
    k, v = _exact_gain_and_noise(name, kw, ts, d / s2, delta, scaled)
    n = 3000 if v.max() > 0 else 4
    y = torch.zeros(n, 1, H, W, dtype=torch.float64)
    x_T = torch.randn(n, 1, H, W, generator=_gen(21), dtype=torch.float64)
    x = sample_process(SAMPLERS[name], den, y, SCH, ts, proc, x_T=x_T, generator=_gen(22), **kw)
    c = real_fourier2(grid.whiten(x))[:, 0].flatten(1)  # u's F_R coefficients [n, 64]
    if v.max() == 0:
        expected = torch.from_numpy(k).flatten() * real_fourier2(x_T)[:, 0].flatten(1)
        torch.testing.assert_close(c, expected, atol=1e-9, rtol=0)
        return
    var = torch.from_numpy(k**2 + v).flatten()  # u_T ~ N(0, I): Var = K^2 + V
    cov = c.T @ c / n
    scale = (var[:, None] * var[None, :]).sqrt()
    assert float(((cov - torch.diag(var)) / scale).abs().max()) < 5.5 / math.sqrt(n)
    assert float((c.mean(0) / var.sqrt()).abs().max()) < 5.5 / math.sqrt(n)


def test_shared_per_coefficient_schedule_equals_todays_samplers() -> None:
    """A per-coefficient schedule with Delta = 0 runs on F_R coefficients and equals today's
    samplers (the same noise realisations: the drawn noises are mapped by F_R)."""
    flat = SpectralProcess(shift=SpectralShift("equal_snr", nu=(0.0, 1.0), delta=((0.0, 0.0),)))
    assert flat.on_grid(SCH, H, W).coefficients is not None
    y = torch.randn(2, 1, H, W, generator=_gen(4), dtype=torch.float64)

    def den(x, y, t, *, wrap_x=True):
        return 0.4 * x - 0.2 * y

    for name, kw in (("ancestral", {}), ("ddim", {"eta": 0.5}), ("dpmpp_2m", {})):
        ts = sampler_timesteps(name, SCH, 10)
        today = SAMPLERS[name](den, y, SCH, ts, shape=y.shape, generator=_gen(5), **kw)
        out = sample_process(SAMPLERS[name], den, y, SCH, ts, flat, shape=y.shape,
                             generator=_gen(5), **kw)
        torch.testing.assert_close(out, today, atol=1e-9, rtol=1e-9)


# ------------------------------------------------------------------- coloured-noise sampling


def test_colour_gains_keep_the_power_and_follow_the_unresolved_fraction() -> None:
    g = colour_gains("power:1", SCH, H, W)
    every = torch.stack([g(t) for t in range(1, SCH.T + 1)])
    torch.testing.assert_close(every.square().mean((1, 2)), torch.ones(SCH.T, dtype=torch.float64))
    nu = radial_frequency(H, W)
    power = (nu + 1 / 8) ** -2.0
    power = power / power.mean()
    for t in (1, 30, 100):
        ab = float(SCH.alpha_bars[t])
        f = 1 / (1 + ab / (1 - ab) * power)
        torch.testing.assert_close(g(t), (f / f.mean()).sqrt())
    assert float(g(1)[H - 1, W - 1]) > 1 > float(g(1)[0, 0])  # small scales get more at low t
    assert colour_gains("white", SCH, H, W) is None


def test_coloured_injected_noise_has_the_gains_spectrum() -> None:
    """Ancestral sampling with a zero denoiser: the last injection (towards t = 1) dominates
    nothing, so check the noise map itself through the sampler's hook."""
    g = colour_gains("power:2", SCH, H, W)
    seen = []

    def record(x, y, t, *, wrap_x=True):
        seen.append(x.clone())
        return torch.zeros_like(x)

    n = 4000
    y = torch.zeros(n, 1, H, W, dtype=torch.float64)
    ts = [3, 2, 1]
    sample_process(SAMPLERS["ancestral"], record, y, SCH, ts, None, noise_colour="power:2",
                   x_T=torch.zeros(n, 1, H, W, dtype=torch.float64), generator=_gen(8))
    # from t = 3 with eps = 0: x_2 = sqrt(beta_3) z, z the coloured noise towards step 2
    z = seen[1] / math.sqrt(float(SCH.betas[3]))
    power = real_fourier2(z)[:, 0].square().mean(0)
    assert float((power / g(2).square() - 1).abs().max()) < 5 * math.sqrt(2 / n)


# ------------------------------------------------------------------- serialisation


def test_process_round_trip_and_bad_tables() -> None:
    proc = make_process("equal_snr", "blur:2", 2, (H, W), _spectrum())
    again = SpectralProcess.from_dict(proc.to_dict(), 2)
    assert again == proc
    bad = proc.to_dict()
    bad["noise"]["amplitude"][1][0] = -1.0
    with pytest.raises(ValueError, match="not positive"):
        SpectralProcess.from_dict(bad, 2)
    with pytest.raises(ValueError, match="rows"):
        SpectralProcess.from_dict(proc.to_dict(), 3)
    assert NoiseShape().on_grid(H, W) is None and SpectralShift().on_grid(H, W) is None


def test_the_process_colours_the_whole_field_outside_the_tiler() -> None:
    """With a pointwise network tiling is exact, so tiled and whole-field sampling agree on a
    shaped process only if Σ^½ is applied to the whole field (a per-tile colouring differs)."""
    from weather_sr.inference.tiling import TiledDenoiser

    proc = make_process("power:1", "blur:2", 1, (16, 16))
    y = torch.randn(2, 1, 16, 16, generator=_gen(30), dtype=torch.float64)

    def den(x, y, t, *, wrap_x=True):
        return 0.3 * x + 0.2 * y

    tiled = TiledDenoiser(den, 8, 4)
    ts = sampler_timesteps("ddim", SCH, 5)
    x_T = torch.randn(2, 1, 16, 16, generator=_gen(31), dtype=torch.float64)
    whole = sample_process(SAMPLERS["ddim"], den, y, SCH, ts, proc, x_T=x_T)
    cut = sample_process(SAMPLERS["ddim"], tiled, y, SCH, ts, proc, x_T=x_T)
    torch.testing.assert_close(cut, whole, atol=1e-10, rtol=0)
    grid = proc.on_grid(SCH, 8, 8)  # what colouring tile by tile would do instead
    per_tile = grid.colour(x_T[..., :8, :8])
    assert float((per_tile - proc.on_grid(SCH, 16, 16).colour(x_T)[..., :8, :8]).abs().max()) > 0.1
