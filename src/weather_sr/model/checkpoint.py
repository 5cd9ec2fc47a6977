"""The checkpoint file format: atomic writes and safe loading.

Rebuilding a model from a loaded checkpoint is :mod:`weather_sr.model.loading`; retention and RNG
states of a training run are :mod:`weather_sr.training.checkpoints`.

A checkpoint is a plain dict of tensors, containers, str/int/float/bool/None (no class instances),
so it loads with ``torch.load(weights_only=True)``: loading never executes code. Keys:

    format, format_version, package_version, step, model, ema, optimizer, grad_scaler,
    scheduler, rng, config (resolved, plain dict), normalizer (Normalizer.to_dict()), channels,
    units, scale_factor, interpolation, grid (Grid.to_dict()), best_val, nonfinite_skips,
    regression (or None: {"model_config", "target", "channels", "state"} of the frozen CorrDiff
    base model), target_scale.

Everything but the weights and the training state (model, ema, optimizer, grad_scaler,
scheduler, rng) is described by :class:`weather_sr.model.meta.CheckpointMeta`, whose
``from_payload`` checks each of those fields as data (type, shape, counts that must agree) and
``to_payload`` gives back exactly the keys and values that are written.
"""

from __future__ import annotations

import os
import pickle
import re
import stat
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from weather_sr import __version__
from weather_sr.atomic import atomic_output
from weather_sr.errors import UserError

if TYPE_CHECKING:
    pass

FORMAT = "weather-sr-checkpoint"
FORMAT_VERSION = 1
REQUIRED = ("step", "ema", "config", "channels")
# what only training needs: an export (weather-sr export) leaves it out
TRAINING_STATE = ("model", "optimizer", "grad_scaler", "scheduler", "rng")
# "Unsupported global: GLOBAL x" (torch <= 2.12 wording), "Trying to load unsupported GLOBAL x"
# (later), or the allowlisting hint that both give
_GLOBAL = re.compile(r"\bGLOBAL[:\s]+([A-Za-z_][\w.]*)|safe_globals\(\[([A-Za-z_][\w.]*)\]\)")


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


def export_payload(payload: dict[str, Any]) -> dict[str, Any]:
    """The inference-only checkpoint of a loaded training checkpoint: the EMA weights and every
    metadata field (config, normaliser, grid, condition with its static fields, regression
    base), without the raw weights, optimiser, scaler, scheduler and RNG state."""
    out = {k: v for k, v in payload.items() if k not in TRAINING_STATE}
    out["inference_only"] = True
    return out


def is_export(payload: dict[str, Any]) -> bool:
    """Whether a loaded checkpoint is an inference-only export (no training state)."""
    return bool(payload.get("inference_only")) or "optimizer" not in payload


# ---------------------------------------------------------------- loading


def _check_file(path: Path) -> None:
    """UserError unless ``path`` is a regular file; never opens it (a FIFO would block)."""
    try:
        mode = os.stat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        raise UserError(f"checkpoint {path} does not exist") from None
    except OSError as error:
        raise UserError(f"checkpoint {path} cannot be read ({error.strerror or error}): "
                        "check the path and its permissions") from None
    if stat.S_ISDIR(mode):
        raise UserError(f"checkpoint {path} is a folder, not a checkpoint file: give a .pt file, "
                        "e.g. RUN/checkpoints/step_XXXXXXXX.pt")
    if not stat.S_ISREG(mode):
        raise UserError(f"checkpoint {path} is not a regular file (a pipe, device or socket): "
                        "give a .pt file written by weather-sr train")


def _corrupted(path: Path, what: str) -> UserError:
    return UserError(f"checkpoint {path} is truncated or corrupted ({what}): use another "
                     "checkpoint, e.g. the previous step_*.pt of the run")


def _check_zip(path: Path) -> None:
    """CRC of every record of a zip-format file: torch.load does not check the tensor records, so
    flipped bytes in a weight would otherwise load silently. Files that are not zip archives
    (truncated ones lack the central directory, legacy pickles never had one) go to torch.load,
    which refuses them with its own error."""
    if not zipfile.is_zipfile(path):
        return
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError,
            NotImplementedError, RuntimeError, KeyError) as error:
        text = str(error).strip()
        raise _corrupted(path, text.splitlines()[0] if text else type(error).__name__) from None
    if bad is not None:
        raise _corrupted(path, f"CRC check failed for record {bad.rsplit('/', 1)[-1]}")


def check_header(payload: Any, path: str | Path) -> None:
    """UserError unless ``payload`` is a weather-sr checkpoint of this format version with the
    required keys."""
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


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint without executing code; UserError if missing, corrupt or incompatible.

    Before ``torch.load``: the path must be a regular file (a folder, FIFO or device is named as
    such; nothing is opened before that, so a FIFO cannot block) and, for a zip-format file, every
    record must pass its CRC check. A file whose pickle refers to code (a class or function) is
    refused, whatever torch's wording. The returned payload is only checked for its format and
    required keys; :meth:`CheckpointMeta.from_payload` checks its metadata.
    """
    path = Path(path)
    _check_file(path)
    _check_zip(path)
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        unsafe = _GLOBAL.search(str(error))
        if unsafe:
            name = (unsafe.group(1) or unsafe.group(2)).rstrip(".")
            raise UserError(
                f"checkpoint {path} refused: the file contains code ({name}): loading it could "
                "run code; use checkpoints written by weather-sr train"
            ) from None
        raise UserError(
            f"checkpoint {path} is not a weather-sr checkpoint (not a PyTorch file, or corrupted):"
            " give a .pt file written by weather-sr train"
        ) from None
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError) as error:
        text = str(error).strip()
        raise _corrupted(path, text.splitlines()[0].split(". ")[0] if text
                         else type(error).__name__) from None
    check_header(payload, path)
    return payload
