"""Process-wide runtime settings that every command gets without the user setting anything.

:func:`tune_malloc`, called first thing by :func:`weather_sr.cli.main` (so by every command, and
by each training or downscaling worker under ``torchrun -m weather_sr``, which goes through it):
on glibc Linux it raises the allocator's mmap threshold and trim threshold with ``mallopt``.

Why: the activations of a UNet on a whole field (e.g. 8 x 32 x 144 x 192 float32 = 28 MB) are
far above glibc's default mmap threshold (128 kB, adapting up to 32 MB), so each one is mapped
and unmapped again with a page fault per 4 kB page on first touch: about a quarter of a CPU
``downscale`` run was system time (issue 14, point 7). With the thresholds raised, freed blocks
stay in the heap and are reused.

Bounds: blocks above :data:`MMAP_THRESHOLD` (1 GiB) are still mapped (and returned on free), and
the heap top is trimmed once more than :data:`TRIM_THRESHOLD` (256 MiB) is free there, so
memory held but unused stays bounded. Setting ``M_MMAP_THRESHOLD`` also turns off glibc's
dynamic adjustment of both thresholds.

``WEATHER_SR_NO_MALLOC_TUNING=1`` leaves the allocator as it is (to measure the difference:
``benchmarks/bench_malloc.py``). Elsewhere (macOS, Windows, musl) this does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
from typing import Any

__all__ = [
    "MMAP_THRESHOLD",
    "M_MMAP_THRESHOLD",
    "M_TRIM_THRESHOLD",
    "NO_TUNING_ENV",
    "TRIM_THRESHOLD",
    "tune_malloc",
]

M_TRIM_THRESHOLD = -1  # mallopt parameters (glibc <malloc.h>)
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 1 << 30  # 1 GiB: larger blocks are still mmapped (glibc caps it at 32 MiB on
# 32-bit builds: there mallopt refuses and the default stays)
TRIM_THRESHOLD = 256 << 20  # 256 MiB free at the heap top is given back to the system
NO_TUNING_ENV = "WEATHER_SR_NO_MALLOC_TUNING"

_done: dict[str, bool] = {}


def _libc() -> Any | None:
    """glibc loaded with ctypes, or None (not Linux/glibc, or no ``mallopt``)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "mallopt") and hasattr(libc, "gnu_get_libc_version") else None


def tune_malloc(libc: Any | None = None) -> bool:
    """Raise glibc's mmap and trim thresholds (module doc); True when both were set.

    Once per process (later calls return the first result); a no-op returning False when
    ``WEATHER_SR_NO_MALLOC_TUNING`` is set to anything but "" or "0", or off glibc. ``libc``:
    for tests, an object with ``mallopt`` (default: the process's C library).
    """
    if "result" in _done and libc is None:
        return _done["result"]
    result = False
    if os.environ.get(NO_TUNING_ENV, "") in ("", "0"):
        lib = _libc() if libc is None else libc
        mallopt = getattr(lib, "mallopt", None) if lib is not None else None
        if mallopt is not None:
            ok_mmap = mallopt(ctypes.c_int(M_MMAP_THRESHOLD), ctypes.c_int(MMAP_THRESHOLD))
            ok_trim = mallopt(ctypes.c_int(M_TRIM_THRESHOLD), ctypes.c_int(TRIM_THRESHOLD))
            result = bool(ok_mmap) and bool(ok_trim)
    if libc is None:
        _done["result"] = result
    return result
