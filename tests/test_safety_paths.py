"""Issue 21: the paths the newer features opened never lose data, and bad values never pass in
silence. Each case runs the real CLI in a subprocess (or in process where only the message is
checked) and asserts the exit status, one stderr line without a traceback, the SHA-256 of every
input unchanged and every pre-existing file present, nothing left behind.

Cases: 1 evaluate --data with the checkpoint's predictors and static file inside --out;
2 a literal file name with glob characters; 3 the input is the output's own partial store;
4 two runs to one output (the lock); 5 fill values and absurd values in the LR input; 6 NaN in a
predictor; 7 a predictor far out of range. (8: tests/test_predictor_units.py; 9, 11:
tests/test_streaming.py; 10: tests/test_cli_errors.py; 13: tests/test_projected_lr.py.)
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st
from safety_helpers import ENV, TINY, cli, digests, one_line

from weather_sr.atomic import write_marker
from weather_sr.cli import main
from weather_sr.config import load_config
from weather_sr.data import sample_data_path
from weather_sr.lock import lock_path, output_lock
from weather_sr.training.loop import train

torch.set_num_threads(1)
pytestmark = pytest.mark.skipif(os.name != "posix", reason="POSIX file system semantics")

EVAL_FAST = ["--members", "2", "--steps", "2", "--device", "cpu"]
FAST = [*EVAL_FAST, "--no-progress"]
NY = NX = 32
LAT = np.linspace(30.0, 45.5, NY)
LON = np.linspace(0.0, 15.5, NX)
TIMES = np.datetime64("2021-01-01T00") + np.arange(16) * np.timedelta64(3, "h")


def _latlon(path: Path, variables: dict[str, tuple[np.ndarray, str]], lat: np.ndarray,
            lon: np.ndarray, times: bool = True) -> Path:
    dims = ("time", "lat", "lon") if times else ("lat", "lon")
    coords = {"lat": ("lat", lat, {"units": "degrees_north"}),
              "lon": ("lon", lon, {"units": "degrees_east"}), **({"time": TIMES} if times else {})}
    xr.Dataset({k: (dims, v.astype(np.float32), {"units": u}) for k, (v, u) in variables.items()},
               coords=coords).to_netcdf(path)
    return path


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The sample with an LR crop and a tiny model of it; a regional lat/lon target file and a
    tiny model of it with predictors on their own grid and a static file, both inside the
    report folder ``rep`` of an earlier evaluate (case 1)."""
    root = tmp_path_factory.mktemp("paths")
    data = root / "data"
    data.mkdir()
    sample = Path(shutil.copy(sample_data_path(), data / "sample.nc"))
    with xr.open_dataset(sample) as ds:
        ds[["pwat", "btmp"]].isel(time=slice(0, 2), y=slice(0, 32, 4), x=slice(0, 32, 4)
                                  ).load().to_netcdf(data / "lr.nc")
        ds[["pwat", "btmp"]].isel(time=slice(0, 2), y=slice(0, 32), x=slice(0, 32)
                                  ).load().to_netcdf(data / "hr.nc")
    own = train(load_config(None, [f"data.path={sample}", *TINY]), root / "own", progress=False)
    rng = np.random.default_rng(0)
    yy, xx = np.meshgrid(LAT, LON, indexing="ij")
    orog = 800.0 + 300.0 * np.sin(yy / 2.0) * np.cos(xx / 3.0)
    t2m = 285.0 - 6.5e-3 * orog[None] + rng.standard_normal((16, NY, NX))
    regional = _latlon(data / "regional.nc", {"t2m": (t2m, "K")}, LAT, LON)
    rep = root / "rep"  # a report folder weather-sr wrote, where the user keeps predictors
    rep.mkdir()
    write_marker(rep, "report")
    with xr.open_dataset(regional) as ds:
        # a coarser grid inside the target grid: values everywhere in training
        coarse = ds.interp(lat=np.linspace(30.0, 45.5, 7), lon=np.linspace(0.0, 15.5, 7)).load()
    coarse["u10"] = coarse["t2m"] * 0 + 1.5 + 0.1 * rng.standard_normal(coarse["t2m"].shape)
    coarse["t2m"].attrs["units"], coarse["u10"].attrs["units"] = "K", "m s-1"
    coarse.to_netcdf(rep / "era5.nc")
    _latlon(rep / "static.nc", {"orog": (orog, "m")}, LAT, LON, times=False)
    pred = train(load_config(None, [
        f"data.path={regional}", *TINY, "data.variables=[t2m]", "data.split=[0.75, 0.0, 0.25]",
        f"data.inputs={{path: {rep / 'era5.nc'}, variables: [t2m, u10]}}",
        f"data.static={{path: {rep / 'static.nc'}, variables: [orog]}}"]),
        root / "pred", progress=False)
    return {"root": root, "sample": sample, "lr": data / "lr.nc", "hr": data / "hr.nc",
            "own": Path(own.checkpoint), "pred": Path(pred.checkpoint), "rep": rep,
            "regional": regional, "era5": rep / "era5.nc"}


def in_process(argv: list[object], capsys: pytest.CaptureFixture[str]
               ) -> subprocess.CompletedProcess[str]:
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    return subprocess.CompletedProcess(argv, code, "", err)


# ---------------------------------------------------------------- 1: the checkpoint's own paths


def test_1_evaluate_data_does_not_forget_the_checkpoints_predictors(world, tmp_path) -> None:
    before = digests(world["root"])
    proc = cli("evaluate", "--checkpoint", world["pred"], "--data", world["regional"], "--out",
               world["rep"], "--overwrite", *EVAL_FAST, "--max-fields", "1")
    one_line(proc, "evaluate", [f"report folder {world['rep']} contains the data.inputs.path",
             "era5.nc"])
    assert digests(world["root"]) == before  # the predictors and the static file are there


def test_1_the_static_path_of_a_checkpoint_is_protected_too(world, tmp_path, capsys) -> None:
    rep = tmp_path / "rep"  # a report folder holding only the static file
    rep.mkdir()
    write_marker(rep, "report")
    static = Path(shutil.copy(world["rep"] / "static.nc", rep / "static.nc"))
    payload = torch.load(world["pred"], weights_only=True)
    payload["config"]["data"]["static"]["path"] = str(static)
    payload["config"]["data"]["inputs"]["path"] = str(world["era5"])
    torch.save(payload, tmp_path / "ck.pt")
    before = digests(tmp_path)
    proc = in_process(["evaluate", "--checkpoint", tmp_path / "ck.pt", "--data",
                       world["regional"], "--out", rep, "--overwrite", *EVAL_FAST], capsys)
    one_line(proc, "evaluate", ["contains the data.static.path", "static.nc"])
    assert digests(tmp_path) == before


@pytest.mark.parametrize("key", ["inputs", "static"])
def test_1_train_run_dir_holding_its_predictors_or_static_file(world, tmp_path, capsys,
                                                                key) -> None:
    """train reads data.inputs.path and data.static.path: an --overwrite of the run folder that
    holds one of them is refused, the file byte for byte."""
    run = Path(shutil.copytree(world["pred"].parent.parent, tmp_path / "run"))
    inputs, static = world["era5"], world["rep"] / "static.nc"
    moved = Path(shutil.copy(inputs if key == "inputs" else static, run / f"{key}.nc"))
    paths = {"inputs": moved if key == "inputs" else inputs,
             "static": moved if key == "static" else static}
    before = digests(tmp_path)
    proc = in_process(["train", "--run-dir", run, "--overwrite", "--no-progress", *[
        f"data.path={world['regional']}", *TINY, "data.variables=[t2m]",
        f"data.inputs={{path: {paths['inputs']}, variables: [t2m, u10]}}",
        f"data.static={{path: {paths['static']}, variables: [orog]}}"]], capsys)
    one_line(proc, "train", [f"contains the data.{key}.path", f"{key}.nc"])
    assert digests(tmp_path) == before


# ---------------------------------------------------------------- 2: glob characters in a name


def test_2_a_literal_name_with_glob_characters_is_that_file(world, tmp_path, capsys) -> None:
    gb = tmp_path / "gb"
    gb.mkdir()
    literal = Path(shutil.copy(world["lr"], gb / "a[1].nc"))
    with xr.open_dataset(world["lr"]) as ds:
        (ds.load() * 1.01).assign_attrs(ds.attrs).to_netcdf(gb / "a1.nc")
    before = digests(tmp_path)
    down = ["downscale", "--checkpoint", world["own"], *FAST, "--seed", "3"]
    proc = cli(*down, "--input", literal, "--output", literal, "--overwrite")
    one_line(proc, "downscale", [f"is the --input {literal}"])
    assert digests(tmp_path) == before
    # alone, the name reads that file (not a1.nc, which the pattern would match)
    assert in_process([*down, "--input", literal, "--output", tmp_path / "o.nc"],
                      capsys).returncode == 0
    shutil.copy(literal, tmp_path / "plain.nc")
    assert in_process([*down, "--input", tmp_path / "plain.nc", "--output", tmp_path / "p.nc"],
                      capsys).returncode == 0
    with xr.open_dataset(tmp_path / "o.nc") as o, xr.open_dataset(tmp_path / "p.nc") as p:
        assert o.attrs["input"] == str(literal)
        np.testing.assert_array_equal(o["pwat"].values, p["pwat"].values)
    # a pattern that names no existing file still expands: ? matches a1.nc only
    assert in_process([*down, "--input", gb / "a?.nc", "--output", tmp_path / "q.nc"],
                      capsys).returncode == 0


# ---------------------------------------------------------------- 3: own partial store as input


def test_3_the_outputs_partial_store_is_never_the_input(world, tmp_path) -> None:
    pi = tmp_path / "pi"
    pi.mkdir()
    partial = pi / ".in.zarr.partial"
    with xr.open_dataset(world["hr"]) as ds:
        ds.load().to_zarr(partial, zarr_format=2)
    write_marker(partial, "downscale")
    before = digests(tmp_path)
    proc = cli("downscale", "--checkpoint", world["own"], *FAST, "--input", partial,
               "--coarsen", "--output", pi / "in.zarr", "--overwrite")
    one_line(proc, "downscale", [f"partial output {partial}", "is the --input"])
    assert digests(tmp_path) == before


# ---------------------------------------------------------------- 4: one writer per output


def test_4_a_held_lock_refuses_a_second_run_at_once(world, tmp_path) -> None:
    out = tmp_path / "out.zarr"
    with output_lock(out) as held:
        before = digests(tmp_path)
        proc = cli("downscale", "--checkpoint", world["own"], "--input", world["lr"], *FAST,
                   "--output", out)
        one_line(proc, "downscale", [f"another weather-sr run is writing output {out}",
                 f"PID {os.getpid()}", str(held)])
        assert digests(tmp_path) == before
    assert not held.exists()  # released on exit


def test_4_a_stale_lock_is_taken_over(world, tmp_path) -> None:
    out = tmp_path / "out.nc"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    with output_lock(out):
        owner = json.loads(lock_path(out).read_text())
    lock_path(out).write_text(json.dumps({**owner, "pid": dead.pid}))  # as a killed run left
    proc = cli("downscale", "--checkpoint", world["own"], "--input", world["lr"], *FAST,
               "--output", out)
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.nc"]


def test_4_two_runs_to_one_new_zarr(world, tmp_path) -> None:
    """Both start at once: one writes the store whole (its seed, each field once), the other
    exits 2 at once, by the lock or because the store exists."""
    out = tmp_path / "hr.zarr"
    argv = ["downscale", "--checkpoint", world["own"], "--input", world["lr"], "--members",
            "4", "--steps", "4", "--device", "cpu", "--no-progress", "--chunk-fields", "1",
            "--output", out]
    procs = [subprocess.Popen([sys.executable, "-m", "weather_sr", *map(str, argv), "--seed",
                               str(seed)], env=ENV, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for seed in (1, 2)]
    results = [(p.wait(timeout=300), p.communicate()[1]) for p in procs]
    assert sorted(code for code, _ in results) == [0, 2], results
    winner = (1, 2)[[code for code, _ in results].index(0)]
    loser = subprocess.CompletedProcess(argv, 2, "", next(e for c, e in results if c == 2))
    line = one_line(loser, "downscale", [str(out)])
    assert "another weather-sr run is writing" in line or "already exists" in line, line
    with xr.open_zarr(out) as z, xr.open_dataset(world["lr"]) as lr:
        assert z.attrs["seed"] == winner
        np.testing.assert_array_equal(z["time"].values, lr["time"].values)
        assert bool(np.isfinite(z["pwat"].values).all())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hr.zarr"]


# ---------------------------------------------------------------- 5, 7: values out of range


def _variant(src: Path, path: Path, var: str, where: tuple, value: float) -> Path:
    with xr.open_dataset(src) as ds:
        ds = ds.load()
    values = ds[var].values.copy()
    values[where] = value
    ds[var] = (ds[var].dims, values, ds[var].attrs)
    ds.to_netcdf(path)
    return path


@pytest.mark.parametrize(("var", "value", "words"), [
    ("btmp", -9999.0, ["btmp has values down to -9999 K, below absolute zero", "field 1"]),
    ("pwat", 1e6, ["pwat has the value 1e+06 kg m**-2", "training range", "field 1"]),
])
def test_5_fill_and_absurd_values_in_the_lr_input(world, tmp_path, capsys, var, value,
                                                  words) -> None:
    bad = _variant(world["lr"], tmp_path / "bad.nc", var, (1, slice(0, 2), slice(0, 2)), value)
    argv = ["downscale", "--checkpoint", world["own"], "--input", bad, *FAST]
    before = digests(tmp_path)
    proc = in_process([*argv, "--output", tmp_path / "o.nc"], capsys)
    one_line(proc, "downscale", ["bad.nc", "time 2010-03-08T15", *words, "--allow-out-of-range"])
    assert digests(tmp_path) == before
    proc = in_process([*argv, "--output", tmp_path / "o.nc", "--allow-out-of-range"], capsys)
    assert proc.returncode == 0 and "used anyway" in proc.stderr
    with xr.open_dataset(tmp_path / "o.nc") as o:
        assert o.attrs["command_line"].endswith("--allow-out-of-range")


def test_5_other_units_are_named_before_the_range(world, tmp_path, capsys) -> None:
    """An input in other units (btmp in degC, values converted) is out of range too: the
    channel and units check comes first, so the one line names the units, not the range."""
    with xr.open_dataset(world["lr"]) as ds:
        ds = ds.load()
    ds["btmp"] = (ds["btmp"] - 273.15).assign_attrs(units="degC")
    ds.to_netcdf(tmp_path / "celsius.nc")
    proc = in_process(["downscale", "--checkpoint", world["own"], "--input",
                       tmp_path / "celsius.nc", *FAST, "--output", tmp_path / "o.nc"], capsys)
    line = one_line(proc, "downscale", ["celsius.nc", "btmp", "'degC'", "'K'"])
    assert "training range" not in line


def test_5_evaluate_checks_the_range_too(world, tmp_path, capsys) -> None:
    with xr.open_dataset(world["sample"]) as ds:
        crop = ds[["pwat", "btmp"]].isel(y=slice(0, 32), x=slice(0, 32)).load()
    crop["btmp"].values[-1, :4, :4] = -9999.0  # a fill value in the last (test) field
    crop.to_netcdf(tmp_path / "crop.nc")
    argv = ["evaluate", "--checkpoint", world["own"], "--data", tmp_path / "crop.nc",
            *EVAL_FAST, "--out", tmp_path / "rep"]
    proc = in_process(argv, capsys)
    one_line(proc, "evaluate", ["test split of", "crop.nc", "btmp has values down to -9999 K",
             "below absolute zero", "--allow-out-of-range"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["crop.nc"]
    assert in_process([*argv, "--allow-out-of-range"], capsys).returncode == 0


def _test_inputs(world: dict[str, Path], path: Path, change=None) -> Path:
    """The predictors of the regional model's last 4 times (its test split), changed."""
    with xr.open_dataset(world["era5"]) as ds:
        ds = ds.isel(time=slice(12, 16)).load()
    if change is not None:
        change(ds)
    ds.to_netcdf(path)
    return path


def test_7_a_predictor_far_out_of_range(world, tmp_path, capsys) -> None:
    def huge(ds: xr.Dataset) -> None:
        ds["t2m"].values[2] = 1e6

    bad = _test_inputs(world, tmp_path / "era5_bad.nc", huge)
    before = digests(tmp_path)
    proc = in_process(["downscale", "--checkpoint", world["pred"], "--input", bad, *FAST,
                       "--output", tmp_path / "o.nc"], capsys)
    one_line(proc, "downscale", ["era5_bad.nc", "field 2", "t2m has the value 1e+06 K",
             "training range"])
    assert digests(tmp_path) == before


# ---------------------------------------------------------------- 6: NaN in a predictor


def test_6_nan_in_a_predictor_gives_nan_where_it_acts(world, tmp_path, capsys) -> None:
    """As with the targets' own LR field: no output where an input is missing (a whole time
    of one predictor: that time; a block: the HR cells its regridded values do not cover)."""
    def holes(ds: xr.Dataset) -> None:
        ds["u10"].values[1] = np.nan  # a whole field of one predictor
        ds["t2m"].values[3, 2:4, 2:4] = np.nan  # a block

    bad = _test_inputs(world, tmp_path / "holes.nc", holes)
    assert in_process(["downscale", "--checkpoint", world["pred"], "--input", bad, *FAST,
                       "--output", tmp_path / "o.nc"], capsys).returncode == 0
    from weather_sr.data import open_fields
    from weather_sr.data.regrid import regrid_to

    regridded = regrid_to(open_fields(bad, ["t2m", "u10"], load=True), LAT, LON, "bilinear",
                          False, "test").values
    with xr.open_dataset(tmp_path / "o.nc") as o:
        out = o["t2m"].transpose("time", "member", ...).values  # [4, M, 32, 32]
    assert np.isnan(out[1]).all()
    hole = np.isnan(regridded[3]).any(axis=0)
    assert hole.any() and not hole.all()
    np.testing.assert_array_equal(np.isnan(out[3]), np.broadcast_to(hole, out[3].shape))
    assert np.isfinite(out[[0, 2]]).all()


# ---------------------------------------------------------------- 8: property: no input is lost

INPUTS = {  # --input: (name, --coarsen)
    "literal": ("in.nc", False), "glob characters": ("a[1].nc", False),
    "glob": ("a?.nc", False), "symlink": ("link.nc", False),
    "partial store": (".out.zarr.partial", True), "checkpoint's data.path": ("hr.nc", True),
}
OUTPUTS = ["in.nc", "a[1].nc", "a1.nc", "link.nc", "out.zarr", "hr.nc", "ck.pt", ".", "rep",
           "rep/x.nc", "new.nc", "new.zarr"]


def _layout(world: dict[str, Path], d: Path) -> None:
    """The few names the drawn commands share: data, a glob's namesake, a symlink, the partial
    store of ``out.zarr``, a checkpoint whose config names ``hr.nc``, a report folder."""
    shutil.copy(world["lr"], d / "in.nc")
    shutil.copy(world["lr"], d / "a[1].nc")
    shutil.copy(world["lr"], d / "a1.nc")
    shutil.copy(world["hr"], d / "hr.nc")
    (d / "link.nc").symlink_to(d / "in.nc")
    with xr.open_dataset(world["hr"]) as ds:
        ds.load().to_zarr(d / ".out.zarr.partial", zarr_format=2)
    write_marker(d / ".out.zarr.partial", "downscale")
    payload = torch.load(world["own"], weights_only=True)
    payload["config"]["data"]["path"] = str(d / "hr.nc")
    torch.save(payload, d / "ck.pt")
    (d / "rep").mkdir()
    write_marker(d / "rep", "report")


def _sha(d: Path) -> dict[str, str]:
    return {k: v for k, v in digests(d).items() if v}  # files only


def _inputs_of(d: Path, name: str) -> set[Path]:
    """The files a command with ``--input name`` reads (link targets, glob matches, the
    checkpoint and its data.path), resolved."""
    from weather_sr.targets import expand_path

    named = [Path(p) for p in expand_path(str(d / name))] + [d / "ck.pt", d / "hr.nc"]
    return {Path(os.path.realpath(p)) for p in named}


@settings(max_examples=40, deadline=None, derandomize=True)
@given(source=st.sampled_from(sorted(INPUTS)), output=st.sampled_from(OUTPUTS),
       overwrite=st.booleans(), chunk=st.sampled_from(["1", "8"]))
def test_8_no_drawn_command_loses_an_input(world, source: str, output: str, overwrite: bool,
                                           chunk: str) -> None:
    """Whatever the command: every input's SHA-256 is unchanged, every file that existed is
    still there unchanged unless it lies at the output the user named (an --overwrite of
    weather-sr's own result), and a refusal changes nothing at all."""
    name, coarsen = INPUTS[source]
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        _layout(world, d)
        before = _sha(d)
        argv = ["downscale", "--checkpoint", d / "ck.pt", "--input", d / name, "--output",
                d / output, *FAST, "--chunk-fields", chunk, *(["--coarsen"] if coarsen else []),
                *(["--overwrite"] if overwrite else [])]
        with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
            code = main([str(a) for a in argv])
        after = _sha(d)
        target = Path(os.path.realpath(d / output))
        reads = _inputs_of(d, name)
        assert all(after.get(str(p)) == before.get(str(p)) for p in reads if str(p) in before)
        touches = any(p == target or p.is_relative_to(target) or target.is_relative_to(p)
                      for p in reads)
        if code != 0 or touches:
            assert code == 2 and after == before, (argv, code)
            return
        # the output, and (--overwrite) its own partial store; a link to it reads the new one
        ours = [target, target.parent / f".{target.name}.partial"]
        kept = {p: h for p, h in before.items()
                if not any(Path(os.path.realpath(p)).is_relative_to(o) for o in ours)}
        assert {p: after.get(p) for p in kept} == kept, argv
        assert target.exists()
