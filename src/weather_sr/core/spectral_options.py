"""The spectral options' names and their one parser, without importing torch.

The config (``diffusion.noise``, ``diffusion.spectral_schedule``), the command line
(``--noise-colour``) and :mod:`weather_sr.core.spectral` read them from here, so a value is
checked by one rule wherever it is given (docs/method.md §9):

- ``diffusion.noise``: ``white`` | ``power:P`` (P > 0) | ``equal_snr``;
- ``diffusion.spectral_schedule``: ``none`` | ``equal_snr`` | ``blur:K`` (K > 0);
- ``--noise-colour``: ``white`` | ``power:Q`` (Q > 0);
- ``diffusion.noise_weighting``: ``whitened`` | ``field`` (the loss of a shaped process).
"""

from __future__ import annotations

import math

__all__ = [
    "COLOUR_KINDS",
    "DEFAULT_COLOUR",
    "DEFAULT_NOISE",
    "DEFAULT_SPECTRAL_SCHEDULE",
    "DEFAULT_WEIGHTING",
    "NOISE_KINDS",
    "SCHEDULE_KINDS",
    "WEIGHTINGS",
    "parse_spectral",
]

# kind -> whether it takes a positive number after a colon
NOISE_KINDS: dict[str, bool] = {"white": False, "power": True, "equal_snr": False}
SCHEDULE_KINDS: dict[str, bool] = {"none": False, "equal_snr": False, "blur": True}
COLOUR_KINDS: dict[str, bool] = {"white": False, "power": True}
DEFAULT_NOISE = "white"
DEFAULT_SPECTRAL_SCHEDULE = "none"
DEFAULT_COLOUR = "white"
WEIGHTINGS: tuple[str, ...] = ("whitened", "field")
DEFAULT_WEIGHTING = "whitened"


def _forms(kinds: dict[str, bool]) -> str:
    return ", ".join(f"{k}:NUMBER" if takes else k for k, takes in kinds.items())


def parse_spectral(value: str, kinds: dict[str, bool], option: str) -> tuple[str, float | None]:
    """``"power:1.5"`` -> ``("power", 1.5)``, ``"white"`` -> ``("white", None)``.

    Raises:
        ValueError: naming ``option``, the value and the accepted forms, when the kind is
            unknown, a number is missing, not wanted, or not a finite positive number.
    """
    if not isinstance(value, str):
        raise ValueError(f"{option} = {value!r} must be one of {_forms(kinds)}")
    kind, colon, number = value.partition(":")
    if kind not in kinds or bool(colon) != kinds[kind]:
        raise ValueError(f"{option} = {value!r} must be one of {_forms(kinds)}")
    if not colon:
        return kind, None
    try:
        param = float(number)
    except ValueError:
        param = math.nan
    if not math.isfinite(param) or param <= 0:
        raise ValueError(f"{option} = {value!r}: {kind}:NUMBER needs a positive number")
    return kind, param
