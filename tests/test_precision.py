"""Sampling precision: how "auto" resolves, bf16 autocast around the network only, the CLI's
--precision recorded in the provenance."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr
from test_infer import _checkpoint, _input

from weather_sr.cli import main
from weather_sr.errors import UserError
from weather_sr.inference import precision as P
from weather_sr.model.loading import load_model


def test_auto_is_bf16_only_on_a_cpu_with_native_bf16(monkeypatch: pytest.MonkeyPatch) -> None:
    for native in (True, False):
        monkeypatch.setattr(P, "native_bf16_cpu", lambda native=native: native)
        assert P.resolve_precision("auto", "cpu") == ("bf16" if native else "float32")
        assert P.resolve_precision("auto", torch.device("cuda")) == "float32"  # not measured
        assert P.resolve_precision("float32", "cpu") == "float32"
    with pytest.warns(UserWarning, match="emulated"):
        assert P.resolve_precision("bf16", "cpu") == "bf16"  # asked for: given, with a warning
    with pytest.raises(UserError, match="--precision"):
        P.resolve_precision("fp16", "cpu")


def test_bf16_runs_the_network_in_bf16_and_returns_float32(tmp_path: Path) -> None:
    model = load_model(_checkpoint(tmp_path / "m.pt"), torch.device("cpu"))
    seen: list[torch.dtype] = []
    conv = next(m for m in model.net.modules() if isinstance(m, torch.nn.Conv2d))
    conv.register_forward_hook(lambda mod, args, out: seen.append(out.dtype))
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(2, 2, 16, 16, generator=g), torch.randn(2, 2, 16, 16, generator=g)
    t = torch.tensor([3, 15])
    with torch.no_grad():
        ref = P.with_precision(model.denoiser, "float32", "cpu")(x, y, t)
        low = P.with_precision(model.denoiser, "bf16", "cpu")(x, y, t)
    assert seen == [torch.float32, torch.bfloat16]
    assert low.dtype == torch.float32
    # bf16 keeps 8 bits of mantissa: relative error of order 2**-8 per operation
    rel = float((low - ref).norm() / ref.norm())
    assert 1e-5 < rel < 0.05


def test_cli_records_precision(tmp_path: Path) -> None:
    """(--resume refuses another precision: tests/test_streaming.py.)"""
    ckpt, inp = _checkpoint(tmp_path / "model.pt"), _input(tmp_path / "lr.nc")
    base = ["downscale", "--checkpoint", str(ckpt), "--input", str(inp), "--members", "2",
            "--steps", "2", "--device", "cpu", "--no-progress"]
    outs = {}
    for p in ("float32", "bf16"):
        out = tmp_path / f"{p}.nc"
        assert main([*base, "--output", str(out), "--precision", p]) == 0
        outs[p] = xr.load_dataset(out)
        assert outs[p].attrs["precision"] == p
    auto = tmp_path / "auto.nc"
    assert main([*base, "--output", str(auto)]) == 0
    assert xr.load_dataset(auto).attrs["precision"] == P.resolve_precision("auto", "cpu")
    a, b = outs["float32"]["t2m"].values, outs["bf16"]["t2m"].values
    assert not np.array_equal(a, b) and np.nanmax(np.abs(a - b)) < 0.5 * np.nanstd(a)
