"""The network's condition on the HR grid: ``[inputs | static | features]`` channels.

Three kinds of condition (docs/data.md, "Three kinds of condition"):

- **inputs**, the LR predictors in physical units brought onto the HR grid: interpolated from
  the LR grid of block means (``mode`` "own": the targets' own LR field, as in SR3; "coarsen":
  other variables of the targets' file, coarsened the same way) or regridded from their own
  grid (``mode`` "regrid": a second dataset). They are normalised with their own training-split
  statistics, except that an input named like a target uses the target's, so that its value is
  the residual base as it is (``base_index``).
- **static** fields, constant in time on the HR training grid (orography, land-sea mask),
  stored in physical units and normalised by their mean and standard deviation over the grid.
- **features**: sin/cos of latitude, longitude, day of year and hour (already in [-1, 1]).
- **previous**: the targets' HR field of the previous time, normalised like the targets
  (``data.previous``, autoregressive coherence; zeros for a first time), before the scalars.
- **scalars**: one number per field (lead time, ...; :mod:`weather_sr.data.scalars`),
  normalised by the training split's mean and std, as constant planes after the features, which
  the UNet takes into its noise-level embedding (the planes' channels: :attr:`scalar_channels`).

With mode "own" and neither static fields nor features the condition is exactly the normalised
interpolated LR field of earlier versions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any

import numpy as np
import torch

from weather_sr.data.normalise import Normalizer
from weather_sr.errors import UserError

MODES = ("own", "coarsen", "regrid")


@dataclass
class ConditionSpec:
    """What the network sees besides x_t, and how to build it from physical inputs.

    ``inputs``: the input channel names (levels expanded, as ``open_fields`` names them);
    ``input_variables``: the variables to read for them; ``input_units``: one per channel.
    ``input_normalizer``: the inputs' statistics (channels = ``inputs``); in mode "own" it is
    the targets' normaliser. ``static_values``: float32 [S, Hs, Ws] physical, on the static
    file's grid ``static_y`` [Hs] x ``static_x`` [Ws], which holds the HR grid of training and
    may be larger (:meth:`on_grid` cuts it to a grid); ``static_mean`` / ``static_std``: float64
    [S], of the training grid's values. ``input_valid`` (predictors only;
    None in older checkpoints): where each input had a value in every training field, on the
    grid ``downscale`` reads it on (the LR grid for mode "coarsen", the HR grid for "regrid"):
    a value missing there at downscale makes the output missing (docs/data.md).
    """

    targets: list[str]
    inputs: list[str]
    input_normalizer: Normalizer
    mode: str = "own"
    regrid: str | dict[str, str] = "bilinear"  # one method, or {variable: method}
    static_names: list[str] = field(default_factory=list)
    static_values: np.ndarray | None = None
    static_mean: np.ndarray | None = None
    static_std: np.ndarray | None = None
    features: list[str] = field(default_factory=list)
    input_variables: list[str] = field(default_factory=list)
    input_units: list[str] = field(default_factory=list)
    input_valid: np.ndarray | None = None  # bool [Ci, h, w]: valid in every training field
    static_y: np.ndarray | None = None  # [Hs], [Ws]: the axes of static_values (the static
    static_x: np.ndarray | None = None  # file's domain); None in older checkpoints
    previous: bool = False  # the previous time's HR targets as channels (autoregressive)
    scalar_names: list[str] = field(default_factory=list)
    scalar_mean: np.ndarray | None = None  # float64 [K], over the training split
    scalar_std: np.ndarray | None = None

    @property
    def is_default(self) -> bool:
        """The SR3 condition: the targets' own LR field only."""
        return (self.mode == "own" and not self.static_names and not self.features
                and not self.scalar_names and not self.previous)

    @property
    def channels(self) -> list[str]:
        """Names of the condition channels, in order."""
        names = [*self.inputs, *self.static_names]
        if self.features:
            from weather_sr.data.features import feature_names

            names += feature_names(self.features)
        if self.previous:
            names += [f"previous:{t}" for t in self.targets]
        return names + [f"scalar:{n}" for n in self.scalar_names]

    @property
    def previous_channels(self) -> slice | None:
        """The condition channels of the previous time's targets, or None."""
        if not self.previous:
            return None
        first = len(self.channels) - len(self.scalar_names) - len(self.targets)
        return slice(first, first + len(self.targets))

    @property
    def scalar_channels(self) -> tuple[int, int] | None:
        """(first channel, count) of the scalars' constant planes in the condition, or None."""
        k = len(self.scalar_names)
        return (len(self.channels) - k, k) if k else None

    @property
    def base_index(self) -> list[int] | None:
        """Condition channel of each target's same-named input (the residual base), or None."""
        if not all(t in self.inputs for t in self.targets):
            return None
        return [self.inputs.index(t) for t in self.targets]

    def assemble(
        self, inputs: np.ndarray | torch.Tensor, region: tuple[slice, slice] | None = None,
        lat: np.ndarray | None = None, lon: np.ndarray | None = None,
        times: np.ndarray | None = None, scalars: np.ndarray | None = None,
        previous: np.ndarray | None = None,
    ) -> np.ndarray | torch.Tensor:
        """Physical ``inputs`` [N, Ci, h, w] on the HR grid (window ``region`` of the training
        grid, None = all of it) -> the normalised condition [N, Cc, h, w] without NaN.

        ``lat`` / ``lon``: [h] or [h, w] of the same window and ``times`` [N], for features;
        ``scalars`` [N, K]: the fields' scalars in physical units (:attr:`scalar_names`);
        ``previous`` [N, C, h, w]: the previous time's targets, normalised, without NaN (None:
        zeros, as for a first time; sampling puts each member's own in later).
        """
        x = inputs
        is_torch = isinstance(x, torch.Tensor)
        cond = self.input_normalizer.normalise(x, region)
        cond = torch.nan_to_num(cond, nan=0.0) if is_torch else np.nan_to_num(cond, nan=0.0)
        extra = []
        n, (h, w) = x.shape[0], tuple(x.shape[-2:])
        if self.static_names:
            extra.append(self._static(n, region, (h, w)))
        if self.features:
            if lat is None or lon is None:
                raise UserError("data.features need the latitude and longitude of the HR grid")
            from weather_sr.data.features import feature_channels

            f = feature_channels(self.features, lat, lon, times)  # [N or 1, F, h, w]
            extra.append(np.repeat(f, n, axis=0) if f.shape[0] != n else f)
        if self.previous:
            extra.append(np.zeros((n, len(self.targets), h, w), np.float32) if previous is None
                         else np.asarray(previous, np.float32))
        if self.scalar_names:
            extra.append(self._scalar_planes(scalars, n, (h, w)))
        if not extra:
            return cond
        if is_torch:
            parts = [torch.as_tensor(e, dtype=cond.dtype, device=cond.device) for e in extra]
            return torch.cat([cond, *parts], dim=1)
        return np.concatenate([cond, *(e.astype(cond.dtype) for e in extra)], axis=1)

    def on_grid(self, y: np.ndarray, x: np.ndarray, where: str,
                fix: str = "give inputs whose HR grid lies on the static fields' points"
                ) -> ConditionSpec:
        """This condition with its static fields cut to the grid ``y`` [H] x ``x`` [W] (1-D
        axes in the static fields' coordinates), found by coordinates: the grid's points must
        be points of the static grid. UserError naming ``where`` for a grid beyond the static
        fields' domain or off its points (``fix``: what to do). Itself when there are no static
        fields, their axes are unknown (older checkpoints: the size is checked when assembling)
        or already ``y``, ``x``."""
        from weather_sr.data.grid import same_axis

        if not self.static_names or self.static_y is None or self.static_x is None:
            return self
        if same_axis(y, self.static_y) and same_axis(x, self.static_x):
            return self
        rows = _locate(self.static_y, y, "y", where, fix)
        cols = _locate(self.static_x, x, "x", where, fix)
        return replace(self, static_values=self.static_values[:, rows, cols],
                       static_y=np.asarray(y, np.float64), static_x=np.asarray(x, np.float64))

    def _static(self, n: int, region: tuple[slice, slice] | None, shape: tuple[int, int]
                ) -> np.ndarray:
        """Normalised static fields of ``region``, repeated for ``n`` samples: [n, S, h, w]."""
        assert self.static_values is not None
        z = self._static_normalised
        if region is not None:
            z = z[:, region[0], region[1]]
        if z.shape[-2:] != shape:
            H, W = self.static_values.shape[-2:]
            raise UserError(
                f"this model's static fields {', '.join(self.static_names)} lie on its HR "
                f"training grid ({H}x{W}) but the input gives a {shape[0]}x{shape[1]} field: "
                "downscale the domain the model was trained on"
            )
        return np.repeat(z[None], n, axis=0)

    def _scalar_planes(self, scalars: np.ndarray | None, n: int, shape: tuple[int, int]
                       ) -> np.ndarray:
        """The normalised scalars [n, K] as constant planes [n, K, h, w]."""
        if scalars is None:
            raise UserError(f"this model is conditioned on the scalars "
                            f"{', '.join(self.scalar_names)} (data.scalars): give them")
        values = np.asarray(scalars, np.float64).reshape(n, len(self.scalar_names))
        z = ((values - self.scalar_mean) / self.scalar_std).astype(np.float32)
        return np.repeat(np.repeat(z[:, :, None, None], shape[0], 2), shape[1], 3)

    @cached_property
    def _static_normalised(self) -> np.ndarray:
        """The static fields normalised once (not per training item): float32 [S, H, W]."""
        mean = np.asarray(self.static_mean)[:, None, None]
        std = np.asarray(self.static_std)[:, None, None]
        return ((self.static_values - mean) / std).astype(np.float32)

    # ------------------------------------------------------------ checkpoint

    def to_dict(self) -> dict[str, Any]:
        """Plain values (the static fields as a float32 tensor) for a checkpoint."""
        static = None
        if self.static_names:
            static = {"names": list(self.static_names),
                      "values": torch.from_numpy(np.ascontiguousarray(self.static_values,
                                                                      np.float32)),
                      "mean": np.asarray(self.static_mean).tolist(),
                      "std": np.asarray(self.static_std).tolist(),
                      **({} if self.static_y is None or self.static_x is None else
                         {"y": np.asarray(self.static_y).tolist(),
                          "x": np.asarray(self.static_x).tolist()})}
        return {"targets": list(self.targets), "inputs": list(self.inputs),
                "input_normalizer": self.input_normalizer.to_dict(), "mode": self.mode,
                "regrid": self.regrid, "static": static, "features": list(self.features),
                "input_variables": list(self.input_variables),
                "input_units": list(self.input_units),
                **({"previous": True} if self.previous else {}),
                **({} if not self.scalar_names else
                   {"scalars": {"names": list(self.scalar_names),
                                "mean": np.asarray(self.scalar_mean).tolist(),
                                "std": np.asarray(self.scalar_std).tolist()}}),
                **({} if self.input_valid is None else
                   {"input_valid": torch.from_numpy(np.ascontiguousarray(self.input_valid))})}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ConditionSpec:
        """Inverse of :meth:`to_dict`; ValueError/KeyError/TypeError on malformed input."""
        static = d.get("static") or None
        spec = cls(
            targets=[str(v) for v in d["targets"]], inputs=[str(v) for v in d["inputs"]],
            input_normalizer=Normalizer.from_dict(d["input_normalizer"]), mode=str(d["mode"]),
            regrid=(dict(d["regrid"]) if isinstance(d["regrid"], dict) else str(d["regrid"])),
            features=[str(v) for v in d.get("features") or []],
            input_variables=[str(v) for v in d.get("input_variables") or []],
            input_units=[str(v) for v in d.get("input_units") or []],
        )
        spec.previous = bool(d.get("previous", False))  # absent in older checkpoints
        scalars = d.get("scalars")  # absent in older checkpoints: none
        if scalars:
            spec.scalar_names = [str(v) for v in scalars["names"]]
            spec.scalar_mean = np.asarray(scalars["mean"], np.float64)
            spec.scalar_std = np.asarray(scalars["std"], np.float64)
        valid = d.get("input_valid")
        if valid is not None:
            spec.input_valid = np.asarray(
                valid.numpy() if isinstance(valid, torch.Tensor) else valid, bool)
        if static is not None:
            spec.static_names = [str(v) for v in static["names"]]
            values = static["values"]
            spec.static_values = np.asarray(
                values.numpy() if isinstance(values, torch.Tensor) else values, np.float32)
            spec.static_mean = np.asarray(static["mean"], np.float64)
            spec.static_std = np.asarray(static["std"], np.float64)
            if static.get("y") is not None and static.get("x") is not None:
                spec.static_y = np.asarray(static["y"], np.float64)
                spec.static_x = np.asarray(static["x"], np.float64)
        spec.check()
        return spec

    def check(self) -> None:
        """ValueError when the parts do not fit together."""
        if self.mode not in MODES:
            raise ValueError(f"mode {self.mode!r} is not one of {MODES}")
        if list(self.input_normalizer.channels) != list(self.inputs):
            raise ValueError("input_normalizer channels differ from the inputs")
        valid = self.input_valid
        if valid is not None and (valid.ndim != 3 or valid.shape[0] != len(self.inputs)):
            raise ValueError(f"input_valid has shape {list(valid.shape)}, not "
                             f"[{len(self.inputs)}, h, w]")
        if self.input_units and len(self.input_units) != len(self.inputs):
            raise ValueError(f"input_units has {len(self.input_units)} entries for "
                             f"{len(self.inputs)} inputs")
        if self.scalar_names:
            m, s = self.scalar_mean, self.scalar_std
            k = (len(self.scalar_names),)
            if m is None or s is None or m.shape != k or s.shape != k or not (s > 0).all():
                raise ValueError("scalar mean/std are not one number per scalar (std > 0)")
        if self.static_names:
            v, m, s = self.static_values, self.static_mean, self.static_std
            if v is None or v.ndim != 3 or v.shape[0] != len(self.static_names):
                raise ValueError("static values are not [S, H, W] for the static names")
            if self.static_y is not None and self.static_x is not None and (
                    (self.static_y.size, self.static_x.size) != v.shape[1:]):
                raise ValueError(f"static axes are {self.static_y.size}x{self.static_x.size} "
                                 f"for static values of {v.shape[1]}x{v.shape[2]}")
            if m is None or s is None or m.shape != (v.shape[0],) or s.shape != m.shape:
                raise ValueError("static mean/std are not one number per static field")
            if not (np.isfinite(v).all() and (s > 0).all()):
                raise ValueError("static values are not finite or their std is not positive")


def default_condition(targets: Sequence[str], normalizer: Normalizer) -> ConditionSpec:
    """The SR3 condition of a checkpoint without a ``condition`` entry (and of the default)."""
    return ConditionSpec(list(targets), list(targets), normalizer)


def static_statistics(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std [S] of static fields [S, H, W] (a constant field gets std 1)."""
    v = np.asarray(values, np.float64).reshape(values.shape[0], -1)
    mean, std = v.mean(axis=1), v.std(axis=1)
    return mean, np.where(std > 1e-12 * (1 + np.abs(mean)), std, 1.0)


def grid_latlon(grid: Any, fix: str = "add them to the file or drop the lat/lon features"
                ) -> tuple[np.ndarray, np.ndarray]:
    """Latitude and longitude in degrees of a :class:`~weather_sr.data.grid.Grid`: its 2-D
    auxiliary latitude/longitude ([H, W]) on projected grids, else those of its CF grid mapping
    (pyproj), else its 1-D axes ([H], [W]). ``fix``: what the error for projected axes without
    them tells the user to do."""
    aux = {k.lower(): v for k, (v, _a) in grid.aux.items()}
    lat2 = next((v for k, v in aux.items() if k.startswith("lat")), None)
    lon2 = next((v for k, v in aux.items() if k.startswith("lon")), None)
    if lat2 is not None and lon2 is not None:
        return np.asarray(lat2, np.float64), np.asarray(lon2, np.float64)
    if grid.mapping:
        from weather_sr.data.projection import latlon_of_mapping

        return latlon_of_mapping(grid.mapping, grid.lat, grid.lon, grid.lat_attrs,
                                 grid.lon_attrs, f"grid mapping {grid.mapping.get('name')}")
    units = str(grid.lat_attrs.get("units", "")).lower()
    if "degree" in units or grid.lat_name.lower().startswith("lat"):
        return np.asarray(grid.lat, np.float64), np.asarray(grid.lon, np.float64)
    raise UserError("data.features: the HR grid has projected y/x coordinates without 2-D "
                    f"latitude/longitude: {fix}")


def _locate(axis: np.ndarray, wanted: np.ndarray, name: str, where: str, fix: str) -> slice:
    """The run of the static grid's ``axis`` equal to the grid's ``wanted`` axis (same
    spacing, same points); UserError naming ``where`` otherwise."""
    from weather_sr.data.grid import same_axis, span_text

    axis, wanted = np.asarray(axis, np.float64), np.asarray(wanted, np.float64)
    step = float(np.median(np.abs(np.diff(axis)))) if axis.size > 1 else 0.0
    if wanted.min() < axis.min() - 0.5 * step or wanted.max() > axis.max() + 0.5 * step:
        raise UserError(f"{where}: the grid ({name} {span_text(wanted)}) extends beyond the static "
                        f"fields' domain ({name} {span_text(axis)}) the model keeps: downscale "
                        "inside it, or train with a static file covering this domain")
    start = int(np.argmin(np.abs(axis - wanted[0])))
    if not same_axis(axis[start : start + wanted.size], wanted):
        raise UserError(f"{where}: the grid's {name} ({span_text(wanted)}, {wanted.size} "
                        f"points) is not on the grid of the static fields ({name} "
                        f"{span_text(axis)}, {axis.size} points, spacing {step:.6g}): {fix}")
    return slice(start, start + wanted.size)
