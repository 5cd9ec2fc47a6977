"""Atomic output: write to a temporary file beside the target, then rename.

A reader never sees a half-written file, an interrupted writer leaves nothing at the target,
and an existing file is only replaced when the caller allows it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from weather_sr.errors import UserError


def check_output_path(path: str | os.PathLike[str], overwrite: bool, what: str = "output") -> Path:
    """Validate that ``path`` can be written; raise UserError naming the problem otherwise."""
    target = Path(path)
    parent = target.parent if str(target.parent) else Path(".")
    if parent.exists() and not parent.is_dir():
        raise UserError(f"{what} {target}: {parent} is a file, not a folder: choose another path")
    if not parent.is_dir():
        raise UserError(f"{what} {target}: folder {parent} does not exist: create it or choose "
                        "another path")
    if not (os.access(parent, os.W_OK) and _can_create(parent)):
        raise UserError(f"{what} {target}: folder {parent} is not writable: choose another path")
    if target.exists() and not overwrite:
        raise UserError(f"{what} {target} already exists: pass --overwrite to replace it")
    return target


def _can_create(folder: Path) -> bool:
    """Whether a file can really be created in ``folder`` (os.access says yes to root, also on
    read-only or virtual file systems such as /proc)."""
    try:
        fd, name = tempfile.mkstemp(prefix=".weather-sr-probe.", suffix=".tmp", dir=folder)
    except OSError:
        return False
    os.close(fd)
    os.unlink(name)
    return True


@contextlib.contextmanager
def atomic_output(
    path: str | os.PathLike[str], overwrite: bool = False, what: str = "output"
) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; rename it onto ``path`` on success.

    On any exception (KeyboardInterrupt included) the temporary file or folder is removed and
    the target is left as it was.
    """
    target = check_output_path(path, overwrite, what)
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp",
                                        dir=target.parent)
    except OSError as error:
        raise UserError(f"{what} {target}: cannot write in {target.parent} ({error.strerror}): "
                        "choose another path") from None
    os.close(fd)
    tmp = Path(tmp_name)
    tmp.unlink()  # the writer creates it (a file, or a folder for Zarr)
    try:
        yield tmp
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        os.replace(tmp, target)
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        raise
