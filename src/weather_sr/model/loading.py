"""Rebuild a :class:`DownscalingModel` from a checkpoint (file or loaded payload)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from weather_sr.core.schedule import make_schedule
from weather_sr.errors import UserError
from weather_sr.model.checkpoint import load_checkpoint
from weather_sr.model.downscaling_model import (
    DownscalingModel,
    build_unet,
    condition_channels,
)
from weather_sr.model.meta import CheckpointMeta


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
    """Rebuild a ``DownscalingModel`` (CPU) from a loaded checkpoint payload.

    Its metadata is checked first (:meth:`CheckpointMeta.from_payload`: a UserError naming the
    field) and becomes ``model.meta``.
    """
    meta = CheckpointMeta.from_payload(payload, source)
    cfg = meta.config
    kind, target = meta.kind, meta.target
    channels = len(meta.channels)
    periodic = meta.periodic
    spec = None if meta.condition is None else meta.condition_spec()  # None: the SR3 one
    base_index = None if spec is None else spec.base_index
    regression = None
    if meta.regression is not None:
        reg = meta.regression
        try:
            reg_net = build_unet(reg.model, reg.channels, reg.cond_channels or reg.channels,
                                 periodic, spec)
        except (KeyError, TypeError, ValueError) as error:
            raise UserError(f"{source}: its regression base is incomplete or from an incompatible "
                            f"version ({type(error).__name__}: {error})") from None
        _load_state(reg_net, reg.state, source + " (regression base)")
        regression = DownscalingModel(
            reg_net, kind="regression", target=reg.target, channels=reg.channels,
            base_index=base_index,
        )
    cond_channels = condition_channels(spec, channels, target == "regression_residual")
    net = build_unet(cfg.model, channels, cond_channels, periodic, spec)
    weights = payload.get("ema" if ema else "model")
    if weights is None:
        raise UserError(f"{source}: an inference-only checkpoint (weather-sr export) holds only "
                        "the EMA weights: load it with ema=True")
    _load_state(net, weights, source)
    schedule = None
    if kind == "diffusion":
        schedule = make_schedule(cfg.diffusion.schedule, cfg.diffusion.timesteps)
    scale = meta.target_scale
    return DownscalingModel(
        net,
        kind=kind,
        target=target,
        channels=channels,
        schedule=schedule,
        regression=regression,
        prediction=meta.prediction,
        target_scale=None if scale is None else torch.tensor(scale, dtype=torch.float32),
        meta=meta,
        base_index=base_index,
        spectral=meta.spectral_process(),
    )


def _load_state(net: torch.nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    try:
        net.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as error:
        first = str(error).strip().splitlines()[0]
        raise UserError(f"{source}: weights do not fit the model in its config: {first}") from None
