"""The network's arithmetic while sampling: float32, or bfloat16 autocast.

Only the denoiser's forward pass runs under ``torch.autocast`` (convolutions and matrix products
in bf16, accumulation and normalisation in float32); the samplers' updates and the schedule stay
in float32/float64 and the network output is cast back to float32. ``"auto"`` resolves to bf16
only on a CPU with native bf16 instructions (AVX512-BF16 or AMX, as oneDNN reports them): without
them bf16 is emulated and slower than float32 (``benchmarks/bench_sampling.py --part precision``
measured 20x slower on an AVX2-only CPU). On CUDA and MPS ``"auto"`` is float32: bf16 there is
not measured yet (``--precision bf16`` asks for it).
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor

from weather_sr.core.process import Denoiser
from weather_sr.core.sampler_defaults import PRECISIONS
from weather_sr.errors import UserError


def native_bf16_cpu() -> bool:
    """Whether this CPU has bf16 instructions oneDNN uses (AVX512-BF16 or AMX)."""
    check = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    return bool(check is not None and check())


def check_precision(name: str) -> None:
    """UserError naming ``--precision`` unless ``name`` is one of :data:`PRECISIONS`."""
    if name not in PRECISIONS:
        raise UserError(f"--precision {name!r}: choose one of {', '.join(PRECISIONS)}")


def resolve_precision(name: str, device: torch.device | str) -> str:
    """``"float32"`` or ``"bf16"`` for ``name`` on ``device`` (``"auto"``: see the module)."""
    check_precision(name)
    kind = torch.device(device).type
    if name == "auto":
        return "bf16" if kind == "cpu" and native_bf16_cpu() else "float32"
    if name == "bf16" and kind == "cpu" and not native_bf16_cpu():
        warnings.warn("--precision bf16 on a CPU without native bf16 instructions is emulated "
                      "and much slower than float32", stacklevel=2)
    return name


def with_precision(denoiser: Denoiser, precision: str, device: torch.device | str) -> Denoiser:
    """``denoiser`` run under bf16 autocast when ``precision`` is ``"bf16"`` (output float32)."""
    if precision == "float32":
        return denoiser
    if precision != "bf16":
        raise ValueError(f"precision {precision!r}: resolve it first (resolve_precision)")
    kind = torch.device(device).type

    def call(x: Tensor, y: Tensor, t: Tensor, **kwargs: bool) -> Tensor:  # kwargs: wrap_x
        with torch.autocast(kind, dtype=torch.bfloat16):
            return denoiser(x, y, t, **kwargs).float()

    return call
