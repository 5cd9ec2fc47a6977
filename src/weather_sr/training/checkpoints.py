"""A training run's checkpoints: retention of ``step_*.pt`` and ``best.pt``, RNG states."""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from weather_sr.model.checkpoint import plain, save_checkpoint

STEP_FILE = re.compile(r"^step_(\d{8})\.pt$")
# temp files of atomic_output (".step_00000012.pt.x1y2z3.tmp"): a writer killed by SIGKILL or a
# power cut leaves one behind; it is never taken for a checkpoint (STEP_FILE does not match)
STALE_TEMP = re.compile(r"^\.(step_\d{8}|best)\.pt\..+\.tmp$")


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
