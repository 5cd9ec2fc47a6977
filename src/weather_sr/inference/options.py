"""How to sample, checked: :class:`SamplingOptions` (the one validator of the CLI's, the API's
and the demo's sampling options) and what depends on the model (:func:`options_for`, the
coherence in time it allows: :func:`resolve_coherence`)."""

from __future__ import annotations

import operator
import warnings
from dataclasses import dataclass, replace
from typing import Any

from weather_sr.core import sampling
from weather_sr.core.sampler_defaults import (
    COHERENCE,
    CONSTRAINTS,
    DEFAULT_COHERENCE,
    DEFAULT_CONSTRAINT,
    DEFAULT_PRECISION,
)
from weather_sr.core.spectral_options import COLOUR_KINDS, DEFAULT_COLOUR, parse_spectral
from weather_sr.errors import UserError
from weather_sr.inference.constraint import check_constraint
from weather_sr.inference.precision import check_precision


@dataclass(frozen=True)
class SamplingOptions:
    """How to sample: sampler name, steps, eta, seed, ensemble size, batching, tiling, precision.

    The one validator of sampling options (the CLI's downscale and evaluate, the Python API, the
    demo): checked on creation, each a UserError naming the option as the CLI does, whether or
    not the chosen sampler uses it: ``sampler`` one of ``weather_sr.core.sampling.SAMPLER_NAMES``;
    ``steps`` an integer >= 1 (<= T is checked when sampling, where T is known; ancestral runs
    all T steps); ``eta`` in [0, 1] (used by ddim only); ``seed`` in 0 .. 2**63 - 1;
    ``members`` and ``batch_size`` >= 1; ``tile`` None, 0 (both: no tiling) or positive;
    ``overlap`` >= 0 (an overlap >= tile is clamped to tile - 1). What depends on the model
    (tile a multiple of the UNet's size multiple) is :func:`options_for`'s. ``precision``: one
    of ``core.sampler_defaults.PRECISIONS`` (``"auto"`` resolved per device by
    :func:`weather_sr.inference.precision.resolve_precision`). ``noise_colour``: ``white`` or
    ``power:Q`` (coloured-noise sampling, docs/method.md §9), only with a sampler that injects
    noise (ancestral; ddim with eta > 0). ``constrain``: one of
    ``core.sampler_defaults.CONSTRAINTS`` (the members' block means against the LR input,
    :mod:`weather_sr.inference.constraint`; what the model allows is :func:`options_for`'s).
    ``coherent``: one of ``core.sampler_defaults.COHERENCE``: ``off`` (independent fields),
    ``noise`` (each member's initial noise an AR(1) over the times with correlation ``rho`` in
    [0, 1), None: the checkpoint's), ``ar`` (each member conditioned on its own previous
    field; a model trained with ``data.previous``), ``on`` / ``auto`` (``ar`` where the model
    allows, else ``noise`` / ``off``; :func:`resolve_coherence`,
    :mod:`weather_sr.inference.coherence`).
    """

    sampler: str = sampling.DEFAULT_SAMPLER  # defaults: the one set in weather_sr.core.sampling
    steps: int = sampling.DEFAULT_STEPS
    eta: float = sampling.DEFAULT_ETA
    seed: int = 0
    members: int = 1
    batch_size: int = 8
    tile: int | None = None  # None: the whole field in one network call
    overlap: int = 32
    periodic_x: bool = False
    pad_multiple: int = 1  # network input sizes must be multiples of this (UNet levels)
    precision: str = DEFAULT_PRECISION
    noise_colour: str = DEFAULT_COLOUR
    constrain: str = DEFAULT_CONSTRAINT
    coherent: str = DEFAULT_COHERENCE
    rho: float | None = None  # None: the checkpoint's measured detail lag-1 (coherence)

    def __post_init__(self) -> None:
        from weather_sr.config import check_seed

        if self.sampler not in sampling.SAMPLER_NAMES:
            raise UserError(f"--sampler {self.sampler!r}: choose one of "
                            f"{', '.join(sampling.SAMPLER_NAMES)}")
        for option, value in (("--steps", self.steps), ("--members", self.members),
                              ("--batch-size", self.batch_size)):
            if not _is_int(value, 1):
                raise UserError(f"{option} {value!r}: give a positive integer")
        if isinstance(self.eta, bool) or not isinstance(self.eta, int | float) or not (
                0.0 <= self.eta <= 1.0):
            raise UserError(f"--eta {self.eta!r}: give a value between 0 and 1")
        try:
            check_seed(operator.index(self.seed))
        except TypeError:
            raise UserError(f"--seed {self.seed!r}: give an integer") from None
        if self.tile is not None and not _is_int(self.tile, 0):
            raise UserError(f"--tile {self.tile!r}: give a positive tile size in pixels")
        if not _is_int(self.overlap, 0):
            raise UserError(f"--overlap {self.overlap!r}: give a non-negative number of pixels")
        check_precision(self.precision)
        if self.constrain not in CONSTRAINTS:
            raise UserError(f"--constrain {self.constrain!r}: choose one of "
                            f"{', '.join(CONSTRAINTS)}")
        try:
            colour, _ = parse_spectral(self.noise_colour, COLOUR_KINDS, "--noise-colour")
        except ValueError as error:
            raise UserError(str(error)) from None
        if self.coherent not in COHERENCE:
            raise UserError(f"--coherent {self.coherent!r}: choose one of {', '.join(COHERENCE)}")
        if self.rho is not None:
            if isinstance(self.rho, bool) or not isinstance(self.rho, int | float) or not (
                    0.0 <= self.rho < 1.0):
                raise UserError(f"--rho {self.rho!r}: give a correlation in [0, 1)")
            if self.coherent not in ("noise", "on"):
                raise UserError(f"--rho {self.rho}: the correlation of --coherent noise; add "
                                "--coherent noise")
        if colour != DEFAULT_COLOUR and not sampling.uses_injected_noise(self.sampler, self.eta):
            raise UserError(f"--noise-colour {self.noise_colour}: shapes the noise that a "
                            "stochastic sampler injects; use --sampler ancestral, or ddim with "
                            f"--eta > 0 (--sampler {self.sampler} --eta {self.eta} injects none)")


def options_for(model: Any, options: SamplingOptions, *, periodic: bool) -> SamplingOptions:
    """``options`` with the UNet's size multiple and the grid's periodicity filled in, after
    checking ``tile``, ``overlap`` and ``constrain`` against the model (UserError naming the
    option)."""
    check_constraint(model, options.constrain)
    options = replace(options, coherent=resolve_coherence(model, options.coherent))
    if options.rho is not None and options.coherent != "noise":
        raise UserError(f"--rho {options.rho}: the correlation of --coherent noise, which this "
                        f"model does not use (--coherent {options.coherent})")
    levels = int(getattr(getattr(model, "net", None), "levels", 1) or 1)
    multiple = 2 ** (levels - 1)
    if options.tile:
        if options.tile < multiple or options.tile % multiple:
            raise UserError(f"--tile {options.tile}: must be a multiple of {multiple} "
                            f"(2**(levels-1) for this {levels}-level UNet)")
        if not 0 <= options.overlap < options.tile:
            raise UserError(f"--overlap {options.overlap}: must lie in 0..{options.tile - 1}")
        if options.overlap < 2 * multiple:
            warnings.warn(f"--overlap {options.overlap} is small for a {levels}-level UNet; "
                          f"seams may show (use >= {4 * multiple})", stacklevel=2)
    return replace(options, pad_multiple=multiple, periodic_x=periodic)


def _is_int(value: Any, low: int) -> bool:
    """An integer (anything with ``__index__`` but a bool) >= low."""
    if isinstance(value, bool):
        return False
    try:
        return operator.index(value) >= low
    except TypeError:
        return False


def is_mean(model: Any) -> bool:
    """Mean mode: a regression model gives its one deterministic field (no ``member`` dim)."""
    return getattr(model, "kind", "diffusion") == "regression"


def resolve_coherence(model: Any, coherent: str) -> str:
    """``coherent`` for ``model``: "auto" and "on" resolved ("ar" for a model trained with
    ``data.previous``, else "off" and "noise"); UserError when the model cannot do it."""
    previous = previous_slice(model) is not None
    if coherent == "auto":
        return "ar" if previous else "off"
    if coherent != "off" and is_mean(model):
        raise UserError(f"--coherent {coherent}: a regression model gives one deterministic "
                        "field per time, with nothing to make coherent; leave it out")
    if coherent == "on":
        return "ar" if previous else "noise"
    if coherent == "ar" and not previous:
        raise UserError("--coherent ar: this model was not trained on the previous time's field "
                        "(data.previous: true); use --coherent noise")
    if coherent == "noise" and previous:
        raise UserError("--coherent noise: this model was trained on the previous time's field "
                        "(data.previous): use --coherent ar (or off: each time on its own)")
    return coherent


def previous_slice(model: Any) -> slice | None:
    """The channels of the previous time's field in ``model``'s condition (None: none)."""
    meta = getattr(model, "meta", None)
    return None if meta is None or meta.condition is None else (
        meta.condition_spec().previous_channels)
