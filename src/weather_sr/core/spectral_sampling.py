"""Running any sampler of :mod:`weather_sr.core.sampling` on a spectral process, and the
training view of one (docs/method.md §9).

The network sees x_t in the field's own space (where the condition, the static fields and the
base live, and where tiles are cut) and its ε-output is Σ^½ ε in that space; the process is
ordinary diffusion of the whitened variable u = Σ^-½ z, so a sampler runs on u with the denoiser

    eps_u(u_t, y, t) = Σ^-½ denoiser(Σ^½ u_t, y, t)                      (:func:`shaped`)

starting from white noise u_T and returning z0 = Σ^½ u0. With a per-coefficient schedule the
sampler's state is F_R u instead (every coefficient its own 1-D process), with the denoiser
conjugated by F_R. White noise with no spectral schedule and white injected noise is today's
sampler call itself, bit for bit.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from torch import Tensor

from weather_sr.core.fourier import inverse_real_fourier2, real_fourier2
from weather_sr.core.process import Denoiser, Generators, randint_batch, randn_like_batch
from weather_sr.core.schedule import NoiseSchedule
from weather_sr.core.spectral import GridProcess, SpectralProcess, colour_gains
from weather_sr.core.spectral_options import DEFAULT_COLOUR, DEFAULT_WEIGHTING, WEIGHTINGS

__all__ = ["sample_process", "shaped", "training_view"]


def shaped(denoiser: Denoiser, grid: GridProcess) -> Denoiser:
    """The denoiser of the whitened variable: u -> Σ^-½ denoiser(Σ^½ u) (module doc)."""
    if grid.s is None:
        return denoiser

    def eps_u(u: Tensor, y: Tensor, t: Tensor, /, **kw: bool) -> Tensor:  # kw: wrap_x, if set
        return grid.whiten(denoiser(grid.colour(u), y, t, **kw).to(u.dtype))

    return eps_u


def _in_coefficients(denoiser: Denoiser) -> Denoiser:
    def eps_c(c: Tensor, y: Tensor, t: Tensor, /, **kw: bool) -> Tensor:
        return real_fourier2(denoiser(inverse_real_fourier2(c), y, t, **kw).to(c.dtype))

    return eps_c


def training_view(denoiser: Denoiser, x0: Tensor, grid: GridProcess,
                  weighting: str = DEFAULT_WEIGHTING, *, lam: float = 0.0,
                  generator: Generators = None) -> tuple[Denoiser, Tensor, Any, dict[str, Tensor]]:
    """(denoiser, x0, schedule, draws) for :func:`weather_sr.core.loss.joint_loss` on the
    process (x0 ``[B, C, h, w]``; draws: its ``t``, ``noise_x``, ``noise_f`` keywords, or none).

    ``whitened``: the shaped denoiser, the whitened x0 and the per-coefficient schedule (or the
    shared one): the ordinary ε-loss on u. ``field``: the model's own denoiser and x0, with the
    forward noise drawn coloured, Σ^½ ε (t first, then the noises, as ``joint_loss`` draws them):
    the ε-loss on the field's own noise, each coefficient's ε-error weighted by s^2 relative to
    ``whitened``. Both have the forward marginal of the process; with white noise they are the
    same loss.
    """
    coefs = grid.coefficients
    schedule = grid.schedule if coefs is None else coefs
    if weighting == "whitened":
        return shaped(denoiser, grid), grid.whiten(x0), schedule, {}
    if weighting != "field":
        raise ValueError(f"training_view: expected a weighting in {WEIGHTINGS}, got {weighting!r}")
    t = randint_batch(1, schedule.T + 1, x0.shape[0], generator, x0.device)
    draws = {"t": t, "noise_x": grid.colour(randn_like_batch(x0.shape, generator, x0.device,
                                                              x0.dtype))}
    if lam > 0:  # joint_loss's noise_f lives in F_R space: s times white coefficients
        white = randn_like_batch(x0.shape, generator, x0.device, x0.dtype)
        draws["noise_f"] = white if grid.s is None else grid.s.to(white) * white
    return denoiser, x0, schedule, draws


def sample_process(
    sampler: Callable[..., Tensor],
    denoiser: Denoiser,
    y: Tensor,
    schedule: NoiseSchedule,
    ts: Sequence[int],
    process: SpectralProcess | None = None,
    *,
    noise_colour: str = DEFAULT_COLOUR,
    x_T: Tensor | None = None,
    shape: Sequence[int] | None = None,
    generator: Generators = None,
    **kwargs: Any,
) -> Tensor:
    """``sampler(denoiser, y, schedule, ts, ...)`` on ``process`` (None: white, shared) with
    the injected noise coloured by ``noise_colour`` (:func:`weather_sr.core.spectral.colour_gains`,
    stochastic samplers only). ``x_T`` / ``shape``: ``[B, C, H, W]``, white noise of u (drawn
    from ``generator`` when not given). Returns z0 ``[B, C, H, W]`` in y's dtype."""
    h, w = y.shape[-2:]
    gains = colour_gains(noise_colour, schedule, h, w)
    if (process is None or process.trivial) and gains is None:
        given = {k: v for k, v in (("x_T", x_T), ("shape", shape)) if v is not None}
        return sampler(denoiser, y, schedule, ts, generator=generator, **given, **kwargs)
    grid = (process or SpectralProcess()).on_grid(schedule, h, w)
    den = shaped(denoiser, grid)
    coefs = grid.coefficients
    if x_T is None:
        if shape is None:
            raise ValueError("sampling: give x_T or shape")
        x_T = randn_like_batch(shape, generator, y.device, y.dtype)
    if coefs is None:
        if gains is not None:
            kwargs["noise_colour"] = _colourer(gains, in_coefficients=False)
        u0 = sampler(den, y, schedule, ts, x_T=x_T, generator=generator, **kwargs)
    else:  # the state is F_R u; the drawn noises are mapped by F_R too (white stays white, and
        # a member's noise is the same realisation as on the shared schedule)
        kwargs["noise_colour"] = _colourer(gains, in_coefficients=True)
        c0 = sampler(_in_coefficients(den), y, coefs, ts, x_T=real_fourier2(x_T.to(y)),
                     generator=generator, **kwargs)
        u0 = inverse_real_fourier2(c0)
    return grid.colour(u0)


def _colourer(gains: Callable[[int], Tensor] | None, *, in_coefficients: bool
              ) -> Callable[[Tensor, int], Tensor]:
    """The sampler's ``noise_colour``: z -> F_R^-1 (g_t F_R z) on u, or g_t F_R z on F_R u."""
    def colour(z: Tensor, step: int) -> Tensor:
        c = real_fourier2(z)
        if gains is not None:
            c = gains(step).to(c) * c
        return c if in_coefficients else inverse_real_fourier2(c)

    return colour
