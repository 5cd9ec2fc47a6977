"""Streaming `downscale`: chunks of fields written as they finish (NetCDF with an unlimited first
dimension, Zarr), chunked output equal to unchunked, Zarr `--resume` after an interruption equal
to an uninterrupted run, and the partial-store rules (other settings, no `--resume`)."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import netCDF4
import numpy as np
import pytest
import xarray as xr
from test_infer import _checkpoint

import weather_sr
from weather_sr.atomic import read_marker
from weather_sr.cli import main
from weather_sr.inference import partial as store
from weather_sr.inference import stream

# differ by construction: how and when it was called
CALL_ATTRS = {"command_line", "history", "date_created"}
# members == batch size: the network sees the same batches whatever the chunks, so equal means
# bit for bit; DDIM with eta > 0 draws fresh noise at every step (from each pair's generator)
FAST = ["--members", "2", "--batch-size", "2", "--sampler", "ddim", "--steps", "2", "--eta",
        "0.5", "--seed", "3", "--device", "cpu", "--no-progress"]
N_FIELDS = 5


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_world(tmp_path_factory.mktemp("stream"), _run)


def make_world(root: Path, run: Callable[..., int]) -> dict[str, Path]:
    """In ``root``: a tiny checkpoint, a 5-field LR input, and the output of ``run`` (a
    downscale of theirs) in one chunk holding every field, ``ref``."""
    from weather_sr.data import synthetic_dataset

    ck = _checkpoint(root / "model.pt")
    synthetic_dataset(N_FIELDS, 8, 12, variables=("t2m", "u10"), seed=1).to_netcdf(root / "lr.nc")
    files = {"root": root, "ck": ck, "lr": root / "lr.nc", "ref": root / "ref.nc"}
    assert run(files, files["ref"], "--chunk-fields", "8") == 0
    return files


def _run(world: dict[str, Path], out: Path, *extra: str, inp: Path | None = None,
         ck: Path | None = None) -> int:
    return main(["downscale", "--checkpoint", str(ck or world["ck"]), "--input",
                 str(inp or world["lr"]), "--output", str(out), *FAST, *extra])


def _one_error(capsys: pytest.CaptureFixture[str], *words: str) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("weather-sr downscale: error: "), lines
    for word in words:
        assert word in lines[0], (word, lines[0])
    return lines[0]


def _assert_same(a: xr.Dataset, b: xr.Dataset) -> None:
    """Same variables, coordinates, values (bit for bit), attributes (but the call's)."""
    assert set(a.variables) == set(b.variables)
    for name in a.variables:
        assert a[name].dims == b[name].dims, name
        np.testing.assert_array_equal(a[name].values, b[name].values, err_msg=str(name))
        assert _text(a[name].attrs) == _text(b[name].attrs), name
    keys = (set(a.attrs) | set(b.attrs)) - CALL_ATTRS
    assert {k: str(a.attrs.get(k)) for k in keys} == {k: str(b.attrs.get(k)) for k in keys}


def _text(attrs: dict) -> dict[str, str]:
    return {str(k): str(v) for k, v in attrs.items()}  # NaN fill values compare as text


def _digests(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _interrupt_after(monkeypatch: pytest.MonkeyPatch, calls: int) -> None:
    """The Zarr writer is interrupted at its ``calls``-th record of the fields done (the first
    is the new store's 0): after the append of that chunk, before it is counted."""
    save, seen = stream.ZarrStream._save, []

    def interrupted(self: stream.ZarrStream, done: int) -> None:
        seen.append(done)
        if len(seen) == calls:
            raise KeyboardInterrupt
        save(self, done)

    monkeypatch.setattr(stream.ZarrStream, "_save", interrupted)


# ------------------------------------------------------------------ chunked == unchunked


@pytest.mark.parametrize("chunk", ["1", "2"])
def test_chunked_netcdf_equals_one_chunk(world: dict[str, Path], tmp_path: Path,
                                         chunk: str) -> None:
    out = tmp_path / "out.nc"
    assert _run(world, out, "--chunk-fields", chunk) == 0
    with xr.open_dataset(out) as a, xr.open_dataset(world["ref"]) as ref:
        assert a.sizes["time"] == N_FIELDS and bool(np.isfinite(a["t2m"].values).all())
        _assert_same(a, ref)
    # the stored numbers too (time units chosen from the whole axis, not the first chunk)
    with (xr.open_dataset(out, decode_times=False, mask_and_scale=False) as a,
          xr.open_dataset(world["ref"], decode_times=False, mask_and_scale=False) as ref):
        _assert_same(a, ref)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.nc"]  # no temporary file left


def test_netcdf_equals_the_dataset_written_at_once(world: dict[str, Path],
                                                   tmp_path: Path) -> None:
    """The streamed file is what writing the whole in-memory Dataset (the Python API's) gives."""
    with xr.open_dataset(world["lr"]) as lr:
        whole = weather_sr.downscale(lr, world["ck"], members=2, batch_size=2, sampler="ddim",
                                     steps=2, eta=0.5, seed=3, device="cpu")
    whole.to_netcdf(tmp_path / "whole.nc")
    with (xr.open_dataset(tmp_path / "whole.nc", decode_times=False) as a,
          xr.open_dataset(world["ref"], decode_times=False) as ref):
        _assert_same(a, ref)


def test_netcdf_first_dimension_is_unlimited(world: dict[str, Path]) -> None:
    with netCDF4.Dataset(world["ref"]) as nc:
        assert nc.dimensions["time"].isunlimited()
        assert not any(nc.dimensions[d].isunlimited() for d in ("member", "lat", "lon"))
        assert nc["t2m"].chunking() == [1, 2, 16, 24]  # one field per HDF5 chunk


def test_input_with_members_streams_along_sample(world: dict[str, Path], tmp_path: Path) -> None:
    """An input ensemble: the first dimension is ``sample`` (time, input_member on it)."""
    with xr.open_dataset(world["lr"]) as lr:
        part = lr.isel(time=slice(0, 3)).load()
    member = xr.DataArray([0, 1], dims="member", name="member")
    xr.concat([part, part + 0.5], dim=member).to_netcdf(tmp_path / "ens.nc")
    outs = [tmp_path / "one.nc", tmp_path / "chunked.nc"]
    assert _run(world, outs[0], "--chunk-fields", "8", inp=tmp_path / "ens.nc") == 0
    assert _run(world, outs[1], "--chunk-fields", "4", inp=tmp_path / "ens.nc") == 0
    with xr.open_dataset(outs[0]) as a, xr.open_dataset(outs[1]) as b:
        assert a["t2m"].dims[0] == "sample" and a.sizes["sample"] == 6
        assert list(b["input_member"].values) == [0, 1] * 3
        _assert_same(a, b)
    with netCDF4.Dataset(outs[1]) as nc:
        assert nc.dimensions["sample"].isunlimited()


# ------------------------------------------------------------------ Zarr


def test_zarr_output_equals_netcdf(world: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "out.zarr"
    assert _run(world, out, "--chunk-fields", "2") == 0
    assert read_marker(out) == "downscale" and not (out / store.SETTINGS).exists()
    with xr.open_zarr(out) as z, xr.open_dataset(world["ref"]) as ref:
        _assert_same(z.load(), ref)
    # --format zarr whatever the name; one chunk gives the same store
    other = tmp_path / "store"
    assert _run(world, other, "--chunk-fields", "8", "--format", "zarr") == 0
    with xr.open_zarr(other) as a, xr.open_zarr(out) as b:
        _assert_same(a.load(), b.load())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.zarr", "store"]


def test_resume_after_an_interruption_equals_an_uninterrupted_run(
        world: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out.zarr"
    partial = store.partial_path(out)
    # interrupted after the second chunk was appended but before it was recorded: the store
    # holds 4 fields, 2 of them recorded as complete
    _interrupt_after(monkeypatch, 3)
    assert _run(world, out, "--chunk-fields", "2") == 130
    err = capsys.readouterr().err
    assert "the 2 of 5 fields completed are kept in" in err and "--resume" in err
    assert not out.exists() and read_marker(partial) == "downscale"
    assert json.loads((partial / store.SETTINGS).read_text())["fields_done"] == 2
    with xr.open_zarr(partial) as z:
        assert z.sizes["time"] == 4
    monkeypatch.undo()
    # resumed with another chunk size (not a setting: the values do not depend on it)
    assert _run(world, out, "--chunk-fields", "3", "--resume") == 0
    assert not partial.exists() and read_marker(out) == "downscale"
    with xr.open_zarr(out) as z, xr.open_dataset(world["ref"]) as ref:
        assert z.sizes["time"] == N_FIELDS
        _assert_same(z.load(), ref)


@pytest.fixture(scope="module")
def partial(world: dict[str, Path]) -> Path:
    """The partial store of a run interrupted after its first chunk (2 of 5 fields)."""
    out = world["root"] / "cut" / "out.zarr"
    out.parent.mkdir()
    with pytest.MonkeyPatch.context() as mp:
        _interrupt_after(mp, 3)
        assert _run(world, out, "--chunk-fields", "2") == 130
    return store.partial_path(out)


def _copy_partial(partial: Path, tmp_path: Path) -> tuple[Path, Path]:
    out = tmp_path / "out.zarr"
    shutil.copytree(partial, store.partial_path(out))
    return out, store.partial_path(out)


@pytest.mark.parametrize("change", ["--seed", "--steps", "--members", "--eta", "--sampler",
                                    "--tile", "--overlap", "--precision", "--noise-colour",
                                    "--checkpoint", "--input"])
def test_resume_with_other_settings_is_refused(world: dict[str, Path], partial: Path,
                                               tmp_path: Path, change: str,
                                               capsys: pytest.CaptureFixture[str],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from weather_sr.inference import precision

    out, mine = _copy_partial(partial, tmp_path)
    other = {"float32": "bf16", "bf16": "float32"}[precision.resolve_precision("auto", "cpu")]
    monkeypatch.setattr(precision, "native_bf16_cpu", lambda: True)  # bf16 without a warning
    extra = {"--seed": ["--seed", "4"], "--steps": ["--steps", "3"],
             "--members": ["--members", "3"], "--eta": ["--eta", "0.2"],
             "--sampler": ["--sampler", "dpmpp_2m"], "--tile": ["--tile", "8"],
             "--overlap": ["--overlap", "4"],
             "--precision": ["--precision", other],
             "--noise-colour": ["--noise-colour", "power:1"]}.get(change, [])
    ck, inp = None, None
    if change == "--checkpoint":
        ck = _checkpoint(tmp_path / "other.pt", nan=True)
    if change == "--input":
        with xr.open_dataset(world["lr"]) as lr:
            (lr + 1.0).assign_attrs(lr.attrs).to_netcdf(tmp_path / "other.nc")
        inp = tmp_path / "other.nc"
    before = _digests(tmp_path)
    assert _run(world, out, *extra, "--resume", ck=ck, inp=inp) == 2
    word = {"--checkpoint": "checkpoint_sha256", "--input": "input",
            "--noise-colour": "noise_colour"}.get(change, change.lstrip("-"))
    _one_error(capsys, "--resume", str(mine), "other settings", word, "--overwrite")
    assert _digests(tmp_path) == before and not out.exists()  # nothing written


def test_partial_is_not_reused_without_resume(world: dict[str, Path], partial: Path,
                                              tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    out, mine = _copy_partial(partial, tmp_path)
    before = _digests(tmp_path)
    assert _run(world, out) == 2
    _one_error(capsys, str(mine), "interrupted run", "--resume", "--overwrite")
    assert _digests(tmp_path) == before
    # --overwrite starts again: the old partial store is discarded, the result complete
    assert _run(world, out, "--overwrite") == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.zarr"]
    with xr.open_zarr(out) as z, xr.open_dataset(world["ref"]) as ref:
        _assert_same(z.load(), ref)


def test_resume_refusals(world: dict[str, Path], tmp_path: Path,
                         capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(world, tmp_path / "out.nc", "--resume") == 2
    _one_error(capsys, "--resume", "Zarr")
    assert _run(world, tmp_path / "out.zarr", "--resume") == 2
    _one_error(capsys, "--resume", "no partial output", ".out.zarr.partial")
    (tmp_path / ".taken.zarr.partial").mkdir()  # not weather-sr's: never touched
    assert _run(world, tmp_path / "taken.zarr", "--overwrite") == 2
    _one_error(capsys, ".taken.zarr.partial", "not written by weather-sr")
    assert _run(world, tmp_path / "out.zarr", "--chunk-fields", "0") == 2
    _one_error(capsys, "--chunk-fields 0")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".taken.zarr.partial"]


def test_failure_before_a_complete_chunk_leaves_nothing(world: dict[str, Path], tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch,
                                                        capsys) -> None:
    # Zarr: the model gives NaN in the first chunk: no partial store is left
    ck = _checkpoint(tmp_path / "nan.pt", nan=True)
    assert _run(world, tmp_path / "out.zarr", ck=ck) == 2
    _one_error(capsys, "non-finite")
    # NetCDF: interrupted after its first chunk: no file at the output path, no temporary file
    write, calls = stream.NetCDFStream.write, []

    def interrupted(self: stream.NetCDFStream, ds: xr.Dataset) -> None:
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        write(self, ds)

    monkeypatch.setattr(stream.NetCDFStream, "write", interrupted)
    assert _run(world, tmp_path / "out.nc", "--chunk-fields", "2") == 130
    assert len(calls) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nan.pt"]


def test_failure_after_a_chunk_keeps_the_partial(world: dict[str, Path], tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """An error in a later chunk: one line that names the partial store, which keeps the
    completed fields for --resume."""
    from weather_sr.errors import UserError

    write, calls = stream.ZarrStream.write, []

    def failing(self: stream.ZarrStream, ds: xr.Dataset) -> None:
        calls.append(1)
        if len(calls) == 2:
            raise UserError("the model failed")
        write(self, ds)

    monkeypatch.setattr(stream.ZarrStream, "write", failing)
    out = tmp_path / "out.zarr"
    assert _run(world, out, "--chunk-fields", "2") == 2
    _one_error(capsys, "the model failed", "the 2 of 5 fields completed are kept in",
               str(store.partial_path(out)), "--resume")
    assert not out.exists()
    assert json.loads((store.partial_path(out) / store.SETTINGS).read_text())[
        "fields_done"] == 2


# ------------------------------------------------------------------ damaged partial stores


def _damage(partial: Path, how: str) -> list[str]:
    """Damage a copied partial store (2 of 5 fields done) as ``how`` says; the words the
    refusal must name."""
    settings = partial / store.SETTINGS
    saved = json.loads(settings.read_text())
    if how == "a chunk lost":
        next((partial / "t2m").glob("1.*")).unlink()  # field 1: recorded as complete
        return ["partial output", "t2m", "1 of 2 chunks are missing", "time 1-1", "--overwrite"]
    value = {"fields_done -1": -1, "fields_done beyond the input": 6,
             "fields_done text": "2", "fields_done missing": None}[how]
    if value is None:
        del saved["fields_done"]
    else:
        saved["fields_done"] = value
    settings.write_text(json.dumps(saved))
    return ["field 'fields_done'", "edited or damaged", "--overwrite"]


@pytest.mark.parametrize("how", ["a chunk lost", "fields_done -1",
                                 "fields_done beyond the input", "fields_done text",
                                 "fields_done missing"])
def test_resume_of_a_damaged_partial_is_refused(world: dict[str, Path], partial: Path,
                                                tmp_path: Path, how: str,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 21, cases 9 and 11: a lost chunk would be committed as a field of NaN, an edited
    count would skip or repeat fields: one line, nothing changed."""
    out, mine = _copy_partial(partial, tmp_path)
    words = _damage(mine, how)
    before = _digests(tmp_path)
    assert _run(world, out, "--chunk-fields", "2", "--resume") == 2
    _one_error(capsys, "--resume" if how != "a chunk lost" else "", str(mine), *words)
    assert _digests(tmp_path) == before and not out.exists()


def test_a_chunk_lost_before_the_commit_is_not_committed(world: dict[str, Path],
                                                         tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]
                                                         ) -> None:
    finish = stream.ZarrStream.finish

    def lose_one(self: stream.ZarrStream) -> Path:
        next((self.partial / "u10").glob("3.*")).unlink()
        return finish(self)

    monkeypatch.setattr(stream.ZarrStream, "finish", lose_one)
    out = tmp_path / "out.zarr"
    assert _run(world, out, "--chunk-fields", "2") == 2
    _one_error(capsys, "partial output", "u10", "chunks are missing", "time 3-3")
    assert not out.exists() and store.partial_path(out).is_dir()


def test_a_field_of_nan_is_stored_and_committed(world: dict[str, Path], tmp_path: Path) -> None:
    """An all-NaN input field gives an all-NaN output chunk, which is written (not left out as
    an empty chunk), so the store passes the missing-chunk check and reads back as NaN."""
    with xr.open_dataset(world["lr"]) as lr:
        lr = lr.load()
    lr["t2m"][2] = np.nan
    lr.to_netcdf(tmp_path / "holes.nc")
    out = tmp_path / "out.zarr"
    assert _run(world, out, "--chunk-fields", "2", inp=tmp_path / "holes.nc") == 0
    with xr.open_zarr(out) as z:
        t2m = z["t2m"].values
    assert np.isnan(t2m[2]).all() and np.isfinite(np.delete(t2m, 2, axis=0)).all()
    assert (out / "t2m" / "2.0.0.0").is_file()
