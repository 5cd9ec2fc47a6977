"""Disk errors while writing (issue 11, point 4): ENOSPC, EDQUOT, EROFS and EIO give one line
naming the file and what to do, exit status 2, no temporary file left, and the previous output and
checkpoint intact.

Where the tests run as root and ``mount`` works, the full disk is a real, small tmpfs and the CLI
runs in a subprocess on the shipped sample data and a checkpoint trained here; elsewhere the same
cases inject the error (``OSError(ENOSPC)``) into the writer and run ``weather_sr.cli.main``.
The other errno values, and library errors that hide the errno (netCDF's "HDF error", torch's
"enforce fail"), are checked on the writers themselves.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr
from safety_helpers import ENV, TINY, digests

from weather_sr.atomic import atomic_output, read_marker, write_marker
from weather_sr.cli import main
from weather_sr.config import config_to_yaml, load_config
from weather_sr.data import sample_data_path, write_zarr
from weather_sr.inference.stream import write_dataset
from weather_sr.model.checkpoint import save_checkpoint
from weather_sr.training.loop import train
from weather_sr.training.run_log import RunLogger
from weather_sr.write_errors import WriteFailedError

torch.set_num_threads(1)
pytestmark = pytest.mark.skipif(os.name != "posix", reason="POSIX file systems")

FULL = "no space left on device while writing"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("safety_io")
    sample = Path(shutil.copy(sample_data_path(), root / "sample.nc"))
    with xr.open_dataset(sample) as ds:
        ds[["pwat", "btmp"]].isel(time=slice(0, 2), y=slice(0, 32, 4), x=slice(0, 32, 4)).load(
        ).to_netcdf(root / "lr.nc")
    cfg = root / "tiny.yaml"
    cfg.write_text(config_to_yaml(load_config(None, [f"data.path={sample}", *TINY])))
    result = train(load_config(cfg), root / "run", progress=False, config_file=cfg)
    return {"root": root, "lr": root / "lr.nc", "cfg": cfg, "ck": Path(result.checkpoint),
            "run": root / "run"}


def run_cli(argv: list[object], real_disk: bool, capsys) -> tuple[int, str]:
    """The CLI in a subprocess (real full disk) or in this process (injected errors)."""
    if real_disk:
        proc = subprocess.run([sys.executable, "-m", "weather_sr", *map(str, argv)], env=ENV,
                              capture_output=True, text=True, timeout=300)
        return proc.returncode, proc.stderr
    code = main([str(a) for a in argv])
    return code, capsys.readouterr().err


def one_line(code: int, err: str, command: str, words: list[str]) -> str:
    lines = err.strip().splitlines()
    assert code == 2 and "Traceback" not in err and len(lines) == 1, err[-3000:]
    assert lines[0].startswith(f"weather-sr {command}: error: "), lines[0]
    for word in words:
        assert word in lines[0], (word, lines[0])
    return lines[0]


@contextlib.contextmanager
def small_disk(path: Path, kib: int) -> Iterator[bool]:
    """``path`` on a tmpfs of ``kib`` KiB (True), or a plain folder (False) where that is not
    possible (not root, no mount)."""
    path.mkdir()
    mounted = False
    if os.geteuid() == 0 and shutil.which("mount") and shutil.which("umount"):
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={kib}k", "tmpfs",
                                  str(path)], capture_output=True).returncode == 0
    try:
        yield mounted
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(path)], capture_output=True)


def fill(disk: Path, leave: int = 0) -> None:
    """Fill the file system of ``disk`` with ``disk/.filler``, then free ``leave`` bytes."""
    fd = os.open(disk / ".filler", os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        for size in (1 << 20, 1 << 12, 1):
            with contextlib.suppress(OSError):
                while os.write(fd, b"\0" * size):
                    pass
        if leave:
            os.ftruncate(fd, max(0, os.fstat(fd).st_size - leave))
    finally:
        os.close(fd)


def inject_enospc(monkeypatch, target: str) -> None:
    """The writer of ``target`` ("netcdf" or "checkpoint") writes a part, then the disk is full."""
    def fail(path: object) -> None:
        Path(str(path)).write_bytes(b"a partial write")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    if target == "netcdf":
        monkeypatch.setattr(xr.Dataset, "to_netcdf", lambda self, path, **kw: fail(path))
    else:
        monkeypatch.setattr(torch, "save", lambda obj, path, *a, **kw: fail(path))


def test_full_disk_while_writing_the_output(world, tmp_path: Path, monkeypatch, capsys) -> None:
    disk = tmp_path / "disk"
    with small_disk(disk, 512) as real:
        out = Path(shutil.copy(world["lr"], disk / "hr.nc"))  # the previous output
        if real:
            fill(disk)
        else:
            inject_enospc(monkeypatch, "netcdf")
        before, inputs = digests(disk), digests(world["root"])
        code, err = run_cli(["downscale", "--checkpoint", world["ck"], "--input", world["lr"],
                             "--output", out, "--overwrite", "--members", "2", "--steps", "2",
                             "--device", "cpu", "--no-progress"], real, capsys)
        one_line(code, err, "downscale", [FULL, f"output {out}", "free space"])
        assert digests(disk) == before  # the previous output intact, no temp file
    assert digests(world["root"]) == inputs


def test_full_disk_at_the_first_checkpoint_leaves_nothing(world, tmp_path: Path, monkeypatch,
                                                          capsys) -> None:
    disk = tmp_path / "disk"
    with small_disk(disk, 256) as real:  # room for config.yaml and metrics.csv, not a checkpoint
        if not real:
            inject_enospc(monkeypatch, "checkpoint")
        inputs = digests(world["root"])
        code, err = run_cli(["train", "--config", world["cfg"], "--run-dir", disk / "run",
                             "--no-progress"], real, capsys)
        one_line(code, err, "train", [FULL, "checkpoint", "step_00000002.pt",
                                      f"new run folder {disk / 'run'} was removed"])
        assert list(disk.iterdir()) == []
    assert digests(world["root"]) == inputs


def test_full_disk_on_resume_keeps_the_previous_checkpoint(world, tmp_path: Path, monkeypatch,
                                                           capsys) -> None:
    disk = tmp_path / "disk"
    with small_disk(disk, 4096) as real:
        run = disk / "run"
        shutil.copytree(world["run"], run)
        if real:
            fill(disk, leave=96 << 10)  # config.yaml and the log fit, a checkpoint does not
        else:
            inject_enospc(monkeypatch, "checkpoint")
        checkpoints = digests(run / "checkpoints")
        code, err = run_cli(["train", "--run-dir", run, "--resume", "--no-progress",
                             "training.steps=3"], real, capsys)
        one_line(code, err, "train", [FULL, "step_00000003.pt", "last complete checkpoint",
                                      "step_00000002.pt", "--resume"])
        assert digests(run / "checkpoints") == checkpoints  # intact, no temp file
        assert (run / "config.yaml").is_file() and (run / "metrics.csv").is_file()


# ---------------------------------------------------------------- the writers themselves

ERRNOS = {"ENOSPC": (errno.ENOSPC, "no space left on device while writing"),
          "EDQUOT": (getattr(errno, "EDQUOT", 122), "disk quota exceeded while writing"),
          "EROFS": (errno.EROFS, "read-only file system while writing"),
          "EIO": (errno.EIO, "input/output error while writing")}


def _previous(target: Path, kind: str) -> None:
    if kind == "file":
        target.write_text("the previous output")
    else:
        target.mkdir()
        (target / "report.md").write_text("the previous report")
        if kind == "report":
            write_marker(target, "report")
        else:
            (target / ".zgroup").write_text("{}")


@pytest.mark.parametrize("kind", ["file", "report", "zarr"])
@pytest.mark.parametrize("name", ERRNOS)
def test_io_errors_are_one_line_and_keep_the_previous_output(name: str, kind: str,
                                                             tmp_path: Path) -> None:
    code, words = ERRNOS[name]
    target = tmp_path / "out"
    _previous(target, kind)
    before = digests(tmp_path)
    marker = "report" if kind == "report" else None
    with (pytest.raises(WriteFailedError) as info,
          atomic_output(target, overwrite=True, what=kind, marker=marker) as tmp):
        if kind == "file":
            tmp.write_text("half")
        else:
            tmp.mkdir()
            (tmp / "part.png").write_text("half")
        raise OSError(code, os.strerror(code), str(tmp / "part.png"))
    assert str(info.value).startswith(f"{words} {kind} {target}: ")
    assert digests(tmp_path) == before
    if kind == "report":
        assert read_marker(target) == "report"


@pytest.mark.parametrize("writer", ["netcdf", "checkpoint", "zarr"])
def test_library_errors_without_errno_on_a_full_disk(writer: str, tmp_path: Path,
                                                     monkeypatch) -> None:
    """netCDF ("HDF error"), torch ("enforce fail") and a Zarr store hide the errno: the file
    system is examined. On a disk with space left the error is not taken for a full disk."""
    ds = xr.Dataset({"t2m": (("time", "lat", "lon"), np.zeros((1, 4, 4), np.float32))},
                    coords={"time": [np.datetime64("2020-01-01")]})  # an output has fields
    hidden = {"netcdf": "NetCDF: HDF error",
              "checkpoint": "[enforce fail at inline_container.cc:672] . unexpected pos 576",
              "zarr": "could not write chunk"}[writer]

    def failing(*args, **kwargs):
        raise RuntimeError(hidden)

    monkeypatch.setattr(xr.Dataset, "to_netcdf", failing)
    monkeypatch.setattr(xr.Dataset, "to_zarr", failing)
    monkeypatch.setattr(torch, "save", failing)
    write = {"netcdf": lambda p: write_dataset(ds, p, overwrite=False),
             "checkpoint": lambda p: save_checkpoint(p, {"step": 1}),
             "zarr": lambda p: write_zarr(ds, p)}[writer]
    with pytest.raises(RuntimeError, match=r"HDF error|enforce fail|could not write"):
        write(tmp_path / "a")  # plenty of space here: the library's error stays what it is
    real_statvfs = os.statvfs

    class Full:
        def __init__(self, st: os.statvfs_result) -> None:
            self.f_flag, self.f_frsize, self.f_files = st.f_flag, st.f_frsize, st.f_files
            self.f_bavail, self.f_favail = 0, st.f_favail

    monkeypatch.setattr(os, "statvfs", lambda path: Full(real_statvfs(path)))
    with pytest.raises(WriteFailedError, match=f"{FULL} .*{tmp_path / 'b'}: free space"):
        write(tmp_path / "b")
    assert list(tmp_path.iterdir()) == []


def test_metrics_row_on_a_full_disk(tmp_path: Path, monkeypatch) -> None:
    logger = RunLogger(tmp_path, enabled=True, tensorboard=False, start_step=0)
    opened = Path.open

    def full(self: Path, mode: str = "r", *args, **kwargs):
        if mode == "a":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self))
        return opened(self, mode, *args, **kwargs)

    monkeypatch.setattr(Path, "open", full)
    with pytest.raises(WriteFailedError, match=f"{FULL} metrics file {tmp_path / 'metrics.csv'}"):
        logger.log(1, "train", {"loss": 1.0})
