"""Bad input to every command: one line on stderr naming the problem, exit 2, nothing written.

Every case runs ``weather_sr.cli.main`` in-process and checks: return code 2; stderr is exactly one
line starting with ``weather-sr <command>: error:`` and containing the words that name the file or
option; no file (temp files included) appeared or changed in the folders involved.
"""

from __future__ import annotations

import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr

from weather_sr.cli import main
from weather_sr.config import config_to_yaml, load_config
from weather_sr.data import synthetic_dataset, write_netcdf
from weather_sr.data.condition import default_condition
from weather_sr.data.normalise import Normalizer
from weather_sr.errors import UserError
from weather_sr.training.loop import train

torch.set_num_threads(1)

TINY = [
    "data.variables=[t2m, z]", "data.scale_factor=4", "data.patch_size=16",
    "model.base_channels=8", "model.channel_mults=[1, 2]", "model.num_res_blocks=1",
    "model.head_channels=8", "diffusion.timesteps=20", "training.batch_size=2",
    "training.steps=1", "training.warmup_steps=1", "training.val_every=100",
    "training.checkpoint_every=100", "training.val_images=0", "training.precision=fp32",
    "output.tensorboard=false",
]


class Payload:
    """A pickle that would create a file if it were ever unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def _variant(path: Path, change) -> Path:
    ds = synthetic_dataset(12, 32, 32, variables=("t2m", "z"), seed=5)
    change(ds).to_netcdf(path)
    return path


def _rename_dims(ds: xr.Dataset) -> xr.Dataset:
    ds = ds.rename(lat="a", lon="b")
    for name in ("a", "b"):
        ds[name].attrs = {}
    return ds


def _inf(ds: xr.Dataset) -> xr.Dataset:
    values = ds["t2m"].values.copy()
    values[0, 3, 3] = np.inf
    return ds.assign(t2m=(ds["t2m"].dims, values, ds["t2m"].attrs))


def _units(ds: xr.Dataset) -> xr.Dataset:
    ds["t2m"].attrs["units"] = "degC"
    return ds


def _checkpoint_variants(ck: Path, bad: Path) -> None:
    raw = ck.read_bytes()
    (bad / "trunc.pt").write_bytes(raw[: len(raw) // 2])
    flipped = bytearray(raw)
    for i in np.random.default_rng(0).integers(64, len(raw) - 64, 300):
        flipped[i] ^= 0xFF
    (bad / "corrupt.pt").write_bytes(bytes(flipped))
    (bad / "garbage.pt").write_text("not a checkpoint")
    payload = torch.load(ck, weights_only=True)

    def save(name: str, **changes: object) -> None:
        torch.save({**payload, **changes}, bad / name)

    save("v99.pt", format_version=99)
    cfg = payload["config"]
    save("wide.pt", config={**cfg, "model": {**cfg["model"], "base_channels": 16}})
    save("newer.pt", config={**cfg, "model": {**cfg["model"], "future_option": 1}})
    save("badtype.pt", config={**cfg, "model": {**cfg["model"], "base_channels": "eight"}})
    norm = payload["normalizer"]  # issue 21, case 10: edited parts of the newer schema

    def transform(**entry: object) -> dict:
        return {**norm, "transforms": {"t2m": {"name": "t2m", **entry}}}

    save("xform0.pt", normalizer=transform(kind="power", exponent=0.0))
    save("xformkind.pt", normalizer=transform(kind="cube", exponent=None))
    cond = default_condition(payload["channels"], Normalizer.from_dict(norm)).to_dict()
    save("units1.pt", condition={**cond, "input_units": ["K"]})
    torch.save({"weights": torch.zeros(2)}, bad / "foreign.pt")
    torch.save({"format": "weather-sr-checkpoint", "x": Payload(bad / "pwned")}, bad / "evil.pt")
    (bad / "evil.pkl").write_bytes(pickle.dumps(Payload(bad / "pwned"), protocol=2))


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Paths of good and bad inputs, a tiny trained diffusion and regression checkpoint."""
    root = tmp_path_factory.mktemp("cli_errors")
    bad = root / "bad"
    bad.mkdir()
    data = write_netcdf(synthetic_dataset(12, 32, 32, variables=("t2m", "z"), seed=5),
                        root / "fields.nc")
    # every 4th point: an 8 x 8 field on the LR grid spacing (x4), as downscale expects
    lr = _variant(root / "lr.nc", lambda ds: ds.isel(lat=slice(0, 32, 4), lon=slice(0, 32, 4)))
    dif = train(load_config(None, [f"data.path={data}", *TINY]), root / "dif", progress=False)
    reg = train(load_config(None, [f"data.path={data}", *TINY, "model.kind=regression"]),
                root / "reg", progress=False)
    cfg = root / "base.yaml"
    cfg.write_text(config_to_yaml(load_config(None, [f"data.path={data}", *TINY])))
    (bad / "text.nc").write_text("hello, not a NetCDF file")
    (bad / "folder.zarr").mkdir()
    (bad / "bad.yaml").write_text("training: [1, 2\n")
    (bad / "afile").write_text("a file, not a folder")
    (bad / "existing").mkdir()
    (bad / "existing" / "keep.txt").write_text("keep")
    variants = {
        "missvar": lambda ds: ds[["t2m"]],
        "nodims": _rename_dims,
        "allnan": lambda ds: ds.assign(t2m=ds["t2m"] * np.nan),
        "inf": _inf,
        "units": _units,
        "tiny": lambda ds: ds.isel(lat=slice(0, 2), lon=slice(0, 2)),
        "odd": lambda ds: ds.isel(lat=slice(0, 30), lon=slice(0, 30)),
    }
    for name, change in variants.items():
        _variant(bad / f"{name}.nc", change)
    _checkpoint_variants(Path(dif.checkpoint), bad)
    return {"root": str(root), "bad": str(bad), "data": str(data), "lr": str(lr),
            "ck": str(dif.checkpoint), "reg": str(reg.checkpoint), "cfg": str(cfg),
            "run": str(root / "dif")}


def snapshot(*folders: str | Path) -> dict[str, tuple[int, int]]:
    """Every file below ``folders`` (hidden temp files too) with its size and mtime."""
    out = {}
    for folder in folders:
        for dirpath, _, files in os.walk(folder):
            for name in files:
                st = os.stat(os.path.join(dirpath, name))
                out[os.path.join(dirpath, name)] = (st.st_size, st.st_mtime_ns)
            out[dirpath] = (0, 0)
    return out


def check_error(argv: list[str], command: str, words: list[str], capsys,
                watch: list[str | Path]) -> str:
    before = snapshot(*watch)
    assert main(argv) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"weather-sr {command}: error: "), err
    for word in words:
        assert word in lines[0], (word, lines[0])
    assert snapshot(*watch) == before  # nothing written, nothing replaced, no temp file left
    return lines[0]


def fill(template: list[str], world: dict[str, str], out: Path) -> list[str]:
    return [t.format(**world, out=out) for t in template]


DOWNSCALE = ["downscale", "--checkpoint", "{ck}", "--input", "{lr}", "--output", "{out}/o.nc",
             "--members", "2", "--steps", "2", "--device", "cpu", "--no-progress"]


def ds_args(**replace: str) -> list[str]:
    args = list(DOWNSCALE)
    for key, value in replace.items():
        args[args.index(f"--{key}") + 1] = value
    return args


DOWNSCALE_CASES = {
    "input missing": (ds_args(input="{bad}/none.nc"), ["none.nc", "not found"]),
    "input folder, not Zarr": (ds_args(input="{bad}/folder.zarr"), ["folder.zarr", "Zarr"]),
    "input not NetCDF": (ds_args(input="{bad}/text.nc"), ["text.nc", "not a readable NetCDF"]),
    "variable missing": (ds_args(input="{bad}/missvar.nc"), ["missvar.nc", "'z' not found"]),
    "no lat/lon dims": (ds_args(input="{bad}/nodims.nc"), ["nodims.nc", "unrecognised dims"]),
    "HR smaller than one LR cell": ([*ds_args(input="{bad}/tiny.nc"), "--coarsen"],
                                    ["tiny.nc", "smaller than scale_factor 4"]),
    "tile not a UNet multiple": ([*DOWNSCALE, "--tile", "3"], ["--tile 3", "multiple of 2"]),
    "all NaN": (ds_args(input="{bad}/allnan.nc"), ["allnan.nc", "t2m", "entirely missing"]),
    "Inf": (ds_args(input="{bad}/inf.nc"), ["inf.nc", "t2m", "Inf"]),
    "units differ": (ds_args(input="{bad}/units.nc"), ["units.nc", "t2m", "'degC'", "'K'"]),
    "checkpoint missing": (ds_args(checkpoint="{bad}/none.pt"), ["none.pt", "does not exist"]),
    "checkpoint truncated": (ds_args(checkpoint="{bad}/trunc.pt"), ["trunc.pt", "truncated"]),
    "checkpoint corrupted": (ds_args(checkpoint="{bad}/corrupt.pt"), ["corrupt.pt"]),
    "checkpoint not PyTorch": (ds_args(checkpoint="{bad}/garbage.pt"),
                               ["garbage.pt", "not a weather-sr checkpoint"]),
    "checkpoint foreign": (ds_args(checkpoint="{bad}/foreign.pt"),
                           ["foreign.pt", "not a weather-sr training checkpoint"]),
    "checkpoint format version": (ds_args(checkpoint="{bad}/v99.pt"),
                                  ["v99.pt", "format version 99"]),
    "checkpoint config vs weights": (ds_args(checkpoint="{bad}/wide.pt"),
                                     ["wide.pt", "weights do not fit"]),
    "checkpoint config from newer version": (ds_args(checkpoint="{bad}/newer.pt"),
                                             ["newer.pt", "unknown key model.future_option"]),
    "checkpoint config wrong type": (ds_args(checkpoint="{bad}/badtype.pt"),
                                     ["badtype.pt", "model.base_channels must be of type int"]),
    "checkpoint transform exponent 0": (ds_args(checkpoint="{bad}/xform0.pt"),
                                        ["xform0.pt", "normalizer.transforms.t2m", "exponent"]),
    "checkpoint transform kind unknown": (ds_args(checkpoint="{bad}/xformkind.pt"),
                                          ["xformkind.pt", "normalizer.transforms.t2m", "cube"]),
    "checkpoint condition input_units one short": (
        ds_args(checkpoint="{bad}/units1.pt"),
        ["units1.pt", "'condition'", "input_units has 1 entries for 2 inputs"]),
    "output folder missing": (ds_args(output="{out}/nodir/o.nc"), ["nodir", "does not exist"]),
    "output under a file": (ds_args(output="{bad}/afile/o.nc"), ["afile", "not a folder"]),
    "output is a folder": ([*ds_args(output="{bad}/existing"), "--overwrite"],
                           ["existing", "is a folder"]),
    "output exists": (ds_args(output="{bad}/text.nc"), ["text.nc", "already exists",
                                                        "--overwrite"]),
    "members 0": ([*DOWNSCALE, "--members", "0"], ["--members 0"]),
    "steps 0": ([*DOWNSCALE, "--steps", "0"], ["--steps 0"]),
    "steps above T": (ds_args(steps="21"), ["--steps 21", "1..20"]),
    "eta out of range": ([*DOWNSCALE, "--eta", "2"], ["--eta 2"]),
    "device unknown": ([*DOWNSCALE, "--device", "tpu"], ["--device 'tpu'"]),
    "target grid unreadable": ([*DOWNSCALE, "--target-grid", "{bad}/text.nc"],
                               ["--target-grid", "text.nc"]),
}


@pytest.mark.parametrize("case", DOWNSCALE_CASES)
def test_downscale_bad_input(case: str, world, tmp_path: Path, capsys) -> None:
    template, words = DOWNSCALE_CASES[case]
    check_error(fill(template, world, tmp_path), "downscale", words, capsys,
                [tmp_path, world["root"]])


TRAIN = ["train", "--config", "{cfg}", "--run-dir", "{out}/run", "--no-progress"]
TRAIN_CASES = {
    "config missing": (["train", "--config", "{bad}/none.yaml", "--run-dir", "{out}/run"],
                       ["none.yaml", "does not exist"]),
    "config not YAML": (["train", "--config", "{bad}/bad.yaml", "--run-dir", "{out}/run"],
                        ["bad.yaml", "not valid YAML", "line 2"]),
    "unknown key": ([*TRAIN, "training.stepz=3"], ["unknown key training.stepz",
                                                   "did you mean training.steps"]),
    "wrong type": ([*TRAIN, "training.steps=many"], ["training.steps must be of type int"]),
    "lambda < 0": ([*TRAIN, "diffusion.lam=-1"], ["diffusion.lam = -1.0 must be >= 0"]),
    "steps = 0": ([*TRAIN, "training.steps=0"], ["training.steps = 0 must be >= 1"]),
    "scale factor vs patch size": ([*TRAIN, "data.scale_factor=3"],
                                   ["data.patch_size = 16", "data.scale_factor = 3"]),
    "patch vs UNet levels": ([*TRAIN, "data.patch_size=6", "data.scale_factor=2",
                              "model.channel_mults=[1, 2, 2]"], ["data.patch_size = 6",
                                                                 "multiple of 4"]),
    "unknown option value": ([*TRAIN, "data.interpolation=cubic"],
                             ["data.interpolation", "did you mean 'bicubic'"]),
    "data missing": ([*TRAIN, "data.path={bad}/none.nc"], ["none.nc", "not found"]),
    "data not NetCDF": ([*TRAIN, "data.path={bad}/text.nc"], ["text.nc", "not a readable"]),
    "variable missing": ([*TRAIN, "data.path={bad}/missvar.nc"], ["'z' not found"]),
    "no lat/lon dims": ([*TRAIN, "data.path={bad}/nodims.nc"], ["unrecognised dims"]),
    "grid smaller than a patch": ([*TRAIN, "data.patch_size=64"], ["patch_size=64",
                                                                  "larger than the HR field"]),
    "grid smaller than one LR cell": ([*TRAIN, "data.path={bad}/tiny.nc"],
                                      ["tiny.nc", "smaller than scale_factor 4"]),
    "grid not divisible, crop off": ([*TRAIN, "data.path={bad}/odd.nc", "data.crop=false"],
                                     ["odd.nc", "not divisible by scale_factor 4"]),
    "all NaN": ([*TRAIN, "data.path={bad}/allnan.nc"], ["allnan.nc", "t2m", "entirely missing"]),
    "Inf": ([*TRAIN, "data.path={bad}/inf.nc"], ["inf.nc", "t2m", "Inf"]),
    "regression checkpoint unsafe": ([*TRAIN, "diffusion.target=regression_residual",
                                      "diffusion.regression_checkpoint={bad}/evil.pt"],
                                     ["evil.pt", "refused"]),
    "regression checkpoint units": ([*TRAIN, "data.path={bad}/units.nc",
                                     "diffusion.target=regression_residual",
                                     "diffusion.regression_checkpoint={reg}"],
                                    ["regression_checkpoint", "units"]),
    "run dir under a file": (["train", "--config", "{cfg}", "--run-dir", "{bad}/afile/run",
                              "--no-progress"], ["afile", "choose another --run-dir"]),
    "run dir exists": (["train", "--config", "{cfg}", "--run-dir", "{bad}/existing",
                        "--no-progress"], ["existing", "already exists", "--overwrite"]),
    "overwrite with bad data keeps the old run": (
        ["train", "--config", "{cfg}", "--run-dir", "{run}", "--overwrite",
         "data.path={bad}/allnan.nc", "--no-progress"], ["allnan.nc"]),
    "resume with other variables": (["train", "--run-dir", "{run}", "--resume", "--no-progress",
                                     "training.steps=3", "data.variables=[z]"],
                                    ["--resume", "channels"]),
    "resume with other units": (["train", "--run-dir", "{run}", "--resume", "--no-progress",
                                 "training.steps=3", "data.path={bad}/units.nc"],
                                ["--resume", "units"]),
    "device unknown": ([*TRAIN, "training.device=tpu"], ["training.device"]),
}


@pytest.mark.parametrize("case", TRAIN_CASES)
def test_train_bad_input(case: str, world, tmp_path: Path, capsys) -> None:
    template, words = TRAIN_CASES[case]
    check_error(fill(template, world, tmp_path), "train", words, capsys,
                [tmp_path, world["root"]])
    assert not (tmp_path / "run").exists()  # no run folder for a run that never started


EVALUATE = ["evaluate", "--checkpoint", "{ck}", "--out", "{out}/report", "--members", "2",
            "--steps", "2", "--device", "cpu", "--max-fields", "1"]
EVALUATE_CASES = {
    "checkpoint missing": (["evaluate", "--checkpoint", "{bad}/none.pt", "--out", "{out}/r"],
                           ["none.pt", "does not exist"]),
    "checkpoint truncated": (["evaluate", "--checkpoint", "{bad}/trunc.pt", "--out", "{out}/r"],
                             ["trunc.pt", "truncated"]),
    "checkpoint format version": (["evaluate", "--checkpoint", "{bad}/v99.pt", "--out",
                                   "{out}/r"], ["v99.pt", "format version"]),
    "checkpoint config vs weights": (["evaluate", "--checkpoint", "{bad}/wide.pt", "--out",
                                      "{out}/r"], ["wide.pt", "weights do not fit"]),
    "data missing": ([*EVALUATE, "--data", "{bad}/none.nc"], ["none.nc", "not found"]),
    "data not NetCDF": ([*EVALUATE, "--data", "{bad}/text.nc"], ["text.nc", "not a readable"]),
    "variable missing": ([*EVALUATE, "--data", "{bad}/missvar.nc"], ["'z' not found"]),
    "no lat/lon dims": ([*EVALUATE, "--data", "{bad}/nodims.nc"], ["unrecognised dims"]),
    "grid smaller than one LR cell": ([*EVALUATE, "--data", "{bad}/tiny.nc"],
                                      ["smaller than scale_factor 4"]),
    "all NaN": ([*EVALUATE, "--data", "{bad}/allnan.nc"], ["t2m", "entirely missing"]),
    "Inf": ([*EVALUATE, "--data", "{bad}/inf.nc"], ["t2m", "Inf"]),
    "units differ": ([*EVALUATE, "--data", "{bad}/units.nc"], ["units", "degC"]),
    "members 0": ([*EVALUATE, "--members", "0"], ["--members 0"]),
    "members 1": ([*EVALUATE, "--members", "1"], ["--members 1", "at least 2"]),
    "steps 0": ([*EVALUATE, "--steps", "0"], ["--steps 0"]),
    "sampler unknown": ([*EVALUATE, "--sampler", "euler"], ["--sampler 'euler'"]),
    "max fields 0": ([*EVALUATE, "--max-fields", "0"], ["--max-fields 0"]),
    "out folder missing": ([*EVALUATE, "--out", "{out}/nodir/report"], ["nodir",
                                                                        "does not exist"]),
    "out exists": ([*EVALUATE, "--out", "{bad}/existing"], ["existing", "already exists"]),
}


@pytest.mark.parametrize("case", EVALUATE_CASES)
def test_evaluate_bad_input(case: str, world, tmp_path: Path, capsys) -> None:
    template, words = EVALUATE_CASES[case]
    check_error(fill(template, world, tmp_path), "evaluate", words, capsys,
                [tmp_path, world["root"]])


DEMO = ["demo", "--quick", "--device", "cpu", "--out"]
DEMO_CASES = {
    "out folder missing": ([*DEMO, "{out}/nodir/demo"], ["nodir", "does not exist"]),
    "out under a file": ([*DEMO, "{bad}/afile/demo"], ["afile", "not a folder"]),
    "out exists": ([*DEMO, "{bad}/existing"], ["existing", "already exists", "--overwrite"]),
    "device unknown": (["demo", "--quick", "--device", "tpu", "--out", "{out}/demo"],
                       ["--device 'tpu'"]),
    "sampler unknown": ([*DEMO, "{out}/demo", "--sampler", "euler"], ["--sampler 'euler'"]),
}


@pytest.mark.parametrize("case", DEMO_CASES)
def test_demo_bad_input(case: str, world, tmp_path: Path, capsys) -> None:
    template, words = DEMO_CASES[case]
    check_error(fill(template, world, tmp_path), "demo", words, capsys,
                [tmp_path, world["root"]])


SCORE = ["score", "--truth", "{data}", "--no-progress", "--prediction"]
SCORE_CASES = {
    "not a NetCDF file": ([*SCORE, "{bad}/text.nc", "--out", "{out}/r"], ["text.nc"]),
    "unknown dims": ([*SCORE, "{bad}/nodims.nc", "--out", "{out}/r"], ["dims", "--member-dim"]),
    "another grid": ([*SCORE, "{bad}/odd.nc", "--out", "{out}/r"], ["odd.nc", "grid"]),
    "Inf values": ([*SCORE, "{bad}/inf.nc", "--out", "{out}/r"], ["inf.nc", "t2m", "Inf"]),
    "existing report": ([*SCORE, "{data}", "--out", "{bad}/existing"], ["--overwrite"]),
    "out is the truth": ([*SCORE, "{data}", "--out", "{data}", "--overwrite"], ["--out"]),
    "bad rename": ([*SCORE, "{data}", "--out", "{out}/r", "--rename", "t2m"],
                   ["--rename t2m", "PREDICTION_NAME=TRUTH_NAME"]),
}


@pytest.mark.parametrize("case", SCORE_CASES)
def test_score_bad_input(case: str, world, tmp_path: Path, capsys) -> None:
    template, words = SCORE_CASES[case]
    check_error(fill(template, world, tmp_path), "score", words, capsys,
                [tmp_path, world["root"]])


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux /proc (read-only)")
@pytest.mark.parametrize("command", ["downscale", "evaluate", "score", "demo", "train"])
def test_read_only_output_folder(command: str, world, tmp_path: Path, capsys) -> None:
    """/proc refuses new files even to root (for whom os.access always says writable)."""
    argv = {
        "downscale": ds_args(output="/proc/weather-sr-out.nc"),
        "evaluate": [*EVALUATE, "--out", "/proc/weather-sr-report"],
        "score": [*SCORE, "{data}", "--out", "/proc/weather-sr-score"],
        "demo": [*DEMO, "/proc/weather-sr-demo"],
        "train": ["train", "--config", "{cfg}", "--run-dir", "/proc/weather-sr-run",
                  "--no-progress"],
    }[command]
    words = ["/proc", "choose another"]
    check_error(fill(argv, world, tmp_path), command, words, capsys, [tmp_path, world["root"]])


def test_unreadable_input_file(world, tmp_path: Path, capsys, monkeypatch) -> None:
    locked = tmp_path / "locked.nc"
    shutil.copy(world["lr"], locked)
    locked.chmod(0)
    if os.name != "posix" or os.geteuid() == 0:  # root reads any file: deny it as the OS would
        import builtins

        import weather_sr.data.files as files

        def denied(path, *args, **kwargs):
            if Path(path) == locked:
                raise PermissionError(13, "Permission denied", str(path))
            return builtins.open(path, *args, **kwargs)

        monkeypatch.setattr(files, "open", denied, raising=False)
    check_error(fill(ds_args(input=str(locked)), world, tmp_path), "downscale",
                ["locked.nc", "cannot be read", "Permission denied"], capsys, [tmp_path])


@pytest.mark.parametrize("command", ["downscale", "evaluate"])
def test_unsafe_checkpoint_is_refused_and_never_run(command: str, world, tmp_path: Path,
                                                    capsys) -> None:
    marker = Path(world["bad"]) / "pwned"
    for name in ("evil.pt", "evil.pkl"):
        evil = f"{{bad}}/{name}"
        argv = (ds_args(checkpoint=evil) if command == "downscale"
                else ["evaluate", "--checkpoint", evil, "--out", "{out}/r"])
        line = check_error(fill(argv, world, tmp_path), command, [name], capsys,
                           [tmp_path, world["root"]])
        assert "refused" in line and "could run code" in line
        assert not marker.exists()  # the payload did not run


def test_channel_order_in_the_file_does_not_matter(world, tmp_path: Path) -> None:
    """Variables are taken by name: a file storing them in another order gives the same output."""
    swapped = tmp_path / "swapped.nc"
    with xr.open_dataset(world["lr"]) as ds:
        ds[["z", "t2m"]].to_netcdf(swapped)
    assert main(fill(ds_args(output=str(tmp_path / "a.nc")), world, tmp_path)) == 0
    assert main(fill(ds_args(output=str(tmp_path / "b.nc"), input=str(swapped)), world,
                     tmp_path)) == 0
    with xr.open_dataset(tmp_path / "a.nc") as a, xr.open_dataset(tmp_path / "b.nc") as b:
        assert list(a.data_vars) == list(b.data_vars) == ["t2m", "z"]
        for name in ("t2m", "z"):
            np.testing.assert_array_equal(a[name].values, b[name].values)


def test_debug_shows_the_traceback(world, tmp_path: Path, capsys) -> None:
    argv = fill(ds_args(input="{bad}/none.nc"), world, tmp_path)
    with pytest.raises(UserError, match=r"none\.nc not found"):
        main([argv[0], "--debug", *argv[1:]])
    assert list(tmp_path.iterdir()) == []
