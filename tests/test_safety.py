"""Never lose a user's data (issue 11): a target is never a source, only weather-sr's own folders
are replaced and only when the new one is complete, no output races, no silent bad data, clean
one-line errors, resume before the first checkpoint.

The refusals run the real CLI (``python -m weather_sr``) in subprocesses, a few at a time, on the
shipped sample data and checkpoints trained here; each checks exit status 2, exactly one stderr
line without a traceback naming the problem, and that the SHA-256 of every file in the folders
involved is unchanged, no file is missing and none appeared (temp files included). Disk errors:
tests/test_safety_io.py.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import errno
import io
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr
from safety_helpers import ENV, TINY, cli, digests, one_line

from weather_sr.atomic import OutputAppearedError, atomic_output, read_marker, write_marker
from weather_sr.cli import main
from weather_sr.config import config_to_yaml, load_config
from weather_sr.data import sample_data_path
from weather_sr.training.loop import train

torch.set_num_threads(1)
pytestmark = pytest.mark.skipif(os.name != "posix", reason="POSIX file system semantics")

FAST = ["--members", "2", "--steps", "2", "--device", "cpu"]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The shipped sample, an 8x8 LR crop of it, a regression run and a CorrDiff diffusion run
    on top of it (2 steps each), their config."""
    root = tmp_path_factory.mktemp("safety")
    (root / "data").mkdir()
    sample = Path(shutil.copy(sample_data_path(), root / "data" / "sample.nc"))
    with xr.open_dataset(sample) as ds:
        every4 = {"y": slice(0, 32, 4), "x": slice(0, 32, 4)}  # on the LR grid spacing
        lr = ds[["pwat", "btmp"]].isel(time=slice(0, 2), **every4).load()
    lr.to_netcdf(root / "data" / "lr.nc")
    with xr.open_dataset(sample) as ds:  # all times, a 32x32 corner: quick evaluations
        ds[["pwat", "btmp"]].isel(y=slice(0, 32), x=slice(0, 32)).load().to_netcdf(
            root / "data" / "crop.nc")
    cfg = root / "tiny.yaml"
    cfg.write_text(config_to_yaml(load_config(None, [f"data.path={sample}", *TINY])))
    reg = train(load_config(cfg, ["model.kind=regression"]), root / "runs" / "reg",
                progress=False, config_file=cfg)
    dif = train(load_config(cfg, ["diffusion.target=regression_residual",
                                  f"diffusion.regression_checkpoint={reg.checkpoint}"]),
                root / "runs" / "dif", progress=False, config_file=cfg)
    return {"root": root, "sample": sample, "lr": root / "data" / "lr.nc", "cfg": cfg,
            "reg": Path(reg.checkpoint), "ck": Path(dif.checkpoint), "run": root / "runs" / "dif",
            "crop": root / "data" / "crop.nc"}


@dataclass
class Case:
    argv: list[object]
    words: list[str]
    cwd: Path | None = None
    env: dict[str, str] = field(default_factory=dict)
    gone: list[Path] = field(default_factory=list)  # files the command must remove (stale temps)
    inprocess: bool = False  # weather_sr.cli.main in this process (messages, not data loss)


def box(world: dict[str, Path], folder: Path, run: bool = False) -> Path:
    """A folder holding copies of a config, the data and a checkpoint (a weather-sr run if
    ``run``: a copy of the diffusion run, marker included)."""
    if run:
        shutil.copytree(world["run"], folder)
    else:
        folder.mkdir(parents=True)
    shutil.copy(world["cfg"], folder / "c.yaml")
    shutil.copy(world["sample"], folder / "hr.nc")
    shutil.copy(world["ck"], folder / "ck.pt")
    return folder


def _dataset_variant(world: dict[str, Path], path: Path, change, dtype=np.float32) -> Path:
    with xr.open_dataset(world["lr"]) as ds:
        ds = ds.load().astype(dtype)
    values = ds["pwat"].values.copy()
    change(values)
    ds.assign(pwat=(ds["pwat"].dims, values, ds["pwat"].attrs)).to_netcdf(path)
    return path


def _zarr_without_a_chunk(world: dict[str, Path], path: Path) -> Path:
    with xr.open_dataset(world["lr"]) as ds:
        ds = ds.load()
    for var in ds.variables.values():
        var.encoding = {}
    ds.chunk({"time": 1, "y": 4, "x": 4}).to_zarr(path, zarr_format=2, mode="w", consolidated=True)
    (path / "pwat" / "1.0.1").unlink()  # as a writer that died, or a partial copy, leaves it
    return path


def _glob_with_other_units(world: dict[str, Path], folder: Path) -> str:
    folder.mkdir()
    with xr.open_dataset(world["lr"]) as ds:
        ds = ds.load()
    ds.isel(time=[0]).to_netcdf(folder / "a.nc")
    second = ds.isel(time=[1])
    second["btmp"] = second["btmp"] - 273.15
    second["btmp"].attrs["units"] = "degC"
    second.to_netcdf(folder / "b.nc")
    return str(folder / "*.nc")


def _stale_first_checkpoint(world: dict[str, Path], folder: Path) -> Path:
    """A run killed while writing its first checkpoint: marker, config, log, a temp file."""
    shutil.copytree(world["run"], folder, ignore=shutil.ignore_patterns("*.pt"))
    stale = folder / "checkpoints" / ".step_00000001.pt.k1ll3d.tmp"
    stale.write_bytes(Path(world["ck"]).read_bytes()[:5000])
    return stale


def _cases(world: dict[str, Path], t: Path) -> dict[str, Case]:
    ck, lr, cfg = world["ck"], world["lr"], world["cfg"]
    down = ["downscale", "--checkpoint", ck, "--input", lr, *FAST, "--no-progress"]
    ev = ["evaluate", "--checkpoint", ck, *FAST, "--max-fields", "1"]
    tr = ["train", "--config", cfg, "--no-progress"]  # KEY=VALUE overrides come last
    (t / "home").mkdir()
    os.mkfifo(t / "fifo")
    (t / "file.txt").write_text("a user's file")
    (t / "theirs").mkdir()
    (t / "theirs" / "notes.txt").write_text("not weather-sr's")
    (t / "report").mkdir()
    write_marker(t / "report", "report")
    (t / "dup.yaml").write_text(cfg.read_text() + "training:\n  batch_size: 4\n")
    return {
        # 1: the current folder, its parents, /, the home folder
        "train --run-dir . --overwrite": Case(
            ["train", "--config", "c.yaml", "--run-dir", ".", "--overwrite", "data.path=hr.nc"],
            ["run folder .", "current folder"], cwd=box(world, t / "cwd1")),
        "evaluate --out . --overwrite": Case(
            ["evaluate", "--checkpoint", "ck.pt", "--out", ".", "--overwrite"],
            ["report folder .", "current folder"], cwd=box(world, t / "cwd2")),
        "evaluate --out .. --overwrite": Case(
            [*ev, "--out", "..", "--overwrite"], ["parent of the current folder"],
            cwd=box(world, t / "cwd3" / "sub")),
        "train --run-dir / --overwrite": Case([*tr, "--run-dir", "/", "--overwrite"],
                                              ["run folder /", "root folder"]),
        "evaluate --out $HOME --overwrite": Case(
            [*ev, "--out", t / "home", "--overwrite"], ["home folder"],
            env={"HOME": str(t / "home"), "MPLCONFIGDIR": str(t.parent / "mpl"),
                 "XDG_CACHE_HOME": str(t.parent / "cache")}),
        # 2: an output that is, contains or lies inside an input
        "downscale --output its --checkpoint": Case(
            [*down, "--output", ck, "--overwrite"], ["is the --checkpoint", str(ck)]),
        "downscale --output its --input": Case(
            [*down, "--output", lr, "--overwrite"], ["is the --input", str(lr)]),
        "downscale --output matched by its --input glob": Case(
            [*down[:4], str(lr.parent / "l*.nc"), *down[5:], "--output", lr, "--overwrite"],
            ["is the --input", str(lr)]),
        "downscale --output its regression checkpoint": Case(
            [*down, "--output", world["reg"], "--overwrite"],
            ["diffusion.regression_checkpoint", str(world["reg"])]),
        "downscale --output inside its Zarr --input": Case(
            [*down[:4], t / "in.zarr", *down[5:], "--output", t / "in.zarr" / "o.nc"],
            ["is inside the --input"]),
        "evaluate --out its run folder": Case(
            ["evaluate", "--checkpoint", box(world, t / "r1", run=True) / "checkpoints" /
             ck.name, "--out", t / "r1", "--overwrite"], ["contains the --checkpoint"]),
        "evaluate --out holding its --data glob": Case(
            [*ev, "--data", t / "d1" / "*.nc", "--out", box(world, t / "d1"), "--overwrite"],
            ["contains the --data"]),
        "train --run-dir holding its data.path": Case(
            [*tr, "--run-dir", box(world, t / "r2", run=True), "--overwrite",
             f"data.path={t / 'r2' / 'hr.nc'}"], ["contains the data.path", "hr.nc"]),
        "train --run-dir holding its --config": Case(
            ["train", "--config", box(world, t / "r3", run=True) / "c.yaml", "--run-dir",
             t / "r3", "--overwrite"], ["contains the config file"]),
        "train --run-dir holding its regression checkpoint": Case(
            [*tr, "--run-dir", t / "r4", "--overwrite", "diffusion.target=regression_residual",
             f"diffusion.regression_checkpoint={box(world, t / 'r4', run=True) / 'ck.pt'}"],
            ["contains the diffusion.regression_checkpoint"]),
        # 3: not a regular file
        "downscale --output /dev/null --overwrite": Case(
            [*down, "--output", "/dev/null", "--overwrite"], ["/dev/null", "character device"]),
        "downscale --output a FIFO --overwrite": Case(
            [*down, "--output", t / "fifo", "--overwrite"], ["FIFO"]),
        "downscale --input a FIFO": Case(
            [*down[:4], t / "fifo", *down[5:], "--output", t / "o.nc"], ["--input", "FIFO"]),
        # 2, 7: --overwrite replaces only weather-sr's own folders, of the right kind
        "evaluate --out an existing file --overwrite": Case(
            [*ev, "--out", t / "file.txt", "--overwrite"], ["is a file, not a weather-sr"]),
        "evaluate --out a folder without marker --overwrite": Case(
            [*ev, "--out", t / "theirs", "--overwrite"], ["not a weather-sr report folder"]),
        "train --run-dir a folder without marker --overwrite": Case(
            [*tr, "--run-dir", t / "theirs", "--overwrite"], ["not a weather-sr run folder"]),
        "train --run-dir a report folder --overwrite": Case(
            [*tr, "--run-dir", t / "report", "--overwrite"], ["weather-sr report folder"]),
        # 6: no silent bad data
        "float64 input beyond the float32 range": Case(
            [*down[:4], _dataset_variant(world, t / "big.nc", lambda v: v.__setitem__(
                (0, 1, 1), 1e39), np.float64), *down[5:], "--output", t / "o.nc"],
            ["big.nc", "pwat", "beyond the float32 range"], inprocess=True),
        "Zarr store with a missing chunk": Case(
            [*down[:4], _zarr_without_a_chunk(world, t / "in.zarr"), *down[5:], "--output",
             t / "o.nc"],
            ["in.zarr", "pwat", "1 of 8 chunks are missing", "time 1-1, y 0-3, x 4-7"],
            inprocess=True),
        "glob of files in other units": Case(
            [*down[:4], _glob_with_other_units(world, t / "g"), *down[5:], "--output", t / "o.nc"],
            ["b.nc", "btmp", "'degC'", "a.nc", "'K'"], inprocess=True),
        "input field far out of range": Case(
            [*down[:4], _dataset_variant(world, t / "huge.nc", lambda v: v.__setitem__(
                (1, 2, 3), 1e30)), *down[5:], "--output", t / "o.nc"],
            ["huge.nc", "field 1", "time 2010-03-08T15", "pwat", "standard deviations"],
            inprocess=True),
        # 7: clean CLI errors
        "--seed 2**70": Case([*down, "--output", t / "o.nc", "--seed", 2**70],
                             ["--seed 1180591620717411303424", "2**63-1"], inprocess=True),
        "--output with a trailing slash": Case(
            [*down, "--output", f"{t}/newdir/"], ["newdir/", "ends with '/'"], inprocess=True),
        "argparse error": Case(["downscale", "--members", "many"],
                               ["--members", "see weather-sr downscale --help"]),
        "YAML with a duplicate section": Case(
            ["train", "--config", t / "dup.yaml", "--run-dir", t / "new"],
            ["dup.yaml", "'training'", "appears twice", "line"], inprocess=True),
        "split error names data.split": Case(
            [*tr, "--run-dir", t / "new", "data.split=[0.6, 0.6, 0.6]"], ["data.split="],
            inprocess=True),
        "--device as given": Case([*down, "--output", t / "o.nc", "--device", "cuda:7"],
                                  ["--device cuda:7"], inprocess=True),
        # 8: resume after a kill before the first complete checkpoint
        "resume before the first checkpoint": Case(
            ["train", "--run-dir", t / "killed", "--resume", "--no-progress"],
            ["no complete checkpoint yet", "start again with --overwrite"],
            gone=[_stale_first_checkpoint(world, t / "killed")]),
    }


@pytest.fixture(scope="module")
def refusals(world: dict[str, Path], tmp_path_factory: pytest.TempPathFactory):
    """Every case of _cases run as a subprocess (a few at a time), with digests before/after."""
    t = tmp_path_factory.mktemp("cases")
    cases = _cases(world, t)
    before = digests(world["root"], t)

    def run(case: Case) -> subprocess.CompletedProcess[str]:
        return cli(*case.argv, cwd=case.cwd, env=case.env)

    def run_here(case: Case) -> subprocess.CompletedProcess[str]:
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            code = main([str(a) for a in case.argv])
        return subprocess.CompletedProcess(case.argv, code, "", err.getvalue())

    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        futures = {k: pool.submit(run, c) for k, c in cases.items() if not c.inprocess}
        procs = {k: run_here(c) for k, c in cases.items() if c.inprocess}
        procs.update({k: f.result() for k, f in futures.items()})
    return cases, procs, before, digests(world["root"], t)


CASE_IDS = [
    "train --run-dir . --overwrite", "evaluate --out . --overwrite",
    "evaluate --out .. --overwrite", "train --run-dir / --overwrite",
    "evaluate --out $HOME --overwrite", "downscale --output its --checkpoint",
    "downscale --output its --input", "downscale --output matched by its --input glob",
    "downscale --output its regression checkpoint", "downscale --output inside its Zarr --input",
    "evaluate --out its run folder", "evaluate --out holding its --data glob",
    "train --run-dir holding its data.path", "train --run-dir holding its --config",
    "train --run-dir holding its regression checkpoint",
    "downscale --output /dev/null --overwrite", "downscale --output a FIFO --overwrite",
    "downscale --input a FIFO", "evaluate --out an existing file --overwrite",
    "evaluate --out a folder without marker --overwrite",
    "train --run-dir a folder without marker --overwrite",
    "train --run-dir a report folder --overwrite", "float64 input beyond the float32 range",
    "Zarr store with a missing chunk", "glob of files in other units",
    "input field far out of range", "--seed 2**70", "--output with a trailing slash",
    "argparse error", "YAML with a duplicate section", "split error names data.split",
    "--device as given", "resume before the first checkpoint",
]


@pytest.mark.parametrize("name", CASE_IDS)
def test_refused(name: str, refusals) -> None:
    cases, procs, before, after = refusals
    case = cases[name]
    one_line(procs[name], str(case.argv[0]), case.words)
    for path in case.gone:
        assert str(path) in before and str(path) not in after, path  # the stale temp is removed
    gone = {str(p) for c in cases.values() for p in c.gone}
    mine = {p: d for p, d in before.items() if p not in gone}
    # every input and pre-existing file unchanged and present; nothing new (no temp, no output)
    assert {p: after.get(p) for p in mine} == mine
    assert sorted(set(after) - set(before)) == []


def test_case_ids_cover_every_case(world: dict[str, Path], tmp_path: Path) -> None:
    assert sorted(_cases(world, tmp_path)) == sorted(CASE_IDS)


# ---------------------------------------------------------------- 3: no race


def _kept(line: str) -> Path:
    match = re.search(r"kept as (\S+): rename it", line)
    assert match, line
    return Path(match.group(1))


def test_two_downscales_to_one_output_keep_both_results(world: dict[str, Path],
                                                        tmp_path: Path) -> None:
    """Two real runs to the same new output: one writes it (exit 0); the other exits 2 at once
    without touching it: the first holds the output's lock ("another weather-sr run is
    writing"), or has finished ("already exists"). (A writer outside weather-sr that creates
    the output meanwhile: the next test.)"""
    out = tmp_path / "hr.nc"
    before = digests(world["root"])
    argv = ["downscale", "--checkpoint", world["ck"], "--input", world["lr"], "--members", "8",
            "--steps", "4", "--device", "cpu", "--no-progress", "--output", out]
    procs = [subprocess.Popen([sys.executable, "-m", "weather_sr", *map(str, argv), "--seed",
                               str(seed)], env=ENV, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for seed in (1, 2)]
    results = [(p.wait(timeout=300), p.communicate()[1]) for p in procs]
    assert sorted(code for code, _ in results) == [0, 2], results
    seeds = {code: seed for (code, _), seed in zip(results, (1, 2), strict=True)}
    loser = subprocess.CompletedProcess(argv, 2, "", next(e for c, e in results if c == 2))
    line = one_line(loser, "downscale", [str(out)])
    with xr.open_dataset(out) as ds:
        assert ds.attrs["seed"] == seeds[0]  # the winner's result, whole
    assert "another weather-sr run is writing" in line or "already exists" in line, line
    assert set(tmp_path.iterdir()) == {out}
    assert digests(world["root"]) == before


def test_output_appearing_while_sampling_is_not_replaced(world: dict[str, Path], tmp_path: Path,
                                                         monkeypatch, capsys) -> None:
    import weather_sr.inference.downscale as module

    out = tmp_path / "hr.nc"
    sample = module.sample_ensemble

    def race(*args, **kwargs):  # another process writes the output while this one samples
        out.write_text("another process's result")
        return sample(*args, **kwargs)

    monkeypatch.setattr(module, "sample_ensemble", race)
    argv = ["downscale", "--checkpoint", world["ck"], "--input", world["lr"], *FAST,
            "--no-progress", "--output", out]
    assert main([str(a) for a in argv]) == 2
    proc = subprocess.CompletedProcess(argv, 2, "", capsys.readouterr().err)
    line = one_line(proc, "downscale", [str(out), "appeared while running", "left as it is"])
    assert out.read_text() == "another process's result"
    with xr.open_dataset(_kept(line)) as ds:
        assert ds.sizes["member"] == 2 and bool(np.isfinite(ds["pwat"].values).all())
    assert set(tmp_path.iterdir()) == {out, _kept(line)}


@pytest.mark.parametrize("kind", ["file", "report folder"])
def test_target_appearing_before_the_commit_is_not_replaced(kind: str, tmp_path: Path) -> None:
    target = tmp_path / "out"
    marker = "report" if kind != "file" else None
    with (pytest.raises(OutputAppearedError, match="appeared while running") as info,
          atomic_output(target, what=kind, marker=marker) as tmp):
        if marker:
            tmp.mkdir()
            (tmp / "report.md").write_text("mine")
            target.mkdir()
            (target / "theirs.md").write_text("theirs")
        else:
            tmp.write_text("mine")
            target.write_text("theirs")
    kept = _kept(str(info.value))
    if marker:
        assert [p.name for p in target.iterdir()] == ["theirs.md"]
        assert (kept / "report.md").read_text() == "mine" and read_marker(kept) == "report"
    else:
        assert target.read_text() == "theirs" and kept.read_text() == "mine"
    assert set(tmp_path.iterdir()) == {target, kept}


# ---------------------------------------------------------------- 2: replace only when complete


def test_evaluate_overwrite_replaces_its_report_only_when_complete(
    world: dict[str, Path], tmp_path: Path, monkeypatch, capsys
) -> None:
    import weather_sr.evaluation.pipeline as pipeline

    out = tmp_path / "report"
    argv = ["evaluate", "--checkpoint", world["ck"], "--data", world["crop"], *FAST,
            "--max-fields", "1", "--out", out]
    out.mkdir()  # a report weather-sr wrote before (its marker), and a file only it has
    write_marker(out, "report")
    (out / "report.md").write_text("# the first report")
    (out / "note.txt").write_text("only in the first report")
    first = digests(tmp_path)

    def full_disk(folder: Path, *args, **kwargs):  # the disk fills while the report is written
        folder.mkdir()
        (folder / "metrics.json").write_text("{}")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(folder / "panels.png"))

    monkeypatch.setattr(pipeline, "write_report", full_disk)
    assert main([str(a) for a in argv] + ["--overwrite"]) == 2
    proc = subprocess.CompletedProcess(argv, 2, "", capsys.readouterr().err)
    one_line(proc, "evaluate", ["no space left on device while writing report folder", str(out)])
    assert digests(tmp_path) == first  # the old report whole, no temp folder
    monkeypatch.undo()
    before = digests(world["root"])
    proc = cli(*argv, "--overwrite")  # the real CLI: the complete new report replaces the old
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not (out / "note.txt").exists() and (out / "report.md").is_file()
    assert read_marker(out) == "report" and set(tmp_path.iterdir()) == {out}
    assert digests(world["root"]) == before


def test_train_overwrite_keeps_the_old_run_until_the_new_one_ends(world: dict[str, Path],
                                                                   tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(world["run"], run)
    (run / "note.txt").write_text("from the old run")
    old = digests(tmp_path)

    def crash(trainer) -> None:
        raise RuntimeError("the machine failed")

    cfg = load_config(world["cfg"])
    with pytest.raises(RuntimeError, match="the machine failed"):
        train(cfg, run, overwrite=True, progress=False, callback=crash, config_file=world["cfg"])
    assert digests(tmp_path) == old  # the old run whole, the new one's folder removed
    before = digests(world["root"])
    proc = cli("train", "--config", world["cfg"], "--run-dir", run, "--overwrite",
               "--no-progress", "training.steps=1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not (run / "note.txt").exists() and read_marker(run) == "run"
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["best.pt",
                                                                       "step_00000001.pt"]
    assert set(tmp_path.iterdir()) == {run}
    assert digests(world["root"]) == before


def test_check_target_resolves_links_and_parents(world: dict[str, Path], tmp_path: Path) -> None:
    from weather_sr.errors import UserError
    from weather_sr.targets import Source, check_target

    link = tmp_path / "link.nc"
    link.symlink_to(world["lr"])
    sources = [Source("--input", world["lr"], data=True)]
    with pytest.raises(UserError, match="is the --input"):
        check_target(link, "output", "--output", sources, folder=False)
    with pytest.raises(UserError, match="is the --input"):
        check_target(world["lr"].parent / ".." / "data" / "lr.nc", "output", "--output",
                     sources, folder=False)
    with pytest.raises(UserError, match="contains the --input"):
        check_target(world["root"], "report folder", "--out", sources, folder=True)
    hard = tmp_path / "hard.nc"  # the same file under another name (os.path.samefile)
    os.link(world["lr"], hard)
    with pytest.raises(UserError, match="is the --input"):
        check_target(hard, "output", "--output", sources, folder=False)
    assert check_target(tmp_path / "new.nc", "output", "--output", sources, folder=False)


def test_demo_folder_is_replaced_only_when_complete(tmp_path: Path, monkeypatch, capsys) -> None:
    """The demo's folder logic, with the four trainings and the evaluation stubbed out."""
    import weather_sr.demo as demo

    out = tmp_path / "demo"

    def fake(work: Path, *args, **kwargs) -> Path:
        (work / "report").mkdir()
        (work / "report" / "report.md").write_text(f"report {len(list(tmp_path.iterdir()))}")
        return work / "report" / "report.md"

    def broken(work: Path, *args, **kwargs) -> Path:
        (work / "runs").mkdir()
        raise RuntimeError("training crashed")

    monkeypatch.setattr(demo, "_run_all", fake)
    argv = ["demo", "--quick", "--device", "cpu", "--out", str(out)]
    assert main(argv) == 0 and read_marker(out) == "demo"
    (out / "note.txt").write_text("only in the first demo")
    assert main(argv) == 2 and "already exists" in capsys.readouterr().err
    first = digests(tmp_path)
    monkeypatch.setattr(demo, "_run_all", broken)
    with pytest.raises(RuntimeError, match="training crashed"):
        main([*argv, "--overwrite"])
    assert digests(tmp_path) == first  # the old demo whole, the new one's folder removed
    monkeypatch.setattr(demo, "_run_all", fake)
    assert main([*argv, "--overwrite"]) == 0
    assert not (out / "note.txt").exists() and (out / "report" / "report.md").is_file()
    assert read_marker(out) == "demo" and set(tmp_path.iterdir()) == {out}
