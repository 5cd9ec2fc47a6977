"""A trained downscaling model: the UNet plus what turns it into a denoiser and back into fields.

Targets (``diffusion.target``, docs/method.md §5) — the network models x0 = HR − base(cond):

- ``full``: base = 0 (SR3);
- ``residual``: base = the interpolated LR field, i.e. the first C channels of ``cond`` (or, with
  separate predictors, the same-named ones: ``base_index``)
  (ClimateDiffuse; the default);
- ``regression_residual``: base = a frozen regression model's prediction, which is also appended to
  the network condition (CorrDiff).

The diffusion runs on z0 = x0 / s, with s the per-channel RMS of x0 on the training split
(``target_scale``; all ones when off): a residual is much smaller than the field, and a target of
unit scale keeps the noise schedule's signal-to-noise ratios what they were designed to be.

Parameterisation (``prediction``, docs/method.md §6) — the loss is always the founding derivation's
ε-loss; what changes is how the network output F becomes ε_θ (a preconditioning in the sense of
EDM, Karras et al. 2022; the module :class:`weather_sr.nn.precond.Precond` around the UNet,
``DownscalingModel.denoiser``):

- ``epsilon``: ε_θ = F (DDPM). Its x0 estimate (x_t − σ_t ε_θ) / α_t multiplies the network's error
  by σ_t / α_t, about 60 at t = 900 of the linear schedule;
- ``v``: F predicts v = α_t ε − σ_t z0 (Salimans & Ho 2022), so ε_θ = σ_t x_t + α_t F and the
  x0 estimate α_t x_t − σ_t F errs by at most the network's error, at every t (α_t² + σ_t² = 1).

The forward noise may be shaped and the schedule set per F_R coefficient (``spectral``, a
:class:`weather_sr.core.spectral.SpectralProcess`, docs/method.md §9); None is white noise with the
shared schedule. ``DownscalingModel.sample`` draws z0 with any sampler on that process, scales it
back and adds the base.
Everything works on *normalised* tensors; (de)normalisation is the data module's job.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from weather_sr.core.process import Denoiser
from weather_sr.core.sampling import DEFAULT_SAMPLER, DEFAULT_STEPS
from weather_sr.core.spectral import SpectralProcess
from weather_sr.nn.precond import PREDICTIONS, Precond
from weather_sr.nn.unet import UNet

if TYPE_CHECKING:
    from weather_sr.config import ModelConfig
    from weather_sr.data.condition import ConditionSpec
    from weather_sr.model.meta import CheckpointMeta


def resolve_padding_x(model_cfg: ModelConfig, periodic: bool) -> str:
    """``auto`` -> circular on grids global in longitude, zeros otherwise."""
    mode = model_cfg.padding_x
    if mode == "auto":
        return "circular" if periodic else "zeros"
    return mode


def condition_channels(condition: ConditionSpec | None, channels: int, corrdiff: bool) -> int:
    """Channels of the UNet's condition: the data condition's (C for the SR3 one, None), plus
    the C channels of the regression mean for ``regression_residual`` (``corrdiff``)."""
    n = channels if condition is None else len(condition.channels)
    return n + (channels if corrdiff else 0)


def build_unet(
    model_cfg: ModelConfig, channels: int, cond_channels: int, periodic: bool,
    condition: ConditionSpec | None = None,
) -> UNet:
    """The UNet of a typed ``model`` config section.

    A diffusion model sees [x_t, cond]; a regression model sees only cond (in_channels = 0).
    ``condition``'s scalars (if any) also enter the UNet's embedding.
    """
    m = model_cfg
    return UNet(
        in_channels=channels if m.kind == "diffusion" else 0,
        out_channels=channels,
        cond_channels=cond_channels,
        base_channels=m.base_channels,
        channel_mults=tuple(m.channel_mults),
        num_res_blocks=m.num_res_blocks,
        attention_levels=tuple(m.attention_levels),
        mid_attention=m.mid_attention,
        head_channels=m.head_channels,
        dropout=m.dropout,
        groups=m.groups,
        padding_y=m.padding_y,
        padding_x=resolve_padding_x(m, periodic),
        scalars=None if condition is None else condition.scalar_channels,
    )


class DownscalingModel:
    """UNet + target/base logic. ``net`` may be a DDP wrapper around the UNet during training.

    Attributes: ``kind`` ("diffusion" | "regression"), ``target``, ``channels`` (C), ``schedule``
    (a ``NoiseSchedule`` for diffusion, else None), ``regression`` (the frozen base model for
    ``regression_residual``), ``prediction`` ("epsilon" | "v"), ``target_scale`` (s, a float32
    tensor ``[C]``: the diffusion runs on x0 / s), ``meta`` (a
    :class:`~weather_sr.model.meta.CheckpointMeta`: normaliser, channel names, units, grid,
    scale factor, the saved config) when loaded from a checkpoint, else None; ``spectral`` (a
    :class:`~weather_sr.core.spectral.SpectralProcess`, or None: white noise, shared schedule).
    """

    def __init__(
        self,
        net: nn.Module,
        *,
        kind: str,
        target: str,
        channels: int,
        schedule: Any = None,
        regression: DownscalingModel | None = None,
        prediction: str = "epsilon",
        target_scale: torch.Tensor | None = None,
        meta: CheckpointMeta | None = None,
        base_index: list[int] | None = None,
        spectral: SpectralProcess | None = None,
    ) -> None:
        if prediction not in PREDICTIONS:
            raise ValueError(f"prediction {prediction!r} is not one of {PREDICTIONS}")
        self.net, self.kind, self.target, self.channels = net, kind, target, channels
        self.schedule, self.regression, self.meta = schedule, regression, meta
        self.prediction = prediction
        self.spectral = None if spectral is None or spectral.trivial else spectral
        scale = torch.ones(channels) if target_scale is None else torch.as_tensor(target_scale)
        if scale.shape != (channels,) or not bool((scale > 0).all()):
            raise ValueError(f"target_scale must be {channels} positive numbers, got {scale}")
        self.target_scale = scale.float()
        self.base_index = None if base_index is None else list(base_index)
        if self.base_index is not None and len(self.base_index) != channels:
            raise ValueError(f"base_index {self.base_index} must name {channels} channels")

    # -- composition shared by training and inference

    @torch.no_grad()
    def base(self, cond: torch.Tensor, *, wrap_x: bool = True) -> torch.Tensor:
        """cond [B, Cy, H, W] (normalised) -> the base field [B, C, H, W] the target adds to
        (``wrap_x``: for the regression base, as in :meth:`regress`)."""
        if self.target == "full":
            return torch.zeros_like(cond[:, : self.channels])
        if self.target == "residual":
            if self.base_index is None:  # the SR3 condition: its first C channels
                return cond[:, : self.channels]
            return cond[:, self.base_index]
        if self.regression is None:
            raise RuntimeError("regression_residual model without its regression base model")
        return self.regression.predict(cond, wrap_x=wrap_x)

    def condition(self, cond: torch.Tensor, base: torch.Tensor | None = None) -> torch.Tensor:
        """The network's condition: cond, plus the regression base for ``regression_residual``."""
        if self.target != "regression_residual":
            return cond
        return torch.cat([cond, self.base(cond) if base is None else base], dim=1)

    def scale_target(self, x0: torch.Tensor) -> torch.Tensor:
        """x0 [B, C, H, W] (target units) -> z0 = x0 / s, what the diffusion runs on."""
        return x0 / self.target_scale.to(x0.device, x0.dtype).view(1, -1, 1, 1)

    def unscale_target(self, z0: torch.Tensor) -> torch.Tensor:
        """z0 [B, C, H, W] -> x0 = s z0 (inverse of :meth:`scale_target`)."""
        return z0 * self.target_scale.to(z0.device, z0.dtype).view(1, -1, 1, 1)

    @property
    def denoiser(self) -> Precond:
        """The contract's denoiser (x_t [B, C, H, W], y [B, Cy', H, W], t int64 [B]) -> ε.

        A :class:`weather_sr.nn.precond.Precond` around ``self.net`` (ε or v parameterisation);
        built on each access, so it always wraps the current ``net``, and never saved (the
        checkpoints hold ``net``'s own state dict). ``x_t`` lives in the scaled space of z0;
        ``y`` is the *network* condition, i.e. ``self.condition(cond)``.
        """
        return Precond(self.net, self.schedule, self.prediction)

    def regress(self, y: torch.Tensor, *, wrap_x: bool = True) -> torch.Tensor:
        """Regression network output (x0 of the target) for the network condition y
        (``wrap_x`` False: y is narrower than a periodic x axis, as in the denoiser contract)."""
        level = torch.zeros(y.shape[0], device=y.device)
        return self.net(None, level, y, wrap_x=wrap_x)

    @torch.no_grad()
    def predict(self, cond: torch.Tensor, *, wrap_x: bool = True) -> torch.Tensor:
        """Regression models: cond [B, Cy, H, W] -> deterministic HR estimate [B, C, H, W]."""
        if self.kind != "regression":
            raise RuntimeError("predict() is for regression models; use sample()")
        return (self.base(cond, wrap_x=wrap_x)
                + self.regress(self.condition(cond), wrap_x=wrap_x).float())

    @torch.no_grad()
    def sample(
        self,
        cond: torch.Tensor,
        sampler: str | Callable[..., torch.Tensor] = DEFAULT_SAMPLER,
        steps: int | None = DEFAULT_STEPS,
        generator: torch.Generator | list[torch.Generator] | None = None,
        denoiser_wrapper: Callable[[Denoiser], Denoiser] | None = None,
        *,
        spacing: str | None = None,
        **kwargs: Any,
    ) -> torch.Tensor:
        """cond [B, Cy, H, W] normalised -> one sample per row [B, C, H, W] (normalised HR).

        ``sampler`` is a name in ``weather_sr.core.sampling.SAMPLER_NAMES``, run on its grid
        ``sampling.sampler_timesteps(sampler, schedule, steps, spacing)`` (ancestral: all T
        steps), or a sampler function ``fn(denoiser, y, schedule, ts, **kw)``, run on
        ``sampling.timesteps(schedule, steps, spacing or "trailing")`` (steps None: every step).
        Defaults: ``sampling.DEFAULT_SAMPLER`` / ``DEFAULT_STEPS`` (DPM-Solver++(2M), 20 steps).
        Extra ``kwargs`` (eta, variance, x_T, progress, ``noise_colour``, ...) go to
        :func:`weather_sr.core.spectral_sampling.sample_process`, which runs the sampler on the
        model's process.
        ``denoiser_wrapper`` (e.g. tiling) wraps the denoiser. Regression models ignore the
        sampler and return their prediction.
        """
        if self.kind == "regression":
            return self.predict(cond)
        from weather_sr.core import sampling
        from weather_sr.core.spectral_sampling import sample_process

        if isinstance(sampler, str):
            ts = sampling.sampler_timesteps(sampler, self.schedule, steps, spacing)
            fn = sampling.SAMPLERS[sampler]
        else:
            fn = sampler
            n = self.schedule.T if steps is None else steps
            ts = sampling.timesteps(self.schedule, n, spacing or "trailing")
        base = self.base(cond)
        y = self.condition(cond, base)
        den = self.denoiser if denoiser_wrapper is None else denoiser_wrapper(self.denoiser)
        shape = (cond.shape[0], self.channels, *cond.shape[-2:])
        if kwargs.get("x_T") is None:
            kwargs["shape"] = shape
        z0 = sample_process(fn, den, y, self.schedule, ts, self.spectral, generator=generator,
                            **kwargs)
        return base + self.unscale_target(z0.float())

    def to(self, device: torch.device | str) -> DownscalingModel:
        self.net.to(device)
        if self.regression is not None:
            self.regression.to(device)
        return self

    def eval(self) -> DownscalingModel:
        self.net.eval()
        if self.regression is not None:
            self.regression.eval()
        return self
