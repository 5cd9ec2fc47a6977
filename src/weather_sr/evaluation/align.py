"""Any tool's predictions lined up with the truth (and the LR input) for scoring.

The rules of ``weather-sr score`` (docs/data.md, "Scoring any output file"):

- variables are matched by name (``rename``: a prediction's name -> the truth's); by default
  every data variable of the first prediction that the truth also has is scored;
- an ensemble is a prediction with a member dim (``member``, ``realization``, ``number``, ... or
  ``member_dim``); one without is deterministic;
- every prediction's times must be times of the truth (exactly) and all predictions must have
  the same times: the scored fields are those times, in time order;
- the prediction's grid must be the truth's (the same y/x coordinates, to float rounding);
- units are compared with cf-units: convertible units are converted to the truth's
  (``data.units.conversion``, the one rule), others are an error;
- the LR input, when given, must be on the blocks of the truth's grid (H = s h, W = s w) at the
  scored times; its block mean is the plain one, or cos-latitude weighted (``area_weighted``),
  as ``data.area_weighted`` in training.

Nothing is read until :meth:`ScoreSet.chunk` reads the fields of a chunk of times.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import xarray as xr

from weather_sr.data.grid import same_axis
from weather_sr.data.pairs import block_centres
from weather_sr.data.reading import standardise
from weather_sr.data.units import conversion
from weather_sr.errors import UserError
from weather_sr.evaluation.evalset import EvalSet

__all__ = ["Prediction", "ScoreSet", "align"]


@dataclass
class Prediction:
    """One method's fields: ``fields`` (sample, channel, y, x) lazily, sample = (time, member)
    time-major; ``rows[t]``: the samples of scored time t; ``affine`` [C, 2]: (scale, offset)
    to the truth's units."""

    fields: xr.DataArray
    members: int
    rows: np.ndarray  # [T, M] sample indices
    affine: np.ndarray


@dataclass
class ScoreSet:
    """The truth, the LR input and every prediction at the scored times (see the module rules).

    ``truth_rows`` / ``lr_rows`` [T]: the sample index of each scored time in the truth and LR.
    """

    truth: xr.DataArray
    truth_rows: np.ndarray
    predictions: dict[str, Prediction]
    lr: xr.DataArray | None
    lr_rows: np.ndarray | None
    lr_affine: np.ndarray | None
    times: np.ndarray
    scale_factor: int | None
    area_weighted: bool
    where: dict[str, str]  # each prediction's name in messages

    @property
    def n_fields(self) -> int:
        return int(self.times.size)

    @property
    def channels(self) -> list[str]:
        return [str(c) for c in self.truth["channel"].values]

    def truth_values(self, start: int, stop: int) -> np.ndarray:
        """The truth ``[n, C, H, W]`` of scored fields ``start:stop`` (NaN where missing)."""
        return _read(self.truth, self.truth_rows[start:stop])

    def chunk(self, start: int, stop: int) -> tuple[EvalSet, dict[str, np.ndarray]]:
        """Scored fields ``start:stop``: the EvalSet (truth, LR, mask) and each method's
        ``[n, C, H, W]`` or ``[n, M, C, H, W]`` in the truth's units. A pixel is scored where
        the truth and every member of every method are finite (the same pixels for all)."""
        truth = self.truth_values(start, stop)
        predictions = {}
        valid = np.isfinite(truth).all(axis=1, keepdims=True)
        for label, p in self.predictions.items():
            rows = p.rows[start:stop]
            x = _read(p.fields, rows.ravel()).reshape(*rows.shape, *truth.shape[1:])
            x = x * p.affine[:, 0, None, None] + p.affine[:, 1, None, None]
            if np.isinf(x).any():
                c = int(np.argwhere(np.isinf(x))[0][-3])
                raise UserError(f"{self.where.get(label, label)}: variable {self.channels[c]} "
                                "holds Inf values: mask them as NaN (they are then not scored)")
            valid &= np.isfinite(x).all(axis=(1, 2))[:, None]
            predictions[label] = x[:, 0] if p.members == 1 else x
        predictions = {k: np.where(_expand(valid, v), v, 0.0).astype(np.float32)
                       for k, v in predictions.items()}
        lr = None
        if self.lr is not None and self.lr_rows is not None and self.lr_affine is not None:
            lr = _read(self.lr, self.lr_rows[start:stop])
            lr = (lr * self.lr_affine[:, 0, None, None] + self.lr_affine[:, 1, None, None])
        return self._evalset(truth, lr, valid, start, stop), predictions

    def _evalset(self, truth: np.ndarray, lr: np.ndarray | None, valid: np.ndarray, start: int,
                 stop: int) -> EvalSet:
        y, x = self.truth["y"], self.truth["x"]
        degrees = "degree" in str(y.attrs.get("units", "")).lower()
        times = self.times[start:stop]
        return EvalSet(
            truth=np.where(valid, truth, np.nan).astype(np.float32),
            lr=None if lr is None else lr.astype(np.float32),
            mask=valid.astype(np.float32),
            channels=self.channels,
            units=list(self.truth.attrs["units"]),
            lat=np.asarray(y.values),
            lon=np.asarray(x.values),
            lat_is_degrees=degrees,
            periodic=bool(self.truth.attrs.get("periodic", False)),
            scale_factor=self.scale_factor,
            interpolation="none",
            split="scored",
            times=[str(t)[:19] for t in times] if np.issubdtype(times.dtype, np.datetime64)
            else [],
            time_values=times,
            coarsen_lat=np.asarray(y.values) if self.area_weighted and degrees else None,
        )


def _expand(valid: np.ndarray, x: np.ndarray) -> np.ndarray:
    """The mask ``[n, 1, H, W]`` broadcast against ``[n, C, H, W]`` or ``[n, M, C, H, W]``."""
    return valid if x.ndim == 4 else valid[:, None]


def _read(fields: xr.DataArray, rows: np.ndarray) -> np.ndarray:
    """The samples ``rows`` of lazy (sample, channel, y, x) fields, as float64."""
    import dask

    order = np.argsort(rows, kind="stable")
    with dask.config.set(scheduler="synchronous"):  # small reads: no thread pool to start
        values = fields.isel(sample=rows[order]).values.astype(np.float64)
    out = np.empty_like(values)
    out[order] = values
    return out


def align(
    predictions: Mapping[str, xr.Dataset],
    truth: xr.Dataset,
    lr: xr.Dataset | None = None,
    *,
    where: Mapping[str, str] | None = None,
    rename: Mapping[str, str] | None = None,
    variables: Sequence[str] | None = None,
    member_dim: str | None = None,
    area_weighted: bool = False,
) -> ScoreSet:
    """Line up ``predictions`` ({label: Dataset}) with ``truth`` (and ``lr``) by the module's
    rules; ``where`` names each input in messages ({label, "truth", "lr": description})."""
    if not predictions:
        raise UserError("give at least one prediction to score")
    where = dict(where or {})
    name = {k: where.get(k, f"prediction {k}") for k in predictions}
    t_where, lr_where = where.get("truth", "the truth"), where.get("lr", "the LR input")
    rename = dict(rename or {})
    first_label, first = next(iter(predictions.items()))
    names = _variables(first, truth, rename, variables, name[first_label], t_where)
    truth_fields = standardise(truth, names, t_where)
    if "member" in truth_fields.coords:
        raise UserError(f"{t_where}: has a member dim: the truth is one field per time")
    channels = [str(c) for c in truth_fields["channel"].values]
    aligned, times = {}, None
    for label, ds in predictions.items():
        fields = _prediction_fields(ds, names, rename, member_dim, name[label])
        _check_channels(fields, channels, name[label], t_where)
        _check_grid(fields, truth_fields, name[label], t_where)
        members = int(np.unique(fields["member"].values).size) if "member" in fields.coords else 1
        own = np.asarray(fields["time"].values)[::members]
        if times is None:
            times = np.sort(own)
        elif own.size != times.size or not np.isin(own, times).all():
            raise UserError(f"{name[label]}: its times differ from those of "
                            f"{name[first_label]}: score predictions of the same times together")
        rows = np.argsort(own, kind="stable")[:, None] * members + np.arange(members)
        units = list(fields.attrs["units"])
        aligned[label] = Prediction(fields, members, rows, _affines(
            channels, units, truth_fields.attrs["units"], name[label], "the truth"))
    assert times is not None
    truth_rows = _time_rows(truth_fields, times, t_where, name[first_label])
    s, lr_fields, lr_rows, lr_affine = None, None, None, None
    if lr is not None:
        lr_fields = standardise(lr, names, lr_where)
        _check_channels(lr_fields, channels, lr_where, t_where)
        s = _scale_factor(lr_fields, truth_fields, lr_where, t_where)
        lr_rows = _time_rows(lr_fields, times, lr_where, name[first_label])
        lr_affine = _affines(channels, list(lr_fields.attrs["units"]),
                             truth_fields.attrs["units"], lr_where, "the truth")
    return ScoreSet(truth_fields, truth_rows, aligned, lr_fields, lr_rows, lr_affine, times, s,
                    area_weighted, name)


def _variables(first: xr.Dataset, truth: xr.Dataset, rename: Mapping[str, str],
               variables: Sequence[str] | None, p_where: str, t_where: str) -> list[str]:
    """The truth's names of the variables to score (see the module rules)."""
    for old in rename:
        if old not in first.data_vars:
            raise UserError(f"--rename {old}={rename[old]}: {p_where} has no variable {old!r}")
    inverse = {new: old for old, new in rename.items()}
    if variables:
        for v in variables:
            if v not in truth.data_vars:
                raise UserError(f"--variables {v}: {t_where} has no variable {v!r}")
            if inverse.get(v, v) not in first.data_vars:
                raise UserError(f"--variables {v}: {p_where} has no variable "
                                f"{inverse.get(v, v)!r}: name it with --rename OLD={v}")
        return list(variables)
    names = [rename.get(str(v), str(v)) for v in first.data_vars]
    names = [v for v in names if v in truth.data_vars and truth[v].ndim >= 2]
    if not names:
        raise UserError(f"{p_where} has no variable of {t_where} (it has "
                        f"{', '.join(map(str, first.data_vars))}; the truth has "
                        f"{', '.join(map(str, truth.data_vars))}): match them with --rename "
                        "PREDICTION_NAME=TRUTH_NAME")
    return names


def _prediction_fields(ds: xr.Dataset, names: Sequence[str], rename: Mapping[str, str],
                       member_dim: str | None, where: str) -> xr.DataArray:
    inverse = {new: old for old, new in rename.items()}
    missing = [inverse.get(v, v) for v in names if inverse.get(v, v) not in ds.data_vars]
    if missing:
        raise UserError(f"{where}: no variable {missing[0]!r}: name it with --rename "
                        f"OLD={rename.get(missing[0], missing[0])}")
    ds = ds[[inverse.get(v, v) for v in names]].rename({inverse[v]: v for v in names
                                                        if v in inverse})
    if member_dim is not None:
        if member_dim not in ds.dims:
            raise UserError(f"--member-dim {member_dim}: {where} has no such dim (dims: "
                            f"{', '.join(map(str, ds.dims))})")
        ds = ds.rename({member_dim: "member"})
    try:
        return standardise(ds, list(names), where)
    except UserError as err:
        if "unrecognised dims" in str(err):
            raise UserError(f"{err}; an ensemble's member dim can be named with "
                            "--member-dim") from err
        raise


def _check_channels(fields: xr.DataArray, channels: Sequence[str], where: str,
                    t_where: str) -> None:
    own = [str(c) for c in fields["channel"].values]
    if own != list(channels):
        raise UserError(f"{where} has the channels {', '.join(own)} where {t_where} has "
                        f"{', '.join(channels)} (levels are channels): select the same levels")


def _check_grid(fields: xr.DataArray, truth: xr.DataArray, where: str, t_where: str) -> None:
    shape, want = (fields.sizes["y"], fields.sizes["x"]), (truth.sizes["y"], truth.sizes["x"])
    same = shape == want and all(
        d not in fields.coords or d not in truth.coords
        or same_axis(fields[d].values, truth[d].values) for d in ("y", "x"))
    if not same:
        raise UserError(f"{where} is on a {shape[0]}x{shape[1]} grid that is not the "
                        f"{want[0]}x{want[1]} grid of {t_where}: regrid it onto the truth's grid "
                        "(scores compare point by point)")


def _time_rows(fields: xr.DataArray, times: np.ndarray, where: str, p_where: str) -> np.ndarray:
    """The sample index in ``fields`` of each of ``times``; UserError if one is missing."""
    own = np.asarray(fields["time"].values)
    if own.dtype.kind != times.dtype.kind:
        raise UserError(f"{where} and {p_where}: one has dated times and the other not: give "
                        "both a CF time coordinate")
    found = np.isin(times, own)
    if not found.all():
        k = int(np.argmin(found))
        raise UserError(f"{where}: {int((~found).sum())} of the {times.size} times of {p_where} "
                        f"are missing (the first: {str(times[k])[:19]}): select the times both "
                        "have")
    index = {t: i for i, t in enumerate(own.tolist())}
    return np.array([index[t] for t in times.tolist()], dtype=np.int64)


def _scale_factor(lr: xr.DataArray, truth: xr.DataArray, where: str, t_where: str) -> int:
    """s with H = s h and W = s w, the LR cells the blocks of the truth's grid."""
    (h, w), (H, W) = (lr.sizes["y"], lr.sizes["x"]), (truth.sizes["y"], truth.sizes["x"])
    s = H // h if h else 0
    ok = s >= 2 and (h * s, w * s) == (H, W)
    if ok:
        ok = all(d not in lr.coords or d not in truth.coords
                 or same_axis(lr[d].values, block_centres(truth[d].values, s))
                 for d in ("y", "x"))
    if not ok:
        raise UserError(f"{where}: its {h}x{w} grid is not made of the s x s blocks of the "
                        f"{H}x{W} grid of {t_where}: give the LR field the prediction was made "
                        "from, on those blocks (or leave --lr out)")
    return s


def _affines(channels: Sequence[str], got: Sequence[str], want: Sequence[str], where: str,
             other: str) -> np.ndarray:
    """[C, 2]: (scale, offset) taking each channel from units ``got`` to ``want``."""
    out = np.tile([1.0, 0.0], (len(want), 1))
    for c, (name, g, w) in enumerate(zip(channels, got, want, strict=True)):
        affine = conversion(name, g, w, where, what=f"{where}: variable {name}", other=other)
        if affine is not None:
            out[c] = affine
    return out
