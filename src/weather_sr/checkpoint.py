"""Training checkpoints: atomic writes, safe loading, retention, RNG states.

A checkpoint is a plain dict of tensors, containers, str/int/float/bool/None (no class instances),
so it loads with ``torch.load(weights_only=True)``: loading never executes code. Keys:

    format, format_version, package_version, step, model, ema, optimizer, scheduler, rng,
    config (resolved, plain dict), normalizer (Normalizer.to_dict()), channels, units,
    scale_factor, interpolation, grid (Grid.to_dict()), best_val, regression (or None:
    {"model_config", "target", "channels", "state"} of the frozen CorrDiff base model).
"""

from __future__ import annotations

import pickle
import random
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
STEP_FILE = re.compile(r"^step_(\d{8})\.pt$")
# temp files of atomic_output (".step_00000012.pt.x1y2z3.tmp"): a writer killed by SIGKILL or a
# power cut leaves one behind; it is never taken for a checkpoint (STEP_FILE does not match)
STALE_TEMP = re.compile(r"^\.(step_\d{8}|best)\.pt\..+\.tmp$")


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


def model_from_payload(payload: dict[str, Any], *, ema: bool = True, source: str = "checkpoint"):
    """Rebuild a ``DownscalingModel`` (CPU) from a loaded checkpoint payload."""
    from weather_sr.config import config_from_dict, config_to_dict
    from weather_sr.model import DownscalingModel, build_unet

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
        from weather_sr.schedule import make_schedule

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


# ---------------------------------------------------------------- RNG states


def rng_state() -> dict[str, Any]:
    """Global RNG states (torch CPU, CUDA if present, numpy, python) as plain data."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": [
            kind,
            torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            int(pos),
            int(has_gauss),
            float(cached),
        ],
        "python": plain(random.getstate()),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ---------------------------------------------------------------- retention


class CheckpointManager:
    """``step_XXXXXXXX.pt`` files in ``<run_dir>/checkpoints``, the last ``keep_last`` kept, plus
    ``best.pt`` (lowest validation loss)."""

    def __init__(self, run_dir: str | Path, keep_last: int) -> None:
        self.dir = Path(run_dir) / "checkpoints"
        self.keep_last = keep_last

    def steps(self) -> list[Path]:
        if not self.dir.is_dir():
            return []
        return sorted(p for p in self.dir.iterdir() if STEP_FILE.match(p.name))

    def latest(self) -> Path | None:
        files = self.steps()
        return files[-1] if files else None

    def remove_stale_temps(self) -> list[Path]:
        """Delete temp files left by a killed writer (call only when no other process writes
        this run, e.g. on --resume); returns what was removed."""
        if not self.dir.is_dir():
            return []
        stale = [p for p in self.dir.iterdir() if STALE_TEMP.match(p.name)]
        for p in stale:
            p.unlink(missing_ok=True)
        return stale

    @property
    def best(self) -> Path:
        return self.dir / "best.pt"

    def save(self, payload: dict[str, Any], best: bool = False) -> Path:
        self.dir.mkdir(parents=True, exist_ok=True)
        path = save_checkpoint(self.dir / f"step_{payload['step']:08d}.pt", payload)
        if best:
            save_checkpoint(self.best, payload)
        for old in self.steps()[: -self.keep_last]:
            old.unlink(missing_ok=True)
        return path
