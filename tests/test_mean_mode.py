"""Mean mode: ``downscale`` and the API with a regression checkpoint write its deterministic
field, without a ``member`` dimension, recorded as such in the provenance; evaluate's scores of
the same model and ``score`` of that file agree; Zarr ``--resume`` continues it exactly."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from test_evaluation import _assert_close
from test_streaming import _interrupt_after

import weather_sr
from weather_sr.cli import main
from weather_sr.errors import UserError
from weather_sr.evaluation.evalset import load_split
from weather_sr.evaluation.pipeline import bundle_for
from weather_sr.inference import partial as store
from weather_sr.inference.downscale import SAMPLING_ATTRS
from weather_sr.model.loading import load_model

pytestmark = pytest.mark.usefixtures("one_thread")
CPU = ["--device", "cpu", "--no-progress"]


@pytest.fixture(scope="module")
def split(checkpoints: dict[str, Path], data_path: Path, tmp_path_factory: pytest.TempPathFactory
          ) -> Path:
    """The test split of the session's data (HR truth, for ``--coarsen``), with evaluate's LR
    of it beside it (``lr.nc``)."""
    data = load_split(bundle_for(load_model(checkpoints["regression"]), None), "test")
    path = tmp_path_factory.mktemp("mean") / "truth.nc"
    with xr.open_dataset(data_path) as ds:
        truth = ds.sel(time=data.time_values).load()
    truth.to_netcdf(path)
    lr = truth.coarsen(lat=4, lon=4).mean()  # the block grid; the values are evaluate's LR
    for c, name in enumerate(data.channels):
        lr[name].values = data.lr[:, c]
    lr.to_netcdf(path.parent / "lr.nc")
    return path


def _downscale(ckpt: Path, inp: Path, out: Path, *extra: str) -> int:
    # one field per network call: the batches, hence the bits, do not depend on the chunks
    return main(["downscale", "--checkpoint", str(ckpt), "--input", str(inp), "--coarsen",
                 "--output", str(out), "--batch-size", "1", *CPU, *extra])


def test_regression_checkpoint_writes_its_field_and_score_equals_evaluate(
        checkpoints: dict[str, Path], split: Path, tmp_path: Path) -> None:
    ckpt = checkpoints["regression"]
    assert main(["evaluate", "--checkpoint", str(ckpt), "--out", str(tmp_path / "ev"),
                 "--device", "cpu"]) == 0
    out = tmp_path / "mean.nc"
    assert _downscale(ckpt, split, out) == 0
    with xr.open_dataset(out) as ds:
        assert "member" not in ds.dims and ds["t2m"].dims == ("time", "lat", "lon")
        assert ds.attrs["output_mode"] == "mean" and ds.attrs["network_evaluations"] == 1
        assert not set(SAMPLING_ATTRS) & set(ds.attrs)  # no sampler, seed or members recorded
        assert "regression model" in ds.attrs["source"]
    assert main(["score", "--prediction", str(out), "--name", "reg", "--truth", str(split),
                 "--lr", str(split.parent / "lr.nc"), "--out", str(tmp_path / "sc"),
                 "--no-progress"]) == 0
    evaluated = json.loads((tmp_path / "ev" / "metrics.json").read_text())["results"]
    scored = json.loads((tmp_path / "sc" / "metrics.json").read_text())["results"]
    _assert_close(evaluated["reg"], scored["reg"], rtol=1e-4)


def test_api_equals_the_cli_and_sampling_options_do_not_change_it(
        checkpoints: dict[str, Path], split: Path, tmp_path: Path) -> None:
    ckpt = checkpoints["regression"]
    assert _downscale(ckpt, split, tmp_path / "a.nc", "--members", "4", "--seed", "9",
                      "--chunk-fields", "2") == 0
    with xr.open_dataset(split) as ds:
        api = weather_sr.downscale(ds, ckpt, coarsen=True, members=2, device="cpu",
                                   chunk_fields=3, batch_size=1)
    assert "member" not in api.dims and api.attrs["output_mode"] == "mean"
    with xr.open_dataset(tmp_path / "a.nc") as cli:
        for name in ("t2m", "z"):
            np.testing.assert_array_equal(api[name].values, cli[name].values)
            assert np.isfinite(cli[name].values).all()


def test_zarr_resume_of_a_mean_output_equals_an_uninterrupted_run(
        checkpoints: dict[str, Path], split: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    ckpt, out = checkpoints["regression"], tmp_path / "out.zarr"
    assert _downscale(ckpt, split, tmp_path / "ref.zarr") == 0
    _interrupt_after(monkeypatch, 3)  # the second field appended, not yet counted: cut back
    assert _downscale(ckpt, split, out, "--chunk-fields", "1") == 130
    assert json.loads((store.partial_path(out) / store.SETTINGS).read_text())["fields_done"] == 1
    with xr.open_zarr(store.partial_path(out)) as z:
        assert z.sizes["time"] == 2
    monkeypatch.undo()
    assert _downscale(ckpt, split, out, "--chunk-fields", "1", "--resume") == 0
    with xr.open_zarr(out) as a, xr.open_zarr(tmp_path / "ref.zarr") as b:
        assert a.sizes["time"] == b.sizes["time"] > 1 and "member" not in a.dims
        for name in ("t2m", "z"):
            np.testing.assert_array_equal(a[name].values, b[name].values)


def test_constraint_in_mean_mode(checkpoints: dict[str, Path], split: Path,
                                 tmp_path: Path) -> None:
    """``lr-mean`` makes the field's block means the LR input's; ``lr-mean-x0`` has no steps to
    correct: refused in one line."""
    ckpt = checkpoints["regression"]
    assert _downscale(ckpt, split, tmp_path / "c.nc", "--constrain", "lr-mean") == 0
    with xr.open_dataset(tmp_path / "c.nc") as ds, xr.open_dataset(split) as truth:
        for name in ("t2m", "z"):
            assert float(ds[name].attrs["lr_consistency_rmse"]) < 1e-5 * float(truth[name].std())
    with xr.open_dataset(split) as ds, pytest.raises(UserError, match=r"lr-mean-x0.*lr-mean$"):
        weather_sr.downscale(ds, ckpt, coarsen=True, constrain="lr-mean-x0", device="cpu")
