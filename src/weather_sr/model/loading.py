"""Rebuild a :class:`DownscalingModel` from a checkpoint (file or loaded payload)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from weather_sr.config import config_from_dict, config_to_dict
from weather_sr.core.schedule import make_schedule
from weather_sr.errors import UserError
from weather_sr.model.checkpoint import load_checkpoint, saved_diffusion_setting
from weather_sr.model.downscaling_model import DownscalingModel, build_unet


def load_model(
    path: str | Path, device: torch.device | str = "cpu", ema: bool = True
) -> DownscalingModel:
    """Load a training checkpoint (safely, weights only) into an eval-mode model on ``device``.

    ``ema=True`` uses the EMA weights (what validation and inference should use).
    """
    payload = load_checkpoint(path)
    return model_from_payload(payload, ema=ema, source=str(path)).to(device).eval()


def model_from_payload(
    payload: dict[str, Any], *, ema: bool = True, source: str = "checkpoint"
) -> DownscalingModel:
    """Rebuild a ``DownscalingModel`` (CPU) from a loaded checkpoint payload."""
    if not isinstance(payload["config"], dict):
        raise UserError(f"{source}: the checkpoint's config is not a mapping: it is corrupted")
    # the saved config is validated like a user's: an incompatible version or a hand-edited
    # checkpoint gives a UserError naming the key instead of a KeyError deep inside
    cfg = config_to_dict(config_from_dict(payload["config"], source=f"{source} (its config)"))
    kind = cfg["model"]["kind"]
    target = cfg["diffusion"]["target"]
    channels = len(payload["channels"])
    periodic = bool((payload.get("grid") or {}).get("periodic", False))
    reg = payload.get("regression")
    regression = None
    if reg is not None:
        try:
            reg_net = build_unet(reg["model_config"], reg["channels"], reg["channels"], periodic)
        except (KeyError, TypeError, ValueError) as error:
            raise UserError(f"{source}: its regression base is incomplete or from an incompatible "
                            f"version ({type(error).__name__}: {error})") from None
        _load_state(reg_net, reg["state"], source + " (regression base)")
        regression = DownscalingModel(
            reg_net, kind="regression", target=reg["target"], channels=reg["channels"]
        )
    cond_channels = channels * (2 if target == "regression_residual" else 1)
    net = build_unet(cfg["model"], channels, cond_channels, periodic)
    _load_state(net, payload["ema" if ema else "model"], source)
    schedule = None
    if kind == "diffusion":
        schedule = make_schedule(cfg["diffusion"]["schedule"], cfg["diffusion"]["timesteps"])
    meta = {
        k: payload.get(k)
        for k in (
            "config",
            "normalizer",
            "channels",
            "units",
            "scale_factor",
            "interpolation",
            "grid",
            "step",
        )
    }
    return DownscalingModel(
        net,
        kind=kind,
        target=target,
        channels=channels,
        schedule=schedule,
        regression=regression,
        prediction=saved_diffusion_setting(payload, "prediction"),
        target_scale=_target_scale(payload.get("target_scale"), channels, source),
        meta=meta,
    )


def _target_scale(value: Any, channels: int, source: str) -> torch.Tensor | None:
    if value is None:
        return None
    scale = torch.as_tensor(value, dtype=torch.float32)
    if scale.shape != (channels,) or not bool((scale > 0).all()):
        raise UserError(f"{source}: its target_scale {value} is not {channels} positive numbers: "
                        "the checkpoint is corrupted")
    return scale


def _load_state(net: torch.nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    try:
        net.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as error:
        first = str(error).strip().splitlines()[0]
        raise UserError(f"{source}: weights do not fit the model in its config: {first}") from None
