"""The Python API (weather_sr.load_model / weather_sr.downscale) against the CLI's file output,
its checks, and the number of network evaluations recorded in the provenance."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from test_infer import _checkpoint, _input

import weather_sr
from weather_sr.cli import main
from weather_sr.errors import UserError

# differ by construction: how it was called and when
CALL_ATTRS = {"command_line", "history", "date_created"}


def _cli(tmp_path: Path, inp: Path, *extra: str, name: str = "out.nc") -> xr.Dataset:
    ckpt = tmp_path / "model.pt"
    out = tmp_path / name
    assert main(["downscale", "--checkpoint", str(ckpt), "--input", str(inp), "--output",
                 str(out), "--device", "cpu", "--no-progress", *extra]) == 0
    return xr.load_dataset(out)


def _assert_same(api: xr.Dataset, cli: xr.Dataset, *, skip: set[str] = CALL_ATTRS) -> None:
    assert set(api.data_vars) == set(cli.data_vars)
    assert set(api.coords) == set(cli.coords)
    for name in api.variables:
        a, c = api[name], cli[name]
        assert a.dims == c.dims, name
        if np.issubdtype(a.dtype, np.number):
            np.testing.assert_allclose(a.values, c.values, rtol=1e-6, atol=1e-5, err_msg=name)
        else:
            np.testing.assert_array_equal(a.values, c.values, err_msg=name)
        assert a.attrs == c.attrs, name
    keys = (set(api.attrs) | set(cli.attrs)) - skip
    assert {k: api.attrs.get(k) for k in keys} == {k: cli.attrs.get(k) for k in keys}


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    return _checkpoint(tmp_path / "model.pt"), _input(tmp_path / "lr.nc")


def test_api_dataset_equals_cli_file(tmp_path: Path, files: tuple[Path, Path]) -> None:
    ckpt, inp = files
    cli = _cli(tmp_path, inp, "--members", "2", "--steps", "3", "--seed", "5")
    with xr.open_dataset(inp) as lr:
        api = weather_sr.downscale(lr, ckpt, members=2, steps=3, seed=5, device="cpu")
    _assert_same(api, cli)
    assert api.attrs["sampler"] == "dpmpp_2m" and api.attrs["network_evaluations"] == 3
    assert api.attrs["command_line"].startswith("weather_sr.downscale(ds, checkpoint, members=2")
    # a loaded model gives the same values; the provenance names its file but does not hash it
    model = weather_sr.load_model(ckpt)
    with xr.open_dataset(inp) as lr:
        again = weather_sr.downscale(lr.load(), model, members=2, steps=3, seed=5, device="cpu")
    _assert_same(again, cli, skip=CALL_ATTRS | {"checkpoint_sha256", "input"})
    assert again.attrs["checkpoint_sha256"] == "" and again.attrs["checkpoint"] == str(ckpt)


def test_api_coarsen_and_tiles_equal_cli(tmp_path: Path, files: tuple[Path, Path]) -> None:
    hr = _input(tmp_path / "hr.nc", ny=16, nx=24)
    cli = _cli(tmp_path, hr, "--coarsen", "--members", "2", "--sampler", "ddim", "--steps", "2",
               "--eta", "0.5", "--tile", "16", "--overlap", "4")
    with xr.open_dataset(hr) as ds:
        api = weather_sr.downscale(ds, files[0], members=2, sampler="ddim", steps=2, eta=0.5,
                                   coarsen=True, tile=16, overlap=4, device="cpu")
    _assert_same(api, cli)
    assert api.attrs["coarsened_input"] == 1 and api.attrs["tile"] == 16


def test_api_reads_lazy_input_chunk_by_chunk(tmp_path: Path, files: tuple[Path, Path],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """A lazily opened Dataset is read a chunk of fields at a time and never loaded whole; the
    result equals the CLI's (other chunking) for the same seed, also with dask chunks."""
    from weather_sr.inference import api

    ckpt, inp = files
    cli = _cli(tmp_path, inp, "--members", "2", "--steps", "2", "--chunk-fields", "3")
    sizes: list[int] = []
    real = api.prepare_fields

    def spy(fields: xr.DataArray, *args: object, **kwargs: object) -> object:
        sizes.append(int(fields.sizes["sample"]))
        return real(fields, *args, **kwargs)

    monkeypatch.setattr(api, "prepare_fields", spy)
    with xr.open_dataset(inp) as lr:
        out = weather_sr.downscale(lr, ckpt, members=2, steps=2, chunk_fields=2, device="cpu")
        assert not lr["t2m"].variable._in_memory  # read by chunks, never loaded whole
    assert sizes == [2, 1]
    _assert_same(out, cli)
    with xr.open_dataset(inp, chunks={"time": 1}) as lr:
        dask_out = weather_sr.downscale(lr, ckpt, members=2, steps=2, chunk_fields=1,
                                        device="cpu")
    _assert_same(dask_out, cli)


def test_network_evaluations_recorded(tmp_path: Path, files: tuple[Path, Path]) -> None:
    """Ancestral sampling runs all T = 20 steps whatever --steps says; provenance says so."""
    ds = _cli(tmp_path, files[1], "--members", "2", "--sampler", "ancestral", "--steps", "3")
    assert (ds.attrs["steps"], ds.attrs["network_evaluations"]) == (3, 20)


def test_api_refuses_bad_input(files: tuple[Path, Path]) -> None:
    ckpt, inp = files
    with xr.open_dataset(inp) as lr:
        lr = lr.load()
    with pytest.raises(UserError, match="u10"):
        weather_sr.downscale(lr.drop_vars("u10"), ckpt, device="cpu")
    other = lr.copy()
    other["t2m"].attrs["units"] = "degC"
    with pytest.raises(UserError, match="units"):
        weather_sr.downscale(other, ckpt, device="cpu")
    with pytest.raises(UserError, match="members"):
        weather_sr.downscale(lr, ckpt, members=0, device="cpu")
    with pytest.raises(UserError, match="sampler"):
        weather_sr.downscale(lr, ckpt, sampler="euler", device="cpu")
    with pytest.raises(UserError, match=r"xarray\.Dataset"):
        weather_sr.downscale(lr["t2m"], ckpt, device="cpu")  # type: ignore[arg-type]
