"""A target is never a source: :func:`check_target` refuses an output that would destroy what the
command reads, before any work starts."""

from __future__ import annotations

import contextlib
import glob
import os
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from weather_sr.errors import UserError

PathLike = str | os.PathLike[str]


@dataclass(frozen=True)
class Source:
    """A path a command reads: ``label`` names it in messages (``--input``, ``data.path``)."""

    label: str
    path: PathLike | Sequence[PathLike] | None
    data: bool = False  # read as data: a FIFO, device or socket is refused (it would hang)


GLOB_CHARS = "*?["


def is_pattern(text: str) -> bool:
    """Whether a name is a glob pattern: it holds ``*``, ``?`` or ``[`` and names no existing
    path (an existing ``a[1].nc`` is that file)."""
    return any(ch in text for ch in GLOB_CHARS) and not os.path.lexists(text)


def expand_path(item: PathLike) -> list[str]:
    """The paths one name stands for: an existing path is taken as it is, even when its name
    holds glob characters (``a[1].nc``); otherwise a name with ``*``, ``?`` or ``[`` is a glob
    pattern (its matches, sorted; none: []) and any other name is itself. The one expansion of
    every command's inputs (:func:`weather_sr.data.files.resolve_paths`) and of
    :func:`check_target`, so that both see the same files."""
    text = os.fspath(item)
    if not text:
        return []
    return sorted(glob.glob(text)) if is_pattern(text) else [text]


def _expand(spec: PathLike | Sequence[PathLike] | None) -> list[str]:
    if spec is None:
        return []
    items = [spec] if isinstance(spec, str | os.PathLike) else list(spec)
    return [path for item in items for path in expand_path(item)]


def special_kind(mode: int) -> str | None:
    for test, name in ((stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device"),
                       (stat.S_ISFIFO, "FIFO (named pipe)"), (stat.S_ISSOCK, "socket")):
        if test(mode):
            return name
    return None


def _inside(a: Path, b: Path) -> bool:
    """Whether ``a`` lies inside ``b`` or is ``b``."""
    return a == b or a.is_relative_to(b)


def check_target(
    target: PathLike, what: str, option: str, sources: Iterable[Source], *, folder: bool,
    writes: Iterable[tuple[str, PathLike]] = (),
) -> Path:
    """Refuse (UserError naming both paths) a target that would destroy what the command reads.

    ``target`` is an output file (``folder=False``) or a run/report/demo folder. Refused: a
    trailing slash on a file name; the current folder, one of its parents (``/`` included) or the
    home folder (or one of its parents); a path equal to, inside or containing any of
    ``sources`` (globs are expanded; paths are compared after resolving symbolic links and
    ``..``); an existing target that is a device, FIFO or socket, a folder given as a file, or a
    file given as a folder. A data source that is a device, FIFO or socket is refused too.
    ``writes``: (label, path) of what else the command writes or replaces (a Zarr output's
    partial store), held to the same rule as the target.
    Call it before any work; it reads nothing but the file system's metadata.
    """
    text = os.fspath(target)
    kind = "folder" if folder else "file name"
    if not text.strip():
        raise UserError(f"{what}: {option} is empty: give a {kind}")
    if not folder and text.endswith(("/", os.sep)):
        raise UserError(f"{what} {text} ends with '/': give a file name for {option} "
                        f"(e.g. {text}downscaled.nc)")
    real = Path(os.path.realpath(text))
    cwd = Path(os.path.realpath(os.getcwd()))
    if real == cwd:
        raise UserError(f"{what} {text} is the current folder: give a new {kind} for {option}")
    if _inside(cwd, real):
        where = ("the root folder /" if real == Path(real.anchor)
                 else "a parent of the current folder")
        raise UserError(f"{what} {text} is {where} ({cwd} lies inside it): give a new {kind} "
                        f"for {option}")
    with contextlib.suppress(RuntimeError, KeyError, OSError):
        home = Path(os.path.realpath(Path.home()))
        if _inside(home, real):
            raise UserError(f"{what} {text} is your home folder {home} or contains it: give a "
                            f"new {kind} for {option}")
    try:
        st = os.stat(text)
    except OSError:
        st = None
    if st is not None:
        special = special_kind(st.st_mode)
        if special:
            raise UserError(f"{what} {text} is a {special}, not a regular "
                            f"{'folder' if folder else 'file'}: give a new {kind} for {option}")
        if folder and not stat.S_ISDIR(st.st_mode):
            raise UserError(f"{what} {text} is a file, not a weather-sr folder: choose another "
                            f"{option}")
        if not folder and stat.S_ISDIR(st.st_mode):
            raise UserError(f"{what} {text} is a folder: give the name of a file for {option}")
    written = [(f"{what} {text}", real)]
    written += [(f"{label} {os.fspath(path)} of {what} {text}", Path(os.path.realpath(path)))
                for label, path in writes]
    for source in sources:
        for path in _expand(source.path):
            src = Path(os.path.realpath(path))
            for label, out in written:
                relation = _relation(out, src)
                if relation:
                    raise UserError(f"{label} {relation} the {source.label} {path}: the output "
                                    f"must not touch what the command reads: choose another "
                                    f"{option}")
            if source.data:
                try:
                    special = special_kind(os.stat(path).st_mode)
                except OSError:
                    special = None
                if special:
                    raise UserError(f"{source.label} {path} is a {special}, not a data file: "
                                    "give a NetCDF, Zarr or GRIB file")
    return Path(text)


def _relation(out: Path, src: Path) -> str | None:
    """How the written path ``out`` touches the read path ``src`` (both resolved), if it does;
    the same file under two names (a hard link, a bind mount) counts as the same."""
    if out == src:
        return "is"
    with contextlib.suppress(OSError):
        if os.path.samefile(out, src):
            return "is"
    if out.is_relative_to(src):
        return "is inside"
    if src.is_relative_to(out):
        return "contains"
    return None
