"""Input values a model has never seen: the range check of ``downscale`` (CLI and Python API).

A fill value left unmasked (-9999 K in a corner) or a predictor in the wrong scale (1e6) gives
a plausible-looking output without a word: a network extrapolates without failing. So every
input channel is compared with what it was in training (the checkpoint's input normaliser: the
targets' own LR field, or the predictors), after its transform, as the network sees it.

The bound: the training range [low, high] widened on each side by w = max(high - low,
:data:`OUT_OF_RANGE_STD` training standard deviations): a heavy-tailed variable (rain) may
exceed its training maximum, but not by its whole range again. Checkpoints written before the
range was stored: the training mean +- :data:`OUT_OF_RANGE_STD` standard deviations. Besides,
a negative absolute temperature (units equal to kelvin, by cf_units) is out of range. Each is
an error naming the variable, the field, its time and the bound; ``allow=True``
(``--allow-out-of-range``) turns it into a warning.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Sequence

import numpy as np

from weather_sr.data.normalise import Normalizer
from weather_sr.data.units import parse_units
from weather_sr.errors import UserError

# Far beyond any field of the training data (a Gaussian variable exceeds 10 sigma with
# probability 1.5e-23), yet well inside the range where a fill value or a wrong scale lies.
OUT_OF_RANGE_STD = 10.0


@functools.lru_cache(maxsize=64)
def is_kelvin(units: str) -> bool:
    """Whether ``units`` is the kelvin (any spelling cf_units knows: K, kelvin, degK)."""
    unit = parse_units(units.strip())
    return unit is not None and unit == parse_units("K")


def bounds(normalizer: Normalizer) -> tuple[np.ndarray, np.ndarray]:
    """The allowed interval [C] of each channel's transformed values (module doc)."""
    n = len(normalizer.channels)
    mean = normalizer.mean.reshape(n, -1).mean(axis=1)
    std = normalizer.channel_std()
    if normalizer.low is None or normalizer.high is None:
        return mean - OUT_OF_RANGE_STD * std, mean + OUT_OF_RANGE_STD * std
    width = np.maximum(normalizer.high - normalizer.low, OUT_OF_RANGE_STD * std)
    return normalizer.low - width, normalizer.high + width


def check_input_range(
    values: np.ndarray, units: Sequence[str], normalizer: Normalizer, where: str, *,
    names: Sequence[str] | None = None, times: np.ndarray | None = None, offset: int = 0,
    allow: bool = False,
) -> None:
    """UserError (a warning with ``allow``) for the first channel of ``values`` [N, C, h, w]
    (physical; C the channels of ``normalizer``, in its order, named ``names`` in the file)
    with a value out of range; field k is field ``offset + k`` of the input."""
    channels = list(names or normalizer.channels)
    low, high = bounds(normalizer)
    with np.errstate(invalid="ignore", over="ignore"):
        seen = normalizer.transformed(values.astype(np.float64))
    for c, name in enumerate(channels):
        unit = str(units[c]).strip() if c < len(units) else ""
        transform = normalizer.transforms.get(normalizer.channels[c])
        problem = _problem(values[:, c], seen[:, c], low[c], high[c], unit,
                           "" if transform is None else f" ({transform.spec} values)")
        if problem is None:
            continue
        k, text = problem
        when = f"time {times[k]}" if times is not None and k < len(times) else "no time"
        message = (f"{where}: field {k + offset} ({when}): {name} {text}: a fill value not "
                   "masked as NaN, or other units or scale than in training?")
        if not allow:
            raise UserError(f"{message} Fix the input, or pass --allow-out-of-range to use "
                            "it anyway")
        warnings.warn(f"{message} (used anyway: --allow-out-of-range)", UserWarning,
                      stacklevel=2)


def _problem(values: np.ndarray, seen: np.ndarray, low: float, high: float, unit: str,
             of: str) -> tuple[int, str] | None:
    """(field, what is wrong) for one channel's physical values [N, h, w] and the values the
    network sees (``seen``, transformed), or None."""
    unit_text = f" {unit}" if unit else ""
    with np.errstate(invalid="ignore"):
        if unit and is_kelvin(unit) and (values < 0).any():
            k = int(np.argwhere(values < 0)[0][0])
            return k, (f"has values down to {float(np.nanmin(values[k])):.4g}{unit_text}, "
                       f"below absolute zero (bound: 0{unit_text})")
        out = (seen < low) | (seen > high)
    if not out.any():
        return None
    k = int(np.argwhere(out)[0][0])
    far = np.where(out[k], np.abs(seen[k] - (low + high) / 2), -1.0)
    i = np.unravel_index(int(np.argmax(far)), far.shape)
    return k, (f"has the value {float(values[k][i]):.4g}{unit_text}, outside its training "
               f"range widened by its width or {OUT_OF_RANGE_STD:g} training standard "
               f"deviations: [{low:.4g}, {high:.4g}]{of}")
