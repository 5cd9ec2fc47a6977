"""Temporal coherence of the series at every grid point: the CRPS of sums over k consecutive
times and the temporal power spectrum, scored in the series pass of
:mod:`weather_sr.evaluation.series` (band by band of rows over all times, so memory stays
bounded).

- **CRPS of k-sums.** The times are cut into ``T // k`` non-overlapping windows of k
  consecutive times from the first (e.g. k = 8 three-hourly times: daily totals). At each point
  and window whose k truth values are all finite (and the members' too), the truth's sum is
  scored against the members' sums with the fair ensemble CRPS of the per-time scores
  (:func:`weather_sr.evaluation.metrics.crps_fair_pointwise`); a deterministic method's is the
  absolute error of its sum (the CRPS of one value). The score is the area-weighted mean over
  points and windows. Members drawn independently at each time have sums too narrow where the
  truth is correlated in time, which the per-time CRPS cannot see.
- **Temporal spectrum.** At each point with every time finite (the truth's and every
  member's), the one-sided periodogram of the mean-removed series over the T times, P_f =
  c_f |X_f|² / T with X = numpy's rfft, c_f = 2 except at f = 0 and (T even) the Nyquist
  frequency where c_f = 1, so that Σ_f P_f = Σ_t (x_t − x̄)² = T · var (Parseval); then the
  area-weighted mean over points (and members). The summary is the mean over the upper half of
  the frequencies (f ≥ f_max / 2) of log10(P_pred / P_truth): 0 when right, > 0 for too much
  fast variability (members incoherent in time), < 0 for too smooth a series.

``k`` comes from ``sum_window`` (:func:`resolve_sum_window`): a number of times or a duration
(``"24h"``, ``"1D"``) divided by the constant step of dated times; None takes
``DEFAULT_SUM_WINDOW`` where it applies and otherwise leaves the sum score out with a note.

Layout of ``results[method]["temporal"]`` (a score of the ensemble as a whole, so beside the
members' ``series``, not summarised over members)::

    {"frequency": [F] cycles per time step (f > 0), "frequency_per_day": [F] or None,
     "time_step": "3h" or None (undated or uneven times),
     "sum": {"k": 8, "windows": T // k, "duration": "24h" or None} or None,
     "notes": [why a score is left out, ...],
     "channels": {name: {"sum_crps": float or None, "spectrum_truth": [F], "spectrum": [F],
                         "high_frequency_log_ratio": float}}}

``spectrum`` is the members' mean spectrum (an ensemble) or the prediction's.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from weather_sr.errors import UserError

__all__ = ["DEFAULT_SUM_WINDOW", "TemporalScores", "high_frequency_log_ratio", "parse_sum_window",
           "periodogram", "resolve_sum_window", "sum_crps", "time_step", "window_sums"]

# Kept free of torch, xarray and pandas at import: the CLI's parsers read DEFAULT_SUM_WINDOW.
DEFAULT_SUM_WINDOW = "24h"  # daily sums, where the times are dated with a step that divides it
MIN_WINDOWS = 2  # fewer windows than this and the CRPS of sums is left out (a note says so)


def _duration(td: Any) -> str:
    """A pandas Timedelta as ``3h``, ``30min`` or ``10s`` (whole units), else pandas' text."""
    import pandas as pd

    for unit in ("h", "min", "s"):
        n = td / pd.Timedelta(1, unit)
        if n == int(n):
            return f"{int(n)}{unit}"
    return str(td)


def time_step(times: Any) -> tuple[Any, str | None]:
    """(the constant step of ``times [T]`` as a pandas Timedelta, None), or (None, why there is
    none: undated times, a single time, uneven steps). datetime64 or cftime dates."""
    import pandas as pd

    t = np.asarray(times)
    dated = np.issubdtype(t.dtype, np.datetime64) or (
        t.dtype == object and t.size > 0 and hasattr(t.flat[0], "year"))
    if not dated:
        return None, "the times are not dates"
    if t.size < 2:
        return None, "a single time has no time step"
    steps = pd.to_timedelta(np.diff(t).ravel())
    if steps.min() != steps.max():
        return None, (f"the times are not evenly spaced (steps from {_duration(steps.min())} "
                      f"to {_duration(steps.max())})")
    if steps[0] <= pd.Timedelta(0):
        return None, "the times do not increase"
    return steps[0], None


def parse_sum_window(value: int | str, times: Any) -> int:
    """The number of times k of ``--sum-window`` ``value``: a whole number of times (``8``) or a
    duration (``"24h"``, ``"1D"``, parsed by ``pandas.Timedelta``) that is a whole number of
    the constant step of the dated ``times [T]``. UserError naming ``--sum-window`` otherwise."""
    import pandas as pd

    text = str(value).strip()
    if text.isdigit():
        if int(text) < 1:
            raise UserError(f"--sum-window {text}: give at least 1 time")
        return int(text)
    try:
        duration = pd.Timedelta(text)
    except ValueError:
        duration = pd.NaT
    if pd.isna(duration) or duration <= pd.Timedelta(0):
        raise UserError(f"--sum-window {text}: give a number of times (e.g. 8) or a positive "
                        "duration (e.g. 24h, 1D)")
    step, why = time_step(times)
    if step is None:
        raise UserError(f"--sum-window {text}: {why}, so a duration is no number of times: give "
                        "the number of times to sum instead (e.g. --sum-window 8)")
    k, rest = divmod(duration, step)
    if k < 1 or rest != pd.Timedelta(0):
        raise UserError(f"--sum-window {text} is not a whole number of the {_duration(step)} "
                        f"time step: give a multiple of it (e.g. {_duration(max(k, 1) * step)}) "
                        "or a number of times")
    return int(k)


def resolve_sum_window(value: int | str | None, times: Any) -> tuple[int | None, str | None]:
    """(k, None) for the CRPS of k-sums over ``times [T]``, or (None, a note why there is
    none). ``value`` None takes ``DEFAULT_SUM_WINDOW`` where it is a whole number of the
    times' constant step; a given ``value`` that cannot be converted is a UserError
    (:func:`parse_sum_window`). Fewer than ``MIN_WINDOWS`` windows: a note."""
    t = np.asarray(times)
    if value is None:
        try:
            k = parse_sum_window(DEFAULT_SUM_WINDOW, t)
        except UserError:
            step, why = time_step(t)
            why = why or f"the time step {_duration(step)} does not divide {DEFAULT_SUM_WINDOW}"
            return None, (f"no CRPS of sums: {why}, so the default window of "
                          f"{DEFAULT_SUM_WINDOW} does not apply (give --sum-window N times)")
    else:
        k = parse_sum_window(value, t)
    if t.size // k < MIN_WINDOWS:
        return None, (f"no CRPS of sums: the {t.size} times make {t.size // k} window(s) of {k}, "
                      f"fewer than {MIN_WINDOWS} (a shorter --sum-window gives more)")
    return k, None


def window_sums(series: np.ndarray, k: int) -> np.ndarray:
    """Sums ``[T // k, ...]`` of ``series [T, ...]`` over non-overlapping windows of k
    consecutive times from the first (the last ``T % k`` times are left out); NaN where a
    window has a missing (NaN) value."""
    n = series.shape[0] // k
    return series[: n * k].reshape(n, k, *series.shape[1:]).sum(axis=1)


def sum_crps(truth: np.ndarray, members: np.ndarray) -> np.ndarray:
    """CRPS ``[N, ...]`` of the members' values ``[N, M, ...]`` against ``truth [N, ...]``:
    the fair ensemble CRPS of the per-time scores for M >= 2, the absolute error for M = 1;
    NaN where a value is NaN."""
    if members.shape[1] == 1:
        return np.abs(members[:, 0] - truth)
    from weather_sr.evaluation.metrics import crps_fair_pointwise  # lazy: it loads torch

    return crps_fair_pointwise(truth, members)


def periodogram(series: np.ndarray) -> np.ndarray:
    """One-sided periodogram ``[T // 2 + 1, ...]`` over time of ``series [T, ...]`` at every
    point (frequencies ``numpy.fft.rfftfreq(T)``, cycles per time step): P_f = c_f |X_f|² / T
    of the mean-removed series (module docstring), so Σ_f P_f = T · var. NaN at points with
    a missing (non-finite) time."""
    t = series.shape[0]
    full = np.isfinite(series).all(axis=0)
    x = np.where(full, series, 0.0)
    power = np.abs(np.fft.rfft(x - x.mean(axis=0), axis=0)) ** 2 / t
    power[1 : (t + 1) // 2] *= 2.0  # the negative frequencies' half; not f = 0 nor Nyquist
    return np.where(full, power, np.nan)


def high_frequency_log_ratio(freq: np.ndarray, spectrum: np.ndarray, truth: np.ndarray
                             ) -> float:
    """Mean of log10(spectrum / truth) ``[F]`` over the upper half of the frequencies ``freq
    [F]`` (f_max / 2 <= f <= f_max, f > 0); NaN where a power there is not positive."""
    high = (freq > 0) & (freq >= freq.max() / 2)
    ratio = spectrum[high] / truth[high]
    if not ratio.size or not np.all(np.isfinite(ratio) & (ratio > 0)):
        return float("nan")
    return float(np.mean(np.log10(ratio)))


class TemporalScores:
    """The CRPS of k-sums and the temporal spectra of every method, accumulated band by band of
    rows (:meth:`add_band`); :meth:`result` gives the module's layout.

    Args:
        times: the T times of the series (datetime64, cftime or plain numbers).
        channels: the channel names. sum_window: see :func:`resolve_sum_window`.
    """

    def __init__(self, times: Any, channels: Sequence[str], sum_window: int | str | None = None
                 ) -> None:
        self._t = np.asarray(times).size
        self._channels = list(channels)
        self.k, note = resolve_sum_window(sum_window, times)
        self.notes = [] if note is None else [note]
        self._step = time_step(times)[0]
        self._sums: dict[str, np.ndarray] = {}

    def _add(self, key: str, values: np.ndarray, w: np.ndarray, axes: tuple[int, ...]) -> None:
        """Add the weighted sum and weight over ``axes`` of the finite ``values [..., P]``."""
        ok = np.isfinite(values)
        part = np.stack([(np.where(ok, values, 0.0) * w).sum(axis=axes),
                         (ok * w).sum(axis=axes)])
        self._sums[key] = self._sums[key] + part if key in self._sums else part

    def add_band(self, label: str, truth: np.ndarray, members: np.ndarray, w: np.ndarray
                 ) -> None:
        """Add a band of points: ``truth [T, C, P]``, ``members [T, M, C, P]`` (M = 1:
        deterministic), point weights ``w [P]``."""
        # the spectra's points: every time finite in the truth and in every member
        full = np.isfinite(truth).all(axis=0) & np.isfinite(members).all(axis=(0, 1))
        self._add(f"{label}/spectrum_truth", periodogram(np.where(full, truth, np.nan)), w, (2,))
        for m in range(members.shape[1]):
            self._add(f"{label}/spectrum", periodogram(np.where(full, members[:, m], np.nan)),
                      w, (2,))
        if self.k is not None:
            crps = sum_crps(window_sums(truth, self.k), window_sums(members, self.k))
            self._add(f"{label}/sum_crps", crps, w, (0, 2))

    def _mean(self, key: str) -> np.ndarray:
        total, weight = self._sums[key]
        return np.divide(total, weight, out=np.full(total.shape, np.nan), where=weight > 0)

    def result(self, label: str) -> dict[str, Any]:
        """``label``'s scores in the module's layout (numpy values; NaN where none)."""
        import pandas as pd

        freq = np.fft.rfftfreq(self._t)[1:]  # f = 0 is 0: the mean is removed
        truth, spectrum = (self._mean(f"{label}/{k}")[1:] for k in ("spectrum_truth", "spectrum"))
        crps = self._mean(f"{label}/sum_crps") if self.k is not None else None
        channels = {name: {"sum_crps": None if crps is None else crps[c],
                           "spectrum_truth": truth[:, c], "spectrum": spectrum[:, c],
                           "high_frequency_log_ratio": high_frequency_log_ratio(
                               freq, spectrum[:, c], truth[:, c])}
                    for c, name in enumerate(self._channels)}
        step = self._step
        notes = list(self.notes)
        if not np.isfinite(truth).any():
            notes.append("no temporal spectrum: no grid point has every time")
        return {"frequency": freq,
                "frequency_per_day": None if step is None else freq * (pd.Timedelta(1, "D")
                                                                       / step),
                "time_step": None if step is None else _duration(step),
                "sum": None if self.k is None else {
                    "k": self.k, "windows": self._t // self.k,
                    "duration": None if step is None else _duration(self.k * step)},
                "notes": notes, "channels": channels}
