"""Disk errors while writing (ENOSPC, EDQUOT, EROFS, EIO) as one line naming the file.

Libraries hide or remap the errno (netCDF/HDF5 "NetCDF: HDF error", or "Permission denied" on a
full disk; torch "enforce fail at inline_container.cc"), so where the errno does not say, the
file system of the target is examined (full or read-only).
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator
from pathlib import Path

from weather_sr.errors import UserError

PathLike = str | os.PathLike[str]

LOW_SPACE = 1 << 20  # bytes free below which a library's write error is taken for a full disk
_EDQUOT = getattr(errno, "EDQUOT", 122)
IO_PROBLEMS: dict[int, tuple[str, str]] = {
    errno.ENOSPC: ("no space left on device", "free space or choose another folder"),
    _EDQUOT: ("disk quota exceeded", "free space within your quota or choose another folder"),
    errno.EROFS: ("read-only file system", "choose another folder"),
    errno.EIO: ("input/output error", "check the disk, then choose another folder"),
}
_WORDS = {"no space left": errno.ENOSPC, "disk quota": _EDQUOT,
          "read-only file system": errno.EROFS, "input/output error": errno.EIO}


class WriteFailedError(UserError):
    """Writing an output failed because of the disk (full, quota, read-only, I/O error)."""


def errno_of(error: BaseException) -> int | None:
    seen: set[int] = set()
    e: BaseException | None = error
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno:
            return int(e.errno)
        e = e.__cause__ or e.__context__
    return None


def _disk_state(folder: Path) -> int | None:
    """ENOSPC/EROFS when the file system of ``folder`` is full or read-only, else None."""
    try:
        st = os.statvfs(folder)
    except (OSError, AttributeError):
        return None
    if st.f_flag & getattr(os, "ST_RDONLY", 1):
        return errno.EROFS
    if st.f_bavail * st.f_frsize < LOW_SPACE or (st.f_files and st.f_favail == 0):
        return errno.ENOSPC
    return None


def write_error_message(error: BaseException, path: PathLike, what: str = "output") -> str | None:
    """One line for an I/O error while writing ``path``, or None when it is not one.

    An ``OSError`` carries its errno; netCDF/HDF5 ("NetCDF: HDF error", or a "Permission denied"
    on a full disk) and torch ("enforce fail at inline_container.cc") hide or remap it, so unless
    the errno is one of ENOSPC, EDQUOT, EROFS, EIO the file system of ``path`` is examined (full
    or read-only). Call it before removing the partial file, which holds the missing space.
    """
    if not isinstance(error, OSError | RuntimeError) or isinstance(error, UserError):
        return None
    code = errno_of(error)
    if code is None:
        text = str(error).lower()
        code = next((c for words, c in _WORDS.items() if words in text), None)
    if code not in IO_PROBLEMS:  # libraries hide or remap the errno (HDF5 says EACCES)
        code = _disk_state(Path(path).parent) or code
    if code is None:
        return None
    problem, fix = IO_PROBLEMS.get(code, (os.strerror(code).lower(), "choose another folder"))
    return f"{problem} while writing {what} {path}: {fix}"


@contextlib.contextmanager
def io_errors(path: PathLike, what: str) -> Iterator[None]:
    """Turn an I/O error inside the block (a plain write, e.g. an appended CSV row) into
    :class:`WriteFailedError` naming ``path``."""
    try:
        yield
    except FileExistsError:
        raise
    except (OSError, RuntimeError) as error:
        message = write_error_message(error, path, what)
        if message is None:
            raise
        raise WriteFailedError(message) from None
