"""Safe output: only weather-sr's own output is replaced, and only when the new one is complete;
an existing file that appeared meanwhile is never replaced.

(That a target is never a source is :func:`weather_sr.targets.check_target`; disk errors are
:mod:`weather_sr.write_errors`.)

- :func:`check_output_path`: the target's folder exists and is writable; an existing target only
  with ``overwrite``, and then only a regular file, or a folder carrying weather-sr's marker file
  (:data:`MARKER`) of the right kind.
- :func:`atomic_output`: the writer writes a temporary sibling (``.NAME.XXXX.tmp``); on success it
  is committed. Without ``overwrite`` the commit never replaces what appeared meanwhile
  (``os.link`` / ``renameat2(RENAME_NOREPLACE)``): :class:`OutputAppearedError`, the result is kept
  under its temporary name. With ``overwrite`` a file is renamed over the old one and a folder
  is exchanged with the old one, which is then removed. An interrupted or failed writer leaves
  nothing behind (its temporary file or folder is removed) and the target as it was; a disk error
  becomes :class:`weather_sr.write_errors.WriteFailedError`.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

from weather_sr.errors import UserError
from weather_sr.targets import special_kind
from weather_sr.write_errors import (
    IO_PROBLEMS,
    WriteFailedError,
    errno_of,
    io_errors,
    write_error_message,
)

PathLike = str | os.PathLike[str]

MARKER = ".weather-sr"  # in every run, report, demo and Zarr output folder weather-sr creates
FOLDER_KINDS = ("run", "report", "demo", "downscale")  # downscale: a Zarr output


class OutputAppearedError(UserError):
    """Without --overwrite, the target appeared while the command ran: it was not replaced."""


# ---------------------------------------------------------------- markers


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("weather-sr")
    except Exception:  # not installed (source tree on sys.path)
        return "unknown"


def write_marker(folder: PathLike, kind: str) -> Path:
    """Create ``folder/.weather-sr`` ("weather-sr <kind> <version>"); FileExistsError if there."""
    if kind not in FOLDER_KINDS:
        raise ValueError(f"marker kind {kind!r} is not one of {FOLDER_KINDS}")
    path = Path(folder) / MARKER
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    with os.fdopen(fd, "w") as fh:
        fh.write(f"weather-sr {kind} {_version()}\n")
    return path


def read_marker(folder: PathLike) -> str | None:
    """The kind in ``folder``'s marker file ("run", "report", "demo"), or None without one."""
    try:
        words = (Path(folder) / MARKER).read_text(errors="replace").split()
    except OSError:
        return None
    return words[1] if len(words) >= 2 and words[0] == "weather-sr" else None


def _is_zarr(folder: Path) -> bool:
    return any((folder / m).exists() for m in (".zgroup", ".zarray", "zarr.json", ".zmetadata"))


# ---------------------------------------------------------------- checks of the output path


def check_output_path(
    path: PathLike, overwrite: bool, what: str = "output", *, marker: str | None = None,
    option: str | None = None, checked: bool = False,
) -> Path:
    """Validate that ``path`` can be written; raise UserError naming the problem otherwise.

    ``marker``: the target is a folder of that kind (run, report, demo); with ``overwrite`` an
    existing one is replaced only if it carries weather-sr's marker of that kind. Without
    ``marker`` an existing folder is replaced only if it is a Zarr store. ``checked``: the caller
    checked the target before its work, so a target that exists now (without ``overwrite``)
    appeared meanwhile: not an error here, the commit keeps the result beside it.
    """
    target = Path(path)
    option = option or "path"
    parent = target.parent if str(target.parent) else Path(".")
    if parent.exists() and not parent.is_dir():
        raise UserError(f"{what} {target}: {parent} is a file, not a folder: choose another path")
    if not parent.is_dir():
        raise UserError(f"{what} {target}: folder {parent} does not exist: create it or choose "
                        "another path")
    if not (os.access(parent, os.W_OK) and _can_create(parent)):
        raise UserError(f"{what} {target}: folder {parent} is not writable: choose another path")
    if os.path.lexists(target) and not overwrite and not checked:
        raise UserError(f"{what} {target} already exists: pass --overwrite to replace it")
    if os.path.lexists(target) and overwrite:
        _check_replaceable(target, what, marker, option)
    return target


def _check_replaceable(target: Path, what: str, marker: str | None, option: str) -> None:
    """UserError unless ``--overwrite`` may replace the existing ``target``."""
    try:
        st = os.stat(target)
    except OSError:  # a dangling symbolic link: the link itself is replaced
        return
    special = special_kind(st.st_mode)
    if special:
        raise UserError(f"{what} {target} is a {special}: it is never replaced; choose another "
                        f"{option}")
    if marker is not None:
        if not stat.S_ISDIR(st.st_mode):
            raise UserError(f"{what} {target} is a file, not a weather-sr {marker} folder: "
                            f"choose another {option}")
        found = read_marker(target)
        if found != marker:
            has = (f"it is a weather-sr {found} folder" if found else
                   f"it has no {MARKER} marker file")
            raise UserError(
                f"{what} {target} is not a weather-sr {marker} folder ({has}): --overwrite "
                f"replaces only folders weather-sr created; remove it yourself or choose another "
                f"{option}"
            )
    elif stat.S_ISDIR(st.st_mode) and not _is_zarr(target):
        raise UserError(f"{what} {target} is a folder: give the name of a file")


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


# ---------------------------------------------------------------- commits


_RENAME_NOREPLACE, _RENAME_EXCHANGE = 1, 2


def _renameat2(src: Path, dst: Path, flags: int) -> bool:
    """Linux renameat2; False where it is unavailable (other OS, old libc, file system)."""
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return False
    at_fdcwd = -100
    if fn(at_fdcwd, os.fsencode(src), at_fdcwd, os.fsencode(dst), flags) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, getattr(errno, "ENOTSUP", 95)):
        return False
    raise OSError(code, os.strerror(code), str(dst))


def _rename_noreplace(src: Path, dst: Path) -> None:
    """Move ``src`` to ``dst``; FileExistsError (``src`` untouched) if ``dst`` exists."""
    if not src.is_dir():
        try:
            os.link(src, dst, follow_symlinks=False)
        except FileExistsError:
            raise
        except OSError:  # no hard links on this file system
            pass
        else:
            os.unlink(src)
            return
    if _renameat2(src, dst, _RENAME_NOREPLACE):
        return
    if os.path.lexists(dst):
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(dst))
    os.rename(src, dst)  # last resort: the check above and this rename are not one step


def _swap_folder(new: Path, target: Path) -> None:
    """Put the folder ``new`` at ``target`` and remove the folder that was there."""
    if _renameat2(new, target, _RENAME_EXCHANGE):
        old = new  # now holds the old folder
    else:
        old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old.", suffix=".tmp",
                                    dir=target.parent))
        os.rmdir(old)
        os.rename(target, old)
        try:
            os.rename(new, target)
        except BaseException:
            os.rename(old, target)
            raise
    shutil.rmtree(old, ignore_errors=True)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            path.unlink()


def _appeared(what: str, target: Path, kept: Path) -> OutputAppearedError:
    return OutputAppearedError(
        f"{what} {target} appeared while running (another process wrote it): it was left as it "
        f"is; this run's result is kept as {kept}: rename it, or delete it"
    )


def commit(tmp: Path, target: Path, *, overwrite: bool, what: str, marker: str | None = None,
           option: str | None = None) -> Path:
    """Move the complete ``tmp`` (file or folder) to ``target``.

    Without ``overwrite`` nothing that exists is replaced (:class:`OutputAppearedError`, ``tmp``
    kept).
    With ``overwrite`` the target is checked again (it may have changed while the command ran)
    and replaced: a file by rename, a folder by exchange, then the old folder is removed.
    """
    if overwrite and os.path.lexists(target):
        _check_replaceable(target, what, marker, option or "path")
        if tmp.is_dir() != target.is_dir():
            raise UserError(f"{what} {target} became a {'folder' if target.is_dir() else 'file'} "
                            f"while running: it was left as it is; choose another "
                            f"{option or 'path'}")
        if tmp.is_dir() and target.is_dir() and not target.is_symlink():
            _swap_folder(tmp, target)
        else:
            os.replace(tmp, target)
        return target
    try:
        _rename_noreplace(tmp, target)
    except FileExistsError:
        raise _appeared(what, target, tmp) from None
    return target


def _failed(error: BaseException, tmp: Path, target: Path, what: str) -> BaseException | None:
    """Remove ``tmp`` after a failed write; return the WriteFailedError to raise for an I/O
    error (None otherwise)."""
    message = write_error_message(error, target, what) if isinstance(error, Exception) else None
    _remove(tmp)
    return WriteFailedError(message) if message else None


@contextlib.contextmanager
def atomic_output(
    path: PathLike, overwrite: bool = False, what: str = "output", *,
    marker: str | None = None, option: str | None = None, checked: bool = False,
) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; commit it to ``path`` on success.

    The writer creates the temporary path (a file, or a folder: a Zarr store, a report). With
    ``marker`` the folder gets weather-sr's marker file of that kind, and ``overwrite`` replaces
    only a folder with that marker. On any exception (KeyboardInterrupt included) the temporary
    file or folder is removed and the target is left as it was; an I/O error of the disk becomes
    :class:`WriteFailedError`. See :func:`commit` for what happens when the target exists by then;
    ``checked`` (the caller checked the target with :func:`check_output_path` before its work):
    a target that exists already now appeared meanwhile, and the result is kept beside it.
    """
    target = check_output_path(path, overwrite, what, marker=marker, option=option,
                               checked=checked)
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
        if marker is not None:
            tmp.mkdir(exist_ok=True)
            write_marker(tmp, marker)
    except BaseException as error:
        replacement = _failed(error, tmp, target, what)
        if replacement is not None:
            raise replacement from None
        raise
    try:
        commit(tmp, target, overwrite=overwrite, what=what, marker=marker, option=option)
    except OutputAppearedError:
        raise
    except BaseException as error:
        replacement = _failed(error, tmp, target, what)
        if replacement is not None:
            raise replacement from None
        raise


# ---------------------------------------------------------------- folders written in place


def create_folder(path: PathLike, kind: str, what: str, option: str) -> Path:
    """Create the new folder ``path`` (and its parents) with its marker.

    An existing empty folder is taken over. UserError if the folder cannot be created, or if it
    appeared (with content or another weather-sr's marker) since it was checked.
    """
    folder = Path(path)
    try:
        folder.mkdir(parents=True)
    except FileExistsError:
        if not folder.is_dir() or any(folder.iterdir()):
            raise UserError(f"{what} {folder} appeared while preparing (another process "
                            f"created it): it was left as it is; choose another {option}"
                            ) from None
    except OSError as error:
        message = write_error_message(error, folder, what) if errno_of(error) in IO_PROBLEMS \
            else None
        raise UserError(message or f"cannot create {what} {folder}: {error.strerror}: choose "
                        f"another {option}") from None
    try:
        with io_errors(folder / MARKER, what):
            write_marker(folder, kind)
    except FileExistsError:
        raise UserError(f"{what} {folder} was taken by another weather-sr process while "
                        f"preparing: choose another {option}") from None
    return folder


def sibling_folder(target: PathLike, kind: str, what: str) -> Path:
    """A new hidden folder beside ``target`` (``.NAME.XXXX.tmp``, with the marker) in which the
    replacement of ``target`` is built; :func:`replace_folder` puts it in place."""
    target = Path(target)
    with io_errors(target, what):
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
        try:
            write_marker(tmp, kind)
        except BaseException:
            _remove(tmp)
            raise
    return tmp


def replace_folder(new: PathLike, target: PathLike, kind: str, what: str, option: str) -> Path:
    """Put the complete folder ``new`` at ``target``: the old folder (checked again: it must
    still carry the marker of ``kind``) is removed only after the exchange."""
    new, target = Path(new), Path(target)
    return commit(new, target, overwrite=True, what=what, marker=kind, option=option)


def remove_folder(path: PathLike) -> None:
    """Remove a folder this weather-sr process created (a temporary or an empty new one)."""
    _remove(Path(path))
