"""DownscalingModel: the v-parameterisation and the target scale (closed-form identities)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from weather_sr.core.process import eps_to_x0, q_sample
from weather_sr.core.sampling import timesteps
from weather_sr.core.schedule import make_schedule
from weather_sr.model.downscaling_model import DownscalingModel
from weather_sr.nn.precond import PREDICTIONS, Precond

SCHEDULE = make_schedule("linear", 1000)


class Fixed(nn.Module):
    """A 'network' that returns a given tensor whatever its input."""

    def __init__(self, out: torch.Tensor) -> None:
        super().__init__()
        self.out = out

    def forward(self, x: object, level: object, cond: object, wrap_x: bool = True
                ) -> torch.Tensor:
        return self.out


def _model(out: torch.Tensor, prediction: str, scale: torch.Tensor | None = None
           ) -> DownscalingModel:
    return DownscalingModel(Fixed(out), kind="diffusion", target="residual", channels=2,
                            schedule=SCHEDULE, prediction=prediction, target_scale=scale)


@pytest.mark.parametrize("t", [1, 10, 500, 900, 1000])
def test_v_prediction_of_the_true_v_gives_the_true_eps_and_x0(t: int) -> None:
    g = torch.Generator().manual_seed(0)
    z0, eps = torch.randn(3, 2, 8, 8, generator=g), torch.randn(3, 2, 8, 8, generator=g)
    tt = torch.full((3,), t)
    x_t = q_sample(SCHEDULE, z0, tt, eps)
    ab = SCHEDULE.alpha_bars[t]
    v = (ab.sqrt() * eps - (1 - ab).sqrt() * z0).float()
    got = _model(v, "v").denoiser(x_t, torch.zeros(3, 2, 8, 8), tt)
    torch.testing.assert_close(got, eps, rtol=1e-5, atol=1e-5)
    x0 = eps_to_x0(SCHEDULE, x_t, tt, got)
    torch.testing.assert_close(x0, z0, rtol=0, atol=2e-3)


@pytest.mark.parametrize("t", [10, 500, 900])
def test_x0_error_is_bounded_for_v_and_amplified_for_eps(t: int) -> None:
    # The same network error delta moves the x0 estimate by sigma_t delta (v) but by
    # (sigma_t / alpha_t) delta (epsilon): the reason the demo uses v.
    x_t = torch.randn(1, 2, 4, 4, generator=torch.Generator().manual_seed(1))
    tt = torch.full((1,), t)
    delta = 0.1 * torch.ones(1, 2, 4, 4)
    ab = float(SCHEDULE.alpha_bars[t])
    alpha, sigma = ab**0.5, (1 - ab) ** 0.5
    for prediction, factor in (("v", sigma), ("epsilon", sigma / alpha)):
        base = _model(torch.zeros_like(delta), prediction).denoiser(x_t, x_t, tt)
        moved = _model(delta, prediction).denoiser(x_t, x_t, tt)
        shift = eps_to_x0(SCHEDULE, x_t, tt, moved) - eps_to_x0(SCHEDULE, x_t, tt, base)
        torch.testing.assert_close(shift, -factor * delta, rtol=1e-4, atol=1e-6)
    if t >= 500:  # high noise: v shrinks the error, epsilon amplifies it
        assert sigma < 1.0 < sigma / alpha


def test_target_scale_round_trip_and_sample_adds_the_scaled_draw() -> None:
    scale = torch.tensor([0.1, 3.0])
    model = _model(torch.zeros(2, 2, 4, 4), "v", scale)
    x0 = torch.randn(2, 2, 4, 4, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(model.unscale_target(model.scale_target(x0)), x0)
    torch.testing.assert_close(model.scale_target(x0)[:, 1], x0[:, 1] / 3.0)
    z0 = torch.randn(2, 2, 4, 4, generator=torch.Generator().manual_seed(3))
    cond = torch.randn(2, 2, 4, 4, generator=torch.Generator().manual_seed(4))

    grids: list[list[int]] = []

    def draw(denoiser: object, y: object, schedule: object, ts: list[int], *,
             generator: object = None, shape: object = None) -> torch.Tensor:
        grids.append(ts)
        return z0

    torch.testing.assert_close(model.sample(cond, draw), cond + z0 * scale.view(1, 2, 1, 1))
    # a sampler function gets the trailing grid of the default number of steps (20)
    assert grids == [timesteps(SCHEDULE, 20)]


def test_denoiser_is_a_precond_module_and_checkpoints_keep_the_unet_keys() -> None:
    import dataclasses

    from weather_sr.config import ModelConfig
    from weather_sr.model.downscaling_model import build_unet

    cfg = dataclasses.replace(ModelConfig(), base_channels=8, channel_mults=[1, 2],
                              num_res_blocks=1, mid_attention=False, groups=4)
    net = build_unet(cfg, 2, 2, False)
    keys = list(net.state_dict())
    for prediction in PREDICTIONS:
        model = DownscalingModel(net, kind="diffusion", target="residual", channels=2,
                                 schedule=SCHEDULE, prediction=prediction)
        den = model.denoiser
        assert isinstance(den, Precond) and den.backbone is net
        assert list(model.net.state_dict()) == keys  # what checkpoints save: no "backbone."
        assert list(den.state_dict()) == [f"backbone.{k}" for k in keys]
        assert not list(den.parameters(recurse=False)) and not list(den.buffers(recurse=False))
        x_t = torch.randn(2, 2, 8, 8, generator=torch.Generator().manual_seed(6))
        t = torch.tensor([3, 700])
        with torch.no_grad():
            out = net(x_t, t.float(), x_t)
            want = out if prediction == "epsilon" else (
                (1 - SCHEDULE.alpha_bars[t]).sqrt().float().view(-1, 1, 1, 1) * x_t
                + SCHEDULE.alpha_bars[t].sqrt().float().view(-1, 1, 1, 1) * out)
            torch.testing.assert_close(den(x_t, x_t, t), want, rtol=0, atol=0)
    with pytest.raises(ValueError, match="schedule"):
        Precond(net, None, "v")


def test_bad_prediction_or_scale_is_refused() -> None:
    with pytest.raises(ValueError, match="prediction"):
        _model(torch.zeros(1), "x0")
    with pytest.raises(ValueError, match="target_scale"):
        _model(torch.zeros(1), "v", torch.tensor([1.0, 0.0]))
