"""The typed schema of a checkpoint's metadata: :class:`CheckpointMeta` and :class:`RegressionBase`.

``CheckpointMeta.from_payload`` checks every field of a loaded payload as data (types, shapes,
counts that must agree) with a one-line error naming the field; ``to_payload`` gives back exactly
the keys and values that :func:`weather_sr.model.checkpoint.save_checkpoint` writes.
``CheckpointMeta.check_data`` is the one compatibility check of data against a checkpoint.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from weather_sr import __version__
from weather_sr.errors import UserError
from weather_sr.model.checkpoint import FORMAT, FORMAT_VERSION, check_header

if TYPE_CHECKING:
    from weather_sr.config import ModelConfig, RunConfig
    from weather_sr.core.spectral import SpectralProcess
    from weather_sr.data.condition import ConditionSpec
    from weather_sr.data.normalise import Normalizer

# What checkpoints written before these diffusion keys existed were trained with.
LEGACY_DIFFUSION = {"prediction": "epsilon", "scale_target": False}
# keys of a ``model`` config section that build_unet needs (kind and padding_x have defaults)
UNET_KEYS = ("base_channels", "channel_mults", "num_res_blocks", "attention_levels",
             "mid_attention", "head_channels", "dropout", "groups", "padding_y")
GRID_KEYS = ("lat", "lon", "lat_name", "lon_name", "lat_attrs", "lon_attrs", "periodic")
REGRESSION_KEYS = ("model_config", "target", "channels", "state")
REGRESSION_TARGETS = ("full", "residual")  # a base model has no base of its own


def _label(source: str) -> str:
    return source if source.startswith("checkpoint") else f"checkpoint {source}"


class _Fields:
    """Field checks of one payload; every failure is a one-line UserError naming the field."""

    def __init__(self, source: str) -> None:
        self.label = _label(source)

    def fail(self, name: str, problem: str) -> UserError:
        return UserError(f"{self.label}: field {name!r} {problem}: the file is corrupted or "
                         "edited; use a checkpoint written by weather-sr train")

    def mapping(self, name: str, value: Any, keys: Sequence[str] = ()) -> Mapping[str, Any]:
        if not isinstance(value, Mapping):
            raise self.fail(name, f"is a {type(value).__name__}, not a mapping")
        for key in keys:
            if key not in value:
                raise self.fail(name, f"has no {key!r}")
        return value

    def integer(self, name: str, value: Any, minimum: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            kind = "positive" if minimum == 1 else "non-negative"
            raise self.fail(name, f"is {value!r}, not a {kind} whole number")
        return value

    def strings(self, name: str, value: Any) -> tuple[str, ...]:
        if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
            raise self.fail(name, f"is {_short(value)}, not a list of names")
        return tuple(value)

    def number(self, name: str, value: Any) -> float | int:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.fail(name, f"is {_short(value)}, not a number")
        return value

    def array(self, name: str, value: Any) -> np.ndarray:
        try:
            out = np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError):
            raise self.fail(name, "is not an array of numbers (ragged or not numeric)") from None
        if not np.isfinite(out).all():
            raise self.fail(name, "has NaN or Inf values")
        return out


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


@dataclass(frozen=True)
class RegressionBase:
    """The frozen regression base of a CorrDiff (``regression_residual``) checkpoint."""

    model_config: Mapping[str, Any]  # the base's ``model`` config section, as written
    target: str  # its own target: "full" or "residual"
    channels: int  # C, the channel count of the base (that of the checkpoint)
    state: Mapping[str, torch.Tensor] = field(compare=False, repr=False)  # its EMA weights
    cond_channels: int | None = None  # its condition's channel count (None: C, the SR3 case)

    @classmethod
    def from_payload(cls, value: Any, channels: int, check: _Fields) -> RegressionBase:
        reg = check.mapping("regression", value, REGRESSION_KEYS)
        model_config = check.mapping("regression.model_config", reg["model_config"], UNET_KEYS)
        if model_config.get("kind", "diffusion") != "regression":
            raise check.fail("regression.model_config",
                             f"has kind {model_config.get('kind')!r}, not 'regression'")
        if reg["target"] not in REGRESSION_TARGETS:
            raise check.fail("regression.target", f"is {_short(reg['target'])}, not one of "
                             f"{', '.join(REGRESSION_TARGETS)}")
        n = check.integer("regression.channels", reg["channels"], 1)
        if n != channels:
            raise check.fail("regression.channels", f"is {n} for {channels} channels")
        state = check.mapping("regression.state", reg["state"])
        if not state:
            raise check.fail("regression.state", "is empty (the regression base has no weights)")
        for key, tensor in state.items():
            if not isinstance(key, str) or not isinstance(tensor, torch.Tensor):
                raise check.fail("regression.state", f"entry {_short(key)} is not a named tensor")
        n_cond = reg.get("cond_channels")
        if n_cond is not None:
            check.integer("regression.cond_channels", n_cond, 1)
        base = cls(model_config, reg["target"], n, state, n_cond)
        try:
            base.model  # noqa: B018  (parsed now: a bad section is the file's fault, named)
        except UserError as error:
            raise check.fail("regression.model_config", f"is not a model section ({error})"
                             ) from None
        return base

    @cached_property
    def model(self) -> ModelConfig:
        """:attr:`model_config` typed (what the base's UNet is built from)."""
        from weather_sr.config import model_config_from_dict

        return model_config_from_dict(dict(self.model_config), "the regression base")

    def to_payload(self) -> dict[str, Any]:
        out = {"model_config": self.model_config, "target": self.target,
               "channels": self.channels, "state": self.state}
        if self.cond_channels is not None:
            out["cond_channels"] = self.cond_channels
        return out


@dataclass(frozen=True)
class CheckpointMeta:
    """What a checkpoint says about its model and data, typed (every key but the weights and the
    training state).

    Fields are those of the file (see the module docstring); ``None`` marks a key that older
    checkpoints lack (units, scale_factor, interpolation, normalizer, grid, target_scale, ...).
    ``config`` is the run's config, typed, resolved and validated (a file written before the
    diffusion settings ``prediction`` and ``scale_target`` existed: those it was trained with,
    :data:`LEGACY_DIFFUSION`); ``saved_config`` the file's plain dict as written, so that
    :meth:`to_payload` gives it back unchanged (None: ``config_to_dict(config)``). ``source``
    (the file, for messages) is not part of the file.
    """

    step: int
    config: RunConfig
    channels: tuple[str, ...]
    units: tuple[str, ...] | None = None
    scale_factor: int | None = None
    interpolation: str | None = None
    normalizer: Mapping[str, Any] | None = None  # Normalizer.to_dict()
    grid: Mapping[str, Any] | None = None  # Grid.to_dict()
    best_val: float | None = None
    nonfinite_skips: int = 0
    regression: RegressionBase | None = None
    target_scale: tuple[float, ...] | None = None
    condition: Mapping[str, Any] | None = None  # ConditionSpec.to_dict(); None: the SR3 one
    spectral: Mapping[str, Any] | None = None  # SpectralProcess.to_dict(); None: white, shared
    # per channel: lag-1 autocorrelation of the training truth's detail (data.temporal)
    detail_lag1: tuple[float, ...] | None = None
    format_version: int = FORMAT_VERSION
    package_version: str | None = __version__
    source: str = field(default="checkpoint", compare=False)
    saved_config: Mapping[str, Any] | None = field(default=None, compare=False, repr=False)

    # ------------------------------------------------------------ payload <-> schema

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any], source: str = "checkpoint"
                     ) -> CheckpointMeta:
        """The metadata of a loaded payload, every field checked as data.

        Checks: format and version; step a whole number >= 0; config a valid run config (the
        same checks as a user's); channels unique non-empty names; units one name per channel;
        scale_factor a positive whole number; interpolation a known mode; normalizer of a known
        kind, for these channels, with finite mean/std of shape [C, 1, 1] (channel) or [C, H, W]
        (pixel) and std > 0; grid with 1-D finite lat/lon; target_scale C positive finite
        numbers; a regression base exactly when the target is ``regression_residual``, with its
        model config, target, channel count and weights. Each failure is a UserError naming the
        checkpoint, the field and what to do.
        """
        check_header(payload, source)
        check = _Fields(source)
        step = check.integer("step", payload["step"], 0)
        version = payload.get("package_version")
        if version is not None and not isinstance(version, str):
            raise check.fail("package_version", f"is {_short(version)}, not a version string")
        channels = check.strings("channels", payload["channels"])
        if not channels or len(set(channels)) != len(channels) or not all(channels):
            raise check.fail("channels", f"is {_short(list(channels))}, not distinct names")
        n = len(channels)
        units = payload.get("units")
        if units is not None:
            units = check.strings("units", units)
            if len(units) != n:
                entries = "entry" if len(units) == 1 else "entries"
                raise check.fail("units", f"has {len(units)} {entries} for {n} channels")
        scale = payload.get("scale_factor")
        if scale is not None:
            check.integer("scale_factor", scale, 1)
        interpolation = payload.get("interpolation")
        if interpolation is not None:
            from weather_sr.data.pairs import INTERPOLATIONS

            if interpolation not in INTERPOLATIONS:
                raise check.fail("interpolation", f"is {_short(interpolation)}, not one of "
                                 f"{', '.join(INTERPOLATIONS)}")
        normalizer = payload.get("normalizer")
        if normalizer is not None:
            normalizer = _check_normalizer(normalizer, channels, check)
        grid = payload.get("grid")
        if grid is not None:
            grid = _check_grid(grid, check)
        best_val = payload.get("best_val")
        if best_val is not None:
            check.number("best_val", best_val)
        skips = check.integer("nonfinite_skips", payload.get("nonfinite_skips") or 0, 0)
        scale_t = payload.get("target_scale")
        if scale_t is not None:
            if not isinstance(scale_t, list | tuple) or len(scale_t) != n or not all(
                not isinstance(v, bool) and isinstance(v, int | float) and math.isfinite(v)
                and v > 0 for v in scale_t
            ):
                raise check.fail("target_scale", f"is {_short(scale_t)}, not {n} positive numbers")
            scale_t = tuple(scale_t)
        lag1 = payload.get("detail_lag1")
        if lag1 is not None:
            if not isinstance(lag1, list | tuple) or len(lag1) != n or not all(
                not isinstance(v, bool) and isinstance(v, int | float) and -1 <= v <= 1
                for v in lag1
            ):
                raise check.fail("detail_lag1", f"is {_short(lag1)}, not {n} correlations")
            lag1 = tuple(float(v) for v in lag1)
        condition = payload.get("condition")
        if condition is not None:
            _check_condition(condition, channels, check)
        saved, config = _check_config(payload["config"], check, source)
        spectral = _check_spectral(payload.get("spectral"), config, n, check)
        target = config.diffusion.target
        reg = payload.get("regression")
        if (reg is not None) != (target == "regression_residual"):
            raise check.fail("regression", f"is {'missing' if reg is None else 'present'} but "
                             f"the model's diffusion.target is {target}")
        return cls(
            step=step,
            config=config,
            channels=channels,
            units=units,
            scale_factor=scale,
            interpolation=interpolation,
            normalizer=normalizer,
            grid=grid,
            best_val=best_val,
            nonfinite_skips=skips,
            regression=None if reg is None else RegressionBase.from_payload(reg, n, check),
            target_scale=scale_t,
            detail_lag1=lag1,
            condition=condition,
            spectral=spectral,
            format_version=payload["format_version"],
            package_version=version,
            source=source,
            saved_config=saved,
        )

    def to_payload(self) -> dict[str, Any]:
        """The metadata keys of the file, with the values as written (lists, not tuples)."""
        from weather_sr.config import config_to_dict

        return {
            "format": FORMAT,
            "format_version": self.format_version,
            "package_version": self.package_version,
            "step": self.step,
            "config": (self.saved_config if self.saved_config is not None
                       else config_to_dict(self.config)),
            "normalizer": self.normalizer,
            "channels": list(self.channels),
            "units": None if self.units is None else list(self.units),
            "scale_factor": self.scale_factor,
            "interpolation": self.interpolation,
            "grid": self.grid,
            "best_val": self.best_val,
            "nonfinite_skips": self.nonfinite_skips,
            "regression": None if self.regression is None else self.regression.to_payload(),
            "target_scale": None if self.target_scale is None else list(self.target_scale),
            **({} if self.condition is None else {"condition": self.condition}),
            **({} if self.spectral is None else {"spectral": self.spectral}),
            **({} if self.detail_lag1 is None else {"detail_lag1": list(self.detail_lag1)}),
        }

    # ------------------------------------------------------------ views

    def run_config(self) -> RunConfig:
        """A copy of :attr:`config` to change (e.g. other data files for evaluate)."""
        return copy.deepcopy(self.config)

    @property
    def kind(self) -> str:
        """``model.kind``: "diffusion" or "regression"."""
        return self.config.model.kind

    @property
    def target(self) -> str:
        """``diffusion.target``: "full", "residual" or "regression_residual"."""
        return self.config.diffusion.target

    @property
    def prediction(self) -> str:
        return self.config.diffusion.prediction

    @property
    def periodic(self) -> bool:
        """Whether the training grid is global in longitude (False when no grid is saved)."""
        return bool((self.grid or {}).get("periodic", False))

    def make_normalizer(self) -> Normalizer:
        """The saved normaliser as a :class:`weather_sr.data.Normalizer`."""
        from weather_sr.data.normalise import Normalizer

        self.require("normalizer", to="normalise data")
        return Normalizer.from_dict(dict(self.normalizer or {}))

    def spectral_process(self) -> SpectralProcess | None:
        """The model's forward process (docs/method.md §9); None: white noise, shared schedule."""
        from weather_sr.core.spectral import SpectralProcess

        if self.spectral is None:
            return None
        return SpectralProcess.from_dict(self.spectral, len(self.channels))

    def condition_spec(self) -> ConditionSpec:
        """What the network sees besides x_t (the targets' own LR field when not saved); parsed
        once per checkpoint, as every chunk of a downscale run asks for it (do not modify)."""
        return self._condition_spec

    @cached_property
    def _condition_spec(self) -> ConditionSpec:
        from weather_sr.data.condition import ConditionSpec, default_condition

        if self.condition is None:
            return default_condition(self.channels, self.make_normalizer())
        spec = ConditionSpec.from_dict(dict(self.condition))
        if spec.static_names and spec.static_y is None and self.grid:  # older checkpoints:
            spec.static_y = np.asarray(self.grid["lat"], np.float64)  # static fields on the
            spec.static_x = np.asarray(self.grid["lon"], np.float64)  # training grid
        return spec

    def require(self, *names: str, to: str) -> None:
        """UserError naming the first of ``names`` this (older) checkpoint lacks."""
        for name in names:
            if getattr(self, name) is None:
                raise UserError(f"{_label(self.source)} has no {name!r}: it cannot {to}")

    # ------------------------------------------------------------ the compatibility check

    def check_data(
        self, channels: Sequence[str], units: Sequence[str], where: str, *, names: bool = True,
        scale_factor: int | None = None, unknown_units: bool = False,
        condition: ConditionSpec | None = None,
    ) -> None:
        """UserError naming the first way data described by ``where`` does not fit this
        checkpoint; the one check of training resume, the CorrDiff regression base, evaluate and
        downscale. In this order:

        1. channel names and order equal the checkpoint's (``names=False``: not compared, e.g.
           LR inputs named by ``data.lr_variables``), naming the missing ones or the order;
        2. the channel count is the checkpoint's;
        3. units equal channel by channel (surrounding whitespace ignored), unless the
           checkpoint has none (older files). A blank unit on one side only is a mismatch,
           except with ``unknown_units=True`` (input files of downscale, whose variables may
           lack a units attribute), where a blank unit on either side is not compared;
        4. ``scale_factor``, when given, equals the checkpoint's (unless it has none);
        5. ``condition``, when given, has the checkpoint's condition channels (predictors,
           static fields, features) and kind of inputs.
        """
        check_channels_of(channels, units, self.channels, self.units, where,
                          checkpoint=f"the checkpoint {self.source}", names=names,
                          unknown_units=unknown_units)
        if (scale_factor is not None and self.scale_factor is not None
                and int(scale_factor) != self.scale_factor):
            raise UserError(
                f"{where}: the data is set up for scale factor {scale_factor}, the checkpoint "
                f"{self.source} downscales by {self.scale_factor}: use "
                f"data.scale_factor={self.scale_factor}"
            )
        if condition is not None:
            mine = self.condition_spec()
            if (mine.channels, mine.mode) != (condition.channels, condition.mode):
                raise UserError(
                    f"{where}: the network condition is {condition.channels} ({condition.mode}) "
                    f"but the checkpoint {self.source} was trained with {mine.channels} "
                    f"({mine.mode}): use the same data.inputs, data.static and data.features"
                )


def check_channels_of(
    found: Sequence[str], found_units: Sequence[str], expected: Sequence[str],
    expected_units: Sequence[str] | None, where: str, *, checkpoint: str = "the checkpoint",
    names: bool = True, unknown_units: bool = False,
) -> None:
    """Steps 1-3 of :meth:`CheckpointMeta.check_data` for explicit lists (``expected_units``
    None: the checkpoint has no units, they are not compared)."""
    if names and list(found) != list(expected):
        missing = [c for c in expected if c not in found]
        detail = (f"missing {', '.join(missing)}" if missing
                  else f"order {list(found)} instead of {list(expected)}")
        raise UserError(f"{where}: channels do not match {checkpoint} ({detail}): use data with "
                        f"the variables {list(expected)}, in this order")
    if len(found) != len(expected):
        raise UserError(f"{where}: {len(found)} channels but {checkpoint} has {len(expected)}")
    if not expected_units:
        return
    for name, got, want in zip(expected, found_units, expected_units, strict=True):
        got, want = str(got).strip(), str(want).strip()
        if got == want or (unknown_units and not (got and want)):
            continue
        if not got:
            raise UserError(f"{where}: variable {name} has no units but {checkpoint} was trained "
                            f"on {want!r}: give data in {want!r} with its units attribute")
        raise UserError(f"{where}: variable {name} is in units {got!r} but {checkpoint} was "
                        f"trained on {want!r}: convert the data first")


def condition_payload(condition: ConditionSpec | None) -> dict[str, Any] | None:
    """The checkpoint entry of a condition: None for the default (files stay as before)."""
    return None if condition is None or condition.is_default else condition.to_dict()


def _check_condition(value: Any, channels: tuple[str, ...], check: _Fields) -> None:
    from weather_sr.data.condition import ConditionSpec
    from weather_sr.data.features import check_features
    from weather_sr.data.regrid import check_regrid

    cond = check.mapping("condition", value, ("targets", "inputs", "input_normalizer", "mode",
                                               "regrid"))
    inputs = check.strings("condition.inputs", cond["inputs"])
    _check_normalizer(cond["input_normalizer"], inputs, check, "condition.input_normalizer")
    features = check.strings("condition.features", cond.get("features") or [])
    for name, verb, value, rule in (("condition.features", "has", list(features), check_features),
                                    ("condition.regrid", "is", cond["regrid"],
                                     check_regrid)):
        try:  # the data layer's own rules for these settings
            rule(value, name)
        except UserError as error:
            raise check.fail(name, f"{verb} {_short(value)} ({error})") from None
    try:
        spec = ConditionSpec.from_dict(dict(cond))
    except (KeyError, TypeError, ValueError) as error:
        raise check.fail("condition", f"is malformed ({error})") from None
    if tuple(spec.targets) != channels:
        raise check.fail("condition", f"is for targets {spec.targets}, the checkpoint's are "
                         f"{list(channels)}")


def _check_spectral(value: Any, config: RunConfig, channels: int, check: _Fields
                    ) -> Mapping[str, Any] | None:
    """The stored process (docs/method.md §9): present exactly when the config's
    ``diffusion.noise`` or ``diffusion.spectral_schedule`` is not the default, and well formed."""
    from weather_sr.core.spectral import SpectralProcess
    from weather_sr.core.spectral_options import DEFAULT_NOISE, DEFAULT_SPECTRAL_SCHEDULE

    d = config.diffusion
    wanted = (d.noise, d.spectral_schedule) != (DEFAULT_NOISE, DEFAULT_SPECTRAL_SCHEDULE)
    if (value is not None) != wanted:
        raise check.fail("spectral", f"is {'missing' if value is None else 'present'} but the "
                         f"model's diffusion.noise is {d.noise} and diffusion.spectral_schedule "
                         f"{d.spectral_schedule}")
    if value is None:
        return None
    try:
        SpectralProcess.from_dict(check.mapping("spectral", value, ("noise", "schedule")),
                                  channels)
    except ValueError as error:
        raise check.fail("spectral", str(error)) from None
    return value


def _check_config(value: Any, check: _Fields, source: str
                  ) -> tuple[Mapping[str, Any], RunConfig]:
    """The saved config as written, and typed: validated like a user's config (an incompatible
    version or a hand-edited checkpoint gives a UserError naming the key, not a KeyError deep
    inside), with the settings an older file lacks taken as it was trained
    (:data:`LEGACY_DIFFUSION`)."""
    from weather_sr.config import config_from_dict

    config = check.mapping("config", value, ("model", "diffusion"))
    check.mapping("config.model", config["model"])
    check.mapping("config.diffusion", config["diffusion"])
    raw = {**config, "diffusion": {**LEGACY_DIFFUSION, **config["diffusion"]}}
    return config, config_from_dict(dict(raw), source=f"{source} (its config)")


def _check_normalizer(value: Any, channels: tuple[str, ...], check: _Fields,
                      field: str = "normalizer") -> Mapping[str, Any]:
    """A normaliser entry (``field``: its name in messages) for ``channels``."""
    from weather_sr.data.normalise import KINDS

    norm = check.mapping(field, value, ("kind", "channels", "mean", "std"))
    if norm["kind"] not in KINDS:
        raise check.fail(field, f"has kind {_short(norm['kind'])}, not one of "
                         f"{', '.join(KINDS)}")
    if check.strings(f"{field}.channels", norm["channels"]) != channels:
        raise check.fail(field, f"is for channels {_short(norm['channels'])}, the "
                         f"checkpoint's are {list(channels)}")
    mean, std = check.array(f"{field}.mean", norm["mean"]), check.array(f"{field}.std",
                                                                          norm["std"])
    n = len(channels)
    for name, arr in (("mean", mean), ("std", std)):
        ok = arr.ndim == 3 and arr.shape[0] == n and min(arr.shape) >= 1
        if ok and norm["kind"] == "channel":
            ok = arr.shape[1:] == (1, 1)
        if not ok:
            want = f"[{n}, 1, 1]" if norm["kind"] == "channel" else f"[{n}, H, W]"
            raise check.fail(f"{field}.{name}", f"has shape {list(arr.shape)}, not {want} "
                             f"({norm['kind']} statistics of {n} channels)")
    if mean.shape != std.shape:
        raise check.fail(f"{field}.std", f"has shape {list(std.shape)}, the mean "
                         f"{list(mean.shape)}")
    if not (std > 0).all():
        raise check.fail(f"{field}.std", "has values <= 0")
    for name in ("low", "high"):  # the training range (absent in older checkpoints)
        if norm.get(name) is not None:
            arr = check.array(f"{field}.{name}", norm[name])
            if arr.shape != (n,):
                raise check.fail(f"{field}.{name}", f"has shape {list(arr.shape)}, not [{n}]")
    _check_transforms(norm.get("transforms"), channels, check, f"{field}.transforms")
    return norm


def _check_transforms(value: Any, channels: tuple[str, ...], check: _Fields, where: str) -> None:
    """``where`` (``normalizer.transforms``): {channel: transform} of known kinds and valid
    exponents."""
    from weather_sr.data.transforms import Transform

    if not value:
        return
    for name, entry in check.mapping(where, value).items():
        field = f"{where}.{name}"
        if name not in channels:
            raise check.fail(field, f"names no channel of {list(channels)}")
        try:
            Transform.from_dict(check.mapping(field, entry, ("name", "kind")))
        except (TypeError, ValueError) as error:
            raise check.fail(field, f"is {_short(entry)} ({error})") from None


def _check_grid(value: Any, check: _Fields) -> Mapping[str, Any]:
    grid = check.mapping("grid", value, GRID_KEYS)
    for name in ("lat", "lon"):
        arr = check.array(f"grid.{name}", grid[name])
        if arr.ndim != 1 or arr.size == 0:
            raise check.fail(f"grid.{name}", f"has shape {list(arr.shape)}, not [n] with n >= 1")
    for name in ("lat_name", "lon_name"):
        if not isinstance(grid[name], str):
            raise check.fail(f"grid.{name}", f"is {_short(grid[name])}, not a name")
    for name in ("lat_attrs", "lon_attrs"):
        check.mapping(f"grid.{name}", grid[name])
    if not isinstance(grid["periodic"], bool):
        raise check.fail("grid.periodic", f"is {_short(grid['periodic'])}, not true or false")
    n = (len(grid["lat"]), len(grid["lon"]))
    for name, entry in check.mapping("grid.aux", grid.get("aux", {})).items():
        field = f"grid.aux.{name}"
        if not isinstance(entry, list | tuple) or len(entry) != 2:
            raise check.fail(field, f"is {_short(entry)}, not (values, attributes)")
        try:  # NaN allowed: a projected grid may have no latitude beyond its domain
            shape = np.asarray(entry[0], dtype=np.float64).shape
        except (TypeError, ValueError):
            raise check.fail(field, "is not an array of numbers") from None
        if shape != n:
            raise check.fail(field, f"has shape {list(shape)}, not {list(n)}")
        check.mapping(f"{field} attributes", entry[1])
    return grid

