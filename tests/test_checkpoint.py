"""The checkpoint schema (CheckpointMeta): round trip, field checks, the one data check, safe
loading of damaged or odd files, and the format-version-1 fixture written by earlier code."""

from __future__ import annotations

import copy
import importlib.util
import os
import pickle
import struct
import threading
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from weather_sr.data.condition import ConditionSpec
from weather_sr.data.normalise import Normalizer
from weather_sr.errors import UserError
from weather_sr.model.checkpoint import load_checkpoint, save_checkpoint
from weather_sr.model.loading import load_model
from weather_sr.model.meta import CheckpointMeta, check_channels_of

FIXTURES = Path(__file__).parent / "fixtures"
TINY_V1 = FIXTURES / "tiny_v1.pt"
TRAINING_STATE = {"model", "ema", "optimizer", "grad_scaler", "scheduler", "rng"}


def _script() -> Any:
    spec = importlib.util.spec_from_file_location("make_tiny_v1", FIXTURES / "make_tiny_v1.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def payload() -> dict[str, Any]:
    return load_checkpoint(TINY_V1)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, dict):
        return (isinstance(b, dict) and list(a) == list(b)
                and all(_same(a[k], b[k]) for k in a))
    if isinstance(a, list | tuple):
        return (type(a) is type(b) and len(a) == len(b)
                and all(_same(x, y) for x, y in zip(a, b, strict=True)))
    return type(a) is type(b) and a == b


# ------------------------------------------------------------------ round trip


def test_payload_meta_payload_round_trip_is_identical(payload: dict[str, Any]) -> None:
    meta = CheckpointMeta.from_payload(payload, str(TINY_V1))
    back = meta.to_payload()
    assert set(payload) - set(back) == TRAINING_STATE  # the schema is everything else
    for key, value in back.items():
        assert _same(payload[key], value), key
    assert CheckpointMeta.from_payload({**payload, **back}, "again") == meta
    assert meta.channels == ("a", "b") and meta.units == ("K", "K") and meta.scale_factor == 4
    assert meta.kind == "diffusion" and meta.target == "regression_residual"
    assert meta.prediction == "v" and meta.periodic and len(meta.target_scale) == 2
    assert meta.regression is not None and meta.regression.channels == 2
    assert meta.make_normalizer().channels == ["a", "b"]


def test_trainer_writes_the_fixture_format(tmp_path: Path) -> None:
    """A checkpoint of today's Trainer has the fixture's keys, in its order, with the same types
    (the CorrDiff base aside, which this plain residual run has not), and the keys added since
    (optional: older files load without them) last."""
    from weather_sr.data import build_datasets, synthetic_dataset, write_zarr
    from weather_sr.training.loop import train

    script = _script()
    torch.set_num_threads(1)
    data = write_zarr(synthetic_dataset(12, 32, 32, variables=("a", "b"), seed=5),
                      tmp_path / "f.zarr")
    bundle = build_datasets(data, ["a", "b"], scale_factor=4, patch_size=16)
    run = train(script._config(data, "training.steps=1"), tmp_path / "run", progress=False,
                bundle=bundle)
    new, old = load_checkpoint(run.checkpoint), load_checkpoint(TINY_V1)
    assert list(new) == [*old, "detail_lag1"]
    assert len(new["detail_lag1"]) == 2  # one lag-1 autocorrelation per channel
    for key in old:
        if key != "regression":
            assert type(new[key]) is type(old[key]), key
    assert new["regression"] is None
    meta = CheckpointMeta.from_payload(new, str(run.checkpoint))
    assert _same({k: new[k] for k in meta.to_payload()}, meta.to_payload())


# ------------------------------------------------------------------ field checks


def _units_short(p: dict) -> None:
    p["units"] = p["units"][:1]


def _set(key: str, value: Any):
    def change(p: dict) -> None:
        p[key] = value
    return change


def _set_in(section: str, key: str, value: Any):
    def change(p: dict) -> None:
        p[section][key] = value
    return change


def _del_in(section: str, key: str):
    def change(p: dict) -> None:
        del p[section][key]
    return change


def _in_condition(key: str, value: Any, inside: str | None = None):
    """Give the payload a valid predictor condition (inputs a and u of the targets' file), then
    set ``key`` of it (of its part ``inside``) to ``value``."""
    def change(p: dict) -> None:
        inputs = Normalizer("channel", ["a", "u"], np.zeros((2, 1, 1)), np.ones((2, 1, 1)),
                            low=np.zeros(2), high=np.ones(2))
        p["condition"] = ConditionSpec(["a", "b"], ["a", "u"], inputs, mode="coarsen",
                                       input_units=["K", "m s-1"],
                                       input_valid=np.ones((2, 4, 4), bool)).to_dict()
        (p["condition"] if inside is None else p["condition"][inside])[key] = value
    return change


CORRUPTIONS = {
    "units one short": (_units_short, r"field 'units' has 1 entry for 2 channels"),
    "units not names": (_set("units", [1, 2]), r"field 'units' is \[1, 2\], not a list"),
    "channels a string": (_set("channels", "ab"), r"field 'channels' is 'ab', not a list"),
    "channels repeated": (_set("channels", ["a", "a"]), r"field 'channels'.*not distinct"),
    "scale_factor a string": (_set("scale_factor", "4"),
                              r"field 'scale_factor' is '4', not a positive whole number"),
    "scale_factor zero": (_set("scale_factor", 0), r"field 'scale_factor' is 0"),
    "step negative": (_set("step", -1), r"field 'step' is -1, not a non-negative"),
    "normaliser empty": (_set("normalizer", {}), r"field 'normalizer' has no 'kind'"),
    "normaliser not a mapping": (_set("normalizer", [1.0]), r"field 'normalizer' is a list"),
    "normaliser one channel short": (_set_in("normalizer", "mean", [[[280.0]]]),
                                     r"field 'normalizer.mean' has shape \[1, 1, 1\], not "
                                     r"\[2, 1, 1\]"),
    "normaliser per-pixel shape for kind channel": (
        _set_in("normalizer", "std", [[[1.0, 1.0]], [[1.0, 1.0]]]),
        r"field 'normalizer.std' has shape \[2, 1, 2\]"),
    "normaliser ragged": (_set_in("normalizer", "mean", [[[1.0]], [[1.0, 2.0]]]),
                          r"field 'normalizer.mean' is not an array"),
    "normaliser std zero": (_set_in("normalizer", "std", [[[1.0]], [[0.0]]]),
                            r"field 'normalizer.std' has values <= 0"),
    "normaliser other channels": (_set_in("normalizer", "channels", ["b", "a"]),
                                  r"field 'normalizer' is for channels"),
    "normaliser unknown kind": (_set_in("normalizer", "kind", "global"),
                                r"field 'normalizer' has kind 'global'"),
    "grid without lat": (_del_in("grid", "lat"), r"field 'grid' has no 'lat'"),
    "grid lat 2-D": (_set_in("grid", "lat", [[1.0]]), r"field 'grid.lat' has shape"),
    "interpolation unknown": (_set("interpolation", "cubic"), r"field 'interpolation' is 'cubic'"),
    "best_val a string": (_set("best_val", "low"), r"field 'best_val' is 'low', not a number"),
    "config not a mapping": (_set("config", "yaml"), r"field 'config' is a str, not a mapping"),
    "regression base without weights": (_set_in("regression", "state", {}),
                                        r"field 'regression.state' is empty"),
    "regression base incomplete": (_del_in("regression", "state"),
                                   r"field 'regression' has no 'state'"),
    "regression base missing": (_set("regression", None),
                                r"field 'regression' is missing but the model's "
                                r"diffusion.target is regression_residual"),
    "regression base channels": (_set_in("regression", "channels", 3),
                                 r"field 'regression.channels' is 3 for 2 channels"),
    "regression base of a diffusion model": (
        lambda p: p["regression"].update(model_config={**p["regression"]["model_config"],
                                                       "kind": "diffusion"}),
        r"field 'regression.model_config' has kind 'diffusion'"),
    "target_scale wrong length": (_set("target_scale", [1.0]),
                                  r"field 'target_scale' is \[1.0\], not 2 positive numbers"),
    "target_scale not positive": (_set("target_scale", [1.0, -1.0]), r"field 'target_scale'"),
    "target_scale NaN": (_set("target_scale", [1.0, float("nan")]), r"field 'target_scale'"),
    # issue 21, case 10: every part of the newer schema
    "grid aux entry not (values, attributes)": (
        lambda p: p["grid"].update(aux={"lat": 5}), r"field 'grid.aux.lat' is 5"),
    "normaliser range of another length": (_set_in("normalizer", "low", [0.0]),
                                           r"field 'normalizer.low' has shape \[1\], not \[2\]"),
    "normaliser transform exponent 0": (
        _set_in("normalizer", "transforms", {"a": {"name": "a", "kind": "power",
                                                   "exponent": 0.0}}),
        r"field 'normalizer.transforms.a' is .* \(expected an exponent in \(0, 1\]"),
    "condition input_units one short": (_in_condition("input_units", ["K"]),
                                        r"field 'condition' is malformed \(input_units has 1 "
                                        r"entries for 2 inputs\)"),
    "condition input_valid of another shape": (
        _in_condition("input_valid", torch.ones(3, 3, dtype=torch.bool)),
        r"input_valid has shape \[3, 3\]"),
    "condition feature unknown": (_in_condition("features", ["moon"]),
                                  r"field 'condition.features' has \['moon'\]"),
    "condition regrid unknown": (_in_condition("regrid", "spline"),
                                 r"field 'condition.regrid' is 'spline'"),
    "condition input normaliser std zero": (
        _in_condition("std", [[[1.0]], [[0.0]]], inside="input_normalizer"),
        r"field 'condition.input_normalizer.std' has values <= 0"),
    "condition input normaliser transform kind": (
        _in_condition("transforms", {"u": {"name": "u", "kind": "cube", "exponent": None}},
                      inside="input_normalizer"),
        r"field 'condition.input_normalizer.transforms.u'"),
}


@pytest.mark.parametrize("case", CORRUPTIONS)
def test_every_field_corruption_names_the_field(case: str, payload: dict[str, Any]) -> None:
    change, match = CORRUPTIONS[case]
    bad = copy.deepcopy(payload)
    change(bad)
    with pytest.raises(UserError, match=match) as info:
        CheckpointMeta.from_payload(bad, "/runs/x/step_7.pt")
    line = str(info.value)
    assert line.startswith("checkpoint /runs/x/step_7.pt: field '") and "\n" not in line
    assert line.endswith("the file is corrupted or edited; use a checkpoint written by "
                         "weather-sr train")


def test_a_corrupted_field_stops_load_model(payload: dict[str, Any], tmp_path: Path) -> None:
    bad = copy.deepcopy(payload)
    bad["units"] = ["K"]
    save_checkpoint(tmp_path / "bad.pt", bad)
    with pytest.raises(UserError, match=r"bad.pt: field 'units' has 1 entry for 2 channels"):
        load_model(tmp_path / "bad.pt")


def test_older_checkpoints_without_optional_keys_load(payload: dict[str, Any]) -> None:
    old = {k: v for k, v in payload.items()
           if k not in ("units", "scale_factor", "interpolation", "grid", "best_val",
                        "nonfinite_skips", "target_scale", "package_version", "normalizer")}
    meta = CheckpointMeta.from_payload(old, "old.pt")
    assert meta.units is None and meta.scale_factor is None and meta.target_scale is None
    assert meta.nonfinite_skips == 0 and not meta.periodic
    meta.check_data(["a", "b"], ["degC", "m"], "data", scale_factor=2)  # nothing to compare
    with pytest.raises(UserError, match=r"checkpoint old.pt has no 'normalizer': it cannot "
                                        r"downscale"):
        meta.require("normalizer", to="downscale")


# ------------------------------------------------------------------ the one data check


def test_check_data_names_the_first_mismatch(payload: dict[str, Any]) -> None:
    meta = CheckpointMeta.from_payload(payload, "ck.pt")
    meta.check_data(["a", "b"], [" K", "K "], "data", scale_factor=4)
    with pytest.raises(UserError, match=r"^data: channels do not match the checkpoint ck.pt "
                                        r"\(missing b\)"):
        meta.check_data(["a"], ["K"], "data")
    with pytest.raises(UserError, match=r"order \['b', 'a'\] instead of \['a', 'b'\]"):
        meta.check_data(["b", "a"], ["K", "K"], "data")
    with pytest.raises(UserError, match=r"data: 1 channels but the checkpoint ck.pt has 2"):
        meta.check_data(["x"], ["K"], "data", names=False)
    meta.check_data(["x", "y"], ["K", "K"], "data", names=False)  # LR variables of other names
    with pytest.raises(UserError, match=r"variable b is in units 'degC' but the checkpoint "
                                        r"ck.pt was trained on 'K'"):
        meta.check_data(["a", "b"], ["K", "degC"], "data")
    with pytest.raises(UserError, match=r"variable a has no units but the checkpoint ck.pt "
                                        r"was trained on 'K'"):
        meta.check_data(["a", "b"], ["", "K"], "data")
    meta.check_data(["a", "b"], ["", "K"], "input f.nc", unknown_units=True)
    with pytest.raises(UserError, match=r"degC"):
        meta.check_data(["a", "b"], ["", "degC"], "input f.nc", unknown_units=True)
    with pytest.raises(UserError, match=r"data: the data is set up for scale factor 2, the "
                                        r"checkpoint ck.pt downscales by 4: use "
                                        r"data.scale_factor=4"):
        meta.check_data(["a", "b"], ["K", "K"], "data", scale_factor=2)
    check_channels_of(["a"], ["K"], ["a"], None, "x")  # no units saved: not compared


def test_regression_base_must_fit_the_run(payload: dict[str, Any], tmp_path: Path) -> None:
    """The diffusion.regression_checkpoint check is the same check, scale factor included."""
    from weather_sr import distributed as D
    from weather_sr.data import build_datasets, synthetic_dataset, write_zarr
    from weather_sr.training.trainer import Trainer

    script = _script()
    reg = copy.deepcopy(payload)
    reg["config"]["model"] = dict(reg["regression"]["model_config"])
    reg["config"]["diffusion"]["target"] = "residual"
    reg["model"] = reg["ema"] = reg["regression"]["state"]
    reg["regression"] = None
    save_checkpoint(tmp_path / "reg.pt", reg)
    data = write_zarr(synthetic_dataset(12, 32, 32, variables=("a", "b"), seed=5),
                      tmp_path / "f.zarr")
    info = D.setup("cpu")
    try:
        bundle = build_datasets(data, ["a", "b"], scale_factor=2, patch_size=16)
        cfg = script._config(data, "data.scale_factor=2", "diffusion.target=regression_residual",
                             f"diffusion.regression_checkpoint={tmp_path / 'reg.pt'}")
        with pytest.raises(UserError, match=r"diffusion.regression_checkpoint: this run's data: "
                                            r"the data is set up for scale factor 2, .* "
                                            r"downscales by 4"):
            Trainer(cfg, tmp_path / "run", info, bundle)
    finally:
        D.teardown(info)


# ------------------------------------------------------------------ loading damaged files


def _tensor_record(path: Path) -> tuple[int, int]:
    """(offset, size) of the data of the largest tensor record in a torch zip file."""
    with zipfile.ZipFile(path) as archive:
        info = max((i for i in archive.infolist() if "/data/" in i.filename),
                   key=lambda i: i.file_size)
    raw = path.read_bytes()
    name_len, extra_len = struct.unpack("<HH", raw[info.header_offset + 26:
                                                   info.header_offset + 30])
    return info.header_offset + 30 + name_len + extra_len, info.file_size


def test_flipped_bytes_in_a_weight_are_refused(tmp_path: Path) -> None:
    good = save_checkpoint(tmp_path / "ok.pt", {"step": 1, "model": {"w": torch.arange(256.0)},
                                                "ema": {}, "config": {}, "channels": ["a"]})
    offset, size = _tensor_record(good)
    raw = bytearray(good.read_bytes())
    raw[offset + size // 2] ^= 0xFF
    bad = tmp_path / "flipped.pt"
    bad.write_bytes(bytes(raw))
    silently = torch.load(bad, weights_only=True)  # what the CRC check is there for
    assert not torch.equal(silently["model"]["w"], torch.arange(256.0))
    with pytest.raises(UserError, match=r"flipped.pt is truncated or corrupted \(CRC check "
                                        r"failed for record \d+\): use another checkpoint"):
        load_checkpoint(bad)
    assert load_checkpoint(good)["step"] == 1


@pytest.mark.parametrize("wording", [
    "Weights only load failed. ... WeightsUnpickler error: Unsupported global: GLOBAL "
    "builtins.exec was not an allowed global by default. Please use "
    "`torch.serialization.add_safe_globals([builtins.exec])` ...",
    "Weights only load failed. Trying to load unsupported GLOBAL builtins.exec whose module "
    "builtins is blocked.",
])
def test_code_is_refused_whatever_torch_says(wording: str, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    path = save_checkpoint(tmp_path / "evil.pt", {"step": 0, "model": {}, "ema": {},
                                                  "config": {}, "channels": ["a"]})

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise pickle.UnpicklingError(wording)

    monkeypatch.setattr(torch, "load", refuse)
    with pytest.raises(UserError, match=r"evil.pt refused: the file contains code "
                                        r"\(builtins.exec\): loading it could run code"):
        load_checkpoint(path)


def _in_thread(fn: Any, timeout: float = 20.0) -> BaseException | None:
    """``fn()``'s exception, failing the test instead of hanging when it blocks."""
    out: list[BaseException | None] = []

    def run() -> None:
        try:
            fn()
            out.append(None)
        except BaseException as error:  # handed to the test
            out.append(error)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout)
    assert out, "load_checkpoint blocked"
    return out[0]


def test_folder_fifo_and_device_paths_get_their_own_message(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"is a folder, not a checkpoint file"):
        load_checkpoint(tmp_path)
    if hasattr(os, "mkfifo"):
        fifo = tmp_path / "pipe.pt"
        os.mkfifo(fifo)
        error = _in_thread(lambda: load_checkpoint(fifo))
        assert isinstance(error, UserError) and "pipe.pt is not a regular file" in str(error)
    if os.path.exists(os.devnull):
        with pytest.raises(UserError, match=r"is not a regular file"):
            load_checkpoint(os.devnull)
    with pytest.raises(UserError, match=r"none.pt does not exist"):
        load_checkpoint(tmp_path / "none.pt")
    (tmp_path / "afile").write_text("x")
    with pytest.raises(UserError, match=r"does not exist"):
        load_checkpoint(tmp_path / "afile" / "x.pt")


# ------------------------------------------------------------------ backward compatibility


def test_format_1_fixture_samples_as_when_it_was_written() -> None:
    """tests/fixtures/tiny_v1.pt was written by the code before the CheckpointMeta schema
    (tests/fixtures/make_tiny_v1.py); loading it must give the same model and samples."""
    assert TINY_V1.stat().st_size < 300_000
    script = _script()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the fixture's sample was drawn with one thread
    try:
        sample = script.sample(load_model(TINY_V1))
    finally:
        torch.set_num_threads(threads)
    expected = torch.load(FIXTURES / "tiny_v1_expected.pt", weights_only=True)
    torch.testing.assert_close(sample, expected, rtol=0, atol=1e-6)
