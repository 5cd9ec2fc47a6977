"""The checkpoint file format: atomic writes and safe loading.

Rebuilding a model from a loaded checkpoint is :mod:`weather_sr.model.loading`; retention and RNG
states of a training run are :mod:`weather_sr.training.checkpoints`.

A checkpoint is a plain dict of tensors, containers, str/int/float/bool/None (no class instances),
so it loads with ``torch.load(weights_only=True)``: loading never executes code. Keys:

    format, format_version, package_version, step, model, ema, optimizer, scheduler, rng,
    config (resolved, plain dict), normalizer (Normalizer.to_dict()), channels, units,
    scale_factor, interpolation, grid (Grid.to_dict()), best_val, regression (or None:
    {"model_config", "target", "channels", "state"} of the frozen CorrDiff base model).
"""

from __future__ import annotations

import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from weather_sr import __version__
from weather_sr.atomic import atomic_output
from weather_sr.errors import UserError

FORMAT = "weather-sr-checkpoint"
FORMAT_VERSION = 1
REQUIRED = ("step", "model", "ema", "config", "channels")


def plain(obj: Any) -> Any:
    """Convert numpy arrays/scalars and tuples to plain Python so weights_only can load them."""
    if isinstance(obj, dict):
        return {str(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [plain(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> Path:
    """Write ``payload`` atomically (temp file + rename), replacing an existing file."""
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "package_version": __version__,
        **payload,
    }
    with atomic_output(path, overwrite=True, what="checkpoint") as tmp:
        torch.save(payload, tmp)
    return Path(path)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint without executing code; UserError if missing, corrupt or incompatible."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint {path} does not exist")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        unsafe = re.search(r"Unsupported global: GLOBAL (\S+)", str(error))
        if unsafe:
            raise UserError(
                f"checkpoint {path} refers to {unsafe.group(1)} (code, not data) and was refused: "
                "loading it could run code; use checkpoints written by weather-sr train"
            ) from None
        raise UserError(
            f"checkpoint {path} is not a weather-sr checkpoint (not a PyTorch file, or corrupted):"
            " give a .pt file written by weather-sr train"
        ) from None
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError) as error:
        text = str(error).strip()
        first = text.splitlines()[0].split(". ")[0] if text else type(error).__name__
        raise UserError(
            f"checkpoint {path} is truncated or corrupted ({first}): use another checkpoint, "
            "e.g. the previous step_*.pt of the run"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise UserError(f"checkpoint {path} is not a weather-sr training checkpoint")
    if payload.get("format_version") != FORMAT_VERSION:
        raise UserError(
            f"checkpoint {path} has format version {payload.get('format_version')}, this "
            f"weather-sr ({__version__}) reads version {FORMAT_VERSION}: use the weather-sr "
            f"version that wrote it ({payload.get('package_version')}) or train again"
        )
    missing = [k for k in REQUIRED if k not in payload]
    if missing:
        raise UserError(f"checkpoint {path} is incomplete: missing {', '.join(missing)}")
    return payload


# What checkpoints written before these diffusion keys existed were trained with.
LEGACY_DIFFUSION = {"prediction": "epsilon", "scale_target": False}


def saved_diffusion_setting(payload: dict[str, Any], key: str) -> Any:
    """``payload["config"]["diffusion"][key]``, or its legacy value for older checkpoints."""
    return payload["config"]["diffusion"].get(key, LEGACY_DIFFUSION.get(key))
