"""Device selection: ``auto`` picks CUDA, then Apple MPS, then CPU; explicit choices are checked."""

from __future__ import annotations

import torch

from weather_sr.errors import UserError

DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def select_device(name: str = "auto") -> torch.device:
    """Return the torch device for ``name`` (``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``).

    ``auto`` prefers CUDA, then MPS, then CPU. Asking for an unavailable device raises a UserError
    naming ``--device`` and what to use instead.
    """
    name = (name or "auto").strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    kind = name.split(":", 1)[0]
    if kind not in DEVICE_CHOICES:
        raise UserError(f"--device {name!r} is not known: use one of {', '.join(DEVICE_CHOICES)}")
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise UserError("--device cuda: no CUDA GPU is available; use --device auto or cpu")
        if ":" in name:
            index = name.split(":", 1)[1]
            if not index.isdigit() or int(index) >= torch.cuda.device_count():
                raise UserError(
                    f"--device {name}: there are {torch.cuda.device_count()} CUDA devices; "
                    "use cuda:0 .. cuda:N-1"
                )
    if kind == "mps" and not _mps_available():
        raise UserError("--device mps: Apple MPS is not available here; use --device auto or cpu")
    return torch.device(name)
