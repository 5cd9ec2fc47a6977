"""Preconditioning: the module that turns a backbone into the contract's denoiser.

The role of EDM's ``EDMPrecond`` (Karras et al. 2022) and k-diffusion's ``Denoiser``: the
backbone F(x, noise_level, cond) (here :class:`weather_sr.nn.unet.UNet`) is wrapped into
``denoiser(x_t [B, C, H, W], y [B, Cy, H, W], t int64 [B]) -> eps [B, C, H, W]``
(:data:`weather_sr.core.process.Denoiser`), with the integer step t given to the backbone as a
float32 noise level. ``prediction`` says what F predicts:

- ``"epsilon"``: eps_theta = F (DDPM);
- ``"v"``: F predicts v = alpha_t eps - sigma_t z0 (Salimans & Ho 2022), so
  eps_theta = sigma_t x_t + alpha_t F, with alpha_t = sqrt(ab_t), sigma_t = sqrt(1 - ab_t)
  formed in float64 from the schedule and cast to x_t's dtype.

x_t lives in the space the diffusion runs on (z0 = x0 / s with the model's target scale s, see
:class:`weather_sr.model.downscaling_model.DownscalingModel`, which scales before and after).

:class:`Precond` holds no parameters or buffers of its own: the backbone's ``state_dict`` is what
checkpoints save (``Precond.state_dict()`` would prefix every key with ``backbone.``, so never
save the wrapper).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from weather_sr.core.schedule import NoiseSchedule, gather

__all__ = ["PREDICTIONS", "Precond"]

PREDICTIONS = ("epsilon", "v")


class Precond(nn.Module):
    """``eps = Precond(backbone, schedule, prediction)(x_t, y, t)`` (see module doc).

    Args:
        backbone: ``backbone(x [B, C, H, W], noise_level float32 [B], cond [B, Cy, H, W])``
            ``-> [B, C, H, W]`` (a UNet, or a DDP wrapper around one).
        schedule: the noise schedule (needed for ``"v"``).
        prediction: ``"epsilon"`` or ``"v"``.
    """

    def __init__(
        self, backbone: nn.Module, schedule: NoiseSchedule | None, prediction: str = "epsilon"
    ) -> None:
        super().__init__()
        if prediction not in PREDICTIONS:
            raise ValueError(f"Precond: expected a prediction in {PREDICTIONS}, got {prediction!r}")
        if prediction == "v" and schedule is None:
            raise ValueError("Precond: expected a schedule for prediction 'v', got None")
        self.backbone = backbone
        self.schedule = schedule
        self.prediction = prediction

    def forward(self, x_t: Tensor, y: Tensor, t: Tensor, *, wrap_x: bool = True) -> Tensor:
        """x_t ``[B, C, H, W]``, y ``[B, Cy, H, W]``, t int64 ``[B]`` -> eps ``[B, C, H, W]``;
        ``wrap_x`` goes to the backbone (False: the input is narrower than a periodic x axis)."""
        out = self.backbone(x_t, t.to(x_t.device, torch.float32), y, wrap_x=wrap_x)
        if self.prediction == "epsilon":
            return out
        assert self.schedule is not None  # checked in __init__
        alpha = gather(self.schedule.alpha_bars.sqrt(), t, x_t)
        sigma = gather((1.0 - self.schedule.alpha_bars).sqrt(), t, x_t)
        return sigma * x_t + alpha * out
