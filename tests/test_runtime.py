"""weather_sr.runtime.tune_malloc: mallopt with the intended values on glibc, a no-op without
mallopt or when opted out, and called by every command (cli.main)."""

from __future__ import annotations

import ctypes
import sys

import pytest

from weather_sr import runtime


class FakeLibc:
    def __init__(self, answer: int = 1) -> None:
        self.calls: list[tuple[int, int]] = []
        self.answer = answer

    def mallopt(self, param: ctypes.c_int, value: ctypes.c_int) -> int:
        self.calls.append((param.value, value.value))
        return self.answer


def test_mallopt_called_with_the_intended_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(runtime.NO_TUNING_ENV, raising=False)
    libc = FakeLibc()
    assert runtime.tune_malloc(libc) is True
    assert libc.calls == [(-3, 1 << 30), (-1, 256 << 20)]  # M_MMAP_THRESHOLD, M_TRIM_THRESHOLD
    assert (runtime.M_MMAP_THRESHOLD, runtime.M_TRIM_THRESHOLD) == (-3, -1)
    assert runtime.MMAP_THRESHOLD <= 1 << 30 and runtime.TRIM_THRESHOLD <= 1 << 30  # bounded
    assert runtime.tune_malloc(FakeLibc(answer=0)) is False  # refused by the library


def test_no_op_without_mallopt_or_when_opted_out(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(runtime.NO_TUNING_ENV, raising=False)
    assert runtime.tune_malloc(object()) is False  # a C library without mallopt
    monkeypatch.setenv(runtime.NO_TUNING_ENV, "1")
    libc = FakeLibc()
    assert runtime.tune_malloc(libc) is False and libc.calls == []
    monkeypatch.setattr(sys, "platform", "darwin")
    assert runtime._libc() is None


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")
def test_real_glibc_accepts_the_values() -> None:
    libc = runtime._libc()
    if libc is None:
        pytest.skip("not glibc")
    assert runtime.tune_malloc(libc) is True


def test_every_command_tunes_first(monkeypatch: pytest.MonkeyPatch) -> None:
    from weather_sr import cli

    calls: list[bool] = []
    monkeypatch.setattr(runtime, "tune_malloc", lambda: calls.append(True) or True)
    with pytest.raises(SystemExit):
        cli.main(["--version"])
    assert calls == [True]
