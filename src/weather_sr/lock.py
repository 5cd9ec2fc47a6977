"""One writer per output: :func:`output_lock` takes an exclusive lock file beside the output
before any work and removes it on exit, so that a second weather-sr run to the same output (a
file, a Zarr store and its partial store, a run, report or demo folder) exits at once instead of
writing into the first one's work.

The lock is the hidden sibling ``.NAME.lock``, created with ``O_CREAT | O_EXCL`` (atomic on local
and NFSv3+ file systems), holding the owner's host, PID and process start time as JSON. A lock
whose owner is gone (same host, and no process with that PID and start time) is stale: it is
removed and taken. A lock of another host is never judged stale (its processes cannot be seen):
the message says which file to delete if that run is known to have stopped.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from weather_sr.errors import UserError

PathLike = str | os.PathLike[str]


def lock_path(output: PathLike) -> Path:
    """The lock file of ``output``: ``.NAME.lock`` beside it."""
    out = Path(os.fspath(output).rstrip("/") or "/")
    return out.parent / f".{out.name}.lock"


def _start_time(pid: int) -> str | None:
    """The start time of process ``pid`` (clock ticks since boot, from /proc), None if unknown;
    with the PID it names one process, whatever PIDs are reused later."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[-1].split()[19]  # field 22: starttime


def _owner() -> dict[str, Any]:
    return {"weather_sr_lock": 1, "host": socket.gethostname(), "pid": os.getpid(),
            "start": _start_time(os.getpid()), "since": time.strftime("%Y-%m-%d %H:%M:%S")}


def _alive(owner: dict[str, Any]) -> bool:
    """Whether the lock's owner may still run (True when it cannot be known)."""
    if owner.get("host") != socket.gethostname():
        return True
    pid = owner.get("pid")
    if isinstance(pid, bool) or not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        pass
    start = owner.get("start")
    return start is None or _start_time(pid) in (None, start)


def _read(path: Path) -> dict[str, Any] | None:
    """The owner recorded in a lock file; None when it is not a weather-sr lock (or empty: a
    lock being written this instant counts as held)."""
    try:
        owner = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return owner if isinstance(owner, dict) and owner.get("weather_sr_lock") == 1 else None


def _try_create(path: Path, owner: dict[str, Any]) -> bool | None:
    """Create the lock file: True when taken, False when it exists, None when the folder takes
    no file at all (missing, read-only: the output's own checks then say so)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return False
    except OSError:
        return None
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(json.dumps(owner))
    except OSError:  # a full disk: no lock, nothing left (the output's writer says why)
        with contextlib.suppress(OSError):
            path.unlink()
        return None
    return True


@contextlib.contextmanager
def output_lock(output: PathLike, what: str = "output") -> Iterator[Path | None]:
    """Hold the lock of ``output`` for the ``with`` block; UserError (nothing changed) when
    another live weather-sr run holds it. Take it before the output's checks (a run that
    already writes makes them see its partial work) and any other work."""
    path = lock_path(output)
    owner = _owner()
    taken = _try_create(path, owner)
    if taken is False:
        held = _read(path)
        if held is not None and not _alive(held):  # stale: its run was killed
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            taken = _try_create(path, owner)
    if taken is False:
        held = _read(path) or {}
        who = (f" (PID {held.get('pid')} on {held.get('host')}, since {held.get('since')})"
               if held else "")
        raise UserError(f"another weather-sr run is writing {what} {output}{who}: wait for it "
                        f"to end, or choose another output; if no such run is alive, delete "
                        f"{path}")
    try:
        yield path if taken else None
    finally:
        if taken and _read(path) == owner:  # never remove a lock another run has taken since
            with contextlib.suppress(OSError):
                path.unlink()


def lock_output(output: PathLike, what: str, writer: bool = True
                ) -> contextlib.AbstractContextManager[Path | None]:
    """:func:`output_lock` for the process that writes (rank 0 under torchrun), a no-op for the
    others."""
    return output_lock(output, what) if writer else contextlib.nullcontext()
