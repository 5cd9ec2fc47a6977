"""Device selection: ``auto`` picks CUDA, then Apple MPS, then CPU; explicit choices are checked."""

from __future__ import annotations

from typing import TYPE_CHECKING

from weather_sr.errors import UserError

if TYPE_CHECKING:  # torch is imported when a device is selected, not by the CLI's parser
    import torch

DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")


def _mps_available() -> bool:
    import torch

    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def select_device(name: str = "auto") -> torch.device:
    """Return the torch device for ``name`` (``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``).

    ``auto`` prefers CUDA, then MPS, then CPU. Asking for an unavailable device raises a UserError
    naming ``--device`` as given and what to use instead.
    """
    import torch

    given = (name or "auto").strip()
    name = given.lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    kind = name.split(":", 1)[0]
    if kind not in DEVICE_CHOICES:
        raise UserError(f"--device {given!r} is not known: use one of {', '.join(DEVICE_CHOICES)}")
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"--device {given}: no CUDA GPU is available; use --device auto or cpu")
        if ":" in name:
            index = name.split(":", 1)[1]
            if not index.isdigit() or int(index) >= torch.cuda.device_count():
                raise UserError(
                    f"--device {given}: there are {torch.cuda.device_count()} CUDA devices; "
                    "use cuda:0 .. cuda:N-1"
                )
    if kind == "mps" and not _mps_available():
        raise UserError(f"--device {given}: Apple MPS is not available here; use --device auto or "
                        "cpu")
    return torch.device(name)
