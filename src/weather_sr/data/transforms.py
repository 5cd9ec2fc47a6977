"""Per-variable transforms, applied before normalisation and inverted on the model's output.

Config (``data.transforms``): a mapping from a target or input variable to a string spec::

    transforms: {tp: log1p, wind: "power:0.5"}

- ``log1p``: y = log(1 + x)                  inverse x = exp(y) - 1
- ``power:P`` with 0 < P <= 1: y = x ** P     inverse x = y ** (1 / P)   (e.g. square root: 0.5)

Both are for non-negative variables (precipitation, wind speed): ``check_non_negative`` refuses
data with negative values. Both directions clamp at 0 first: the forward step maps packing noise
such as -1e-12 to 0, and the inverse maps any network output (however negative) to >= 0, so the
output of a transformed variable is never negative. NaN stays NaN. YAML reads ``power:0.5``
without a space as one string; quoting it is clearer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import torch

from weather_sr.errors import UserError

TRANSFORMS = ("log1p", "power")
SPEC_HELP = "log1p or power:P with 0 < P <= 1 (e.g. power:0.5)"
NEGATIVE_RTOL = 1e-6  # negatives smaller than this fraction of max |x| are packing noise

ArrayT = TypeVar("ArrayT", np.ndarray, torch.Tensor)


@dataclass(frozen=True)
class Transform:
    """The transform of variable ``name``: ``kind`` in TRANSFORMS, ``exponent`` for "power"."""

    name: str
    kind: str
    exponent: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in TRANSFORMS:
            raise ValueError(f"expected kind in {TRANSFORMS}, got {self.kind!r}")
        p = self.exponent
        if (self.kind == "power") != (p is not None) or (p is not None and not 0 < p <= 1):
            raise ValueError(f"expected an exponent in (0, 1] for power only, got {p!r}")

    @property
    def spec(self) -> str:
        """The config string: ``log1p`` or ``power:P``."""
        return "log1p" if self.kind == "log1p" else f"power:{self.exponent:g}"

    def forward(self, x: ArrayT) -> ArrayT:
        """Physical -> transformed values (same shape, dtype and device); x < 0 counts as 0."""
        if isinstance(x, torch.Tensor):
            x = x.clamp_min(0)
            return torch.log1p(x) if self.kind == "log1p" else x.pow(self.exponent)
        x = np.maximum(x, 0)  # numpy ufuncs also keep xarray DataArrays (lazily)
        return np.log1p(x) if self.kind == "log1p" else np.power(x, self.exponent)

    def inverse(self, y: ArrayT) -> ArrayT:
        """Transformed -> physical values, >= 0 for every real ``y`` (clamped at 0 first)."""
        if isinstance(y, torch.Tensor):
            y = y.clamp_min(0)
            return torch.expm1(y) if self.kind == "log1p" else y.pow(1.0 / self.exponent)
        y = np.maximum(y, 0)
        return np.expm1(y) if self.kind == "log1p" else np.power(y, 1.0 / self.exponent)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types, for checkpoints."""
        return {"name": self.name, "kind": self.kind, "exponent": self.exponent}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Transform:
        p = d.get("exponent")
        return cls(str(d["name"]), str(d["kind"]), None if p is None else float(p))


def parse_spec(name: str, spec: object, where: str) -> Transform:
    """One config value (``log1p`` / ``power:P``) for variable ``name`` -> Transform."""
    if not isinstance(spec, str):
        raise UserError(f"{where}: transform of {name} is {spec!r}: give a string, {SPEC_HELP}")
    kind, _, arg = (s.strip() for s in spec.strip().lower().partition(":"))
    if kind == "log1p" and not arg:
        return Transform(name, "log1p")
    if kind == "power" and arg:
        try:
            p = float(arg)
        except ValueError:
            p = float("nan")
        if 0 < p <= 1:
            return Transform(name, "power", p)
        raise UserError(f"{where}: transform {spec!r} of {name}: the exponent must be in (0, 1]")
    raise UserError(f"{where}: unknown transform {spec!r} of {name}: choose {SPEC_HELP}")


def parse_transforms(
    spec: Mapping[str, str] | None, variables: Sequence[str], where: str
) -> dict[str, Transform]:
    """``{variable: spec}`` from the config -> ``{variable: Transform}`` ({} for None/empty).

    ``variables`` are the names a transform may name (targets and inputs); UserError naming
    ``where`` for another name, a non-mapping or an unknown spec.
    """
    if spec is None:
        return {}
    if not isinstance(spec, Mapping):
        raise UserError(
            f"{where}: give a mapping from variable to transform, e.g. {{tp: log1p}}, not {spec!r}"
        )
    out: dict[str, Transform] = {}
    for name, value in spec.items():
        if name not in variables:
            raise UserError(
                f"{where}: transform for {name!r}, which is not a variable of the data: "
                f"choose among {', '.join(map(str, variables))}"
            )
        out[str(name)] = parse_spec(str(name), value, where)
    return out


def transforms_to_dict(transforms: Mapping[str, Transform]) -> dict[str, dict[str, Any]]:
    """``{variable: Transform}`` -> plain JSON types (for checkpoints)."""
    return {k: t.to_dict() for k, t in transforms.items()}


def transforms_from_dict(d: Mapping[str, Mapping[str, Any]] | None) -> dict[str, Transform]:
    """Inverse of ``transforms_to_dict`` ({} for None: a checkpoint without transforms)."""
    return {k: Transform.from_dict(v) for k, v in (d or {}).items()}


def check_non_negative(values: Any, name: str, where: str, rtol: float = NEGATIVE_RTOL) -> None:
    """UserError when ``values`` (any shape; numpy, xarray or torch) of a transformed variable
    ``name`` go below 0 by more than ``rtol`` x max |value| (smaller ones: packing noise).

    NaN is ignored. The message is one line naming the variable and ``where`` (the file).
    """
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    v = np.asarray(values, dtype=np.float64)
    finite = v[np.isfinite(v)]
    if finite.size == 0:
        return
    lowest = float(finite.min())
    if lowest < 0 and -lowest > rtol * float(np.abs(finite).max()):
        raise UserError(
            f"{where}: variable {name} has negative values (down to {lowest:.4g}), but its "
            "transform (log1p/power) needs values >= 0: remove the transform of "
            f"{name} or fix the data"
        )
