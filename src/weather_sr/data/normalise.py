"""Normalisation statistics from the training split, streamed with dask, and their application.

``kind="channel"``: one mean/std per channel (over samples, y, x); ``kind="pixel"``: a per-pixel
climatology mean/std per channel (over samples). NaNs are ignored. Sums are taken in float64
around a per-channel reference value so large offsets (geopotential ~5e4) lose no precision.
A std that is zero or undefined is replaced by 1 (the field is then only centred).

Per-variable transforms (``data.transforms``, :mod:`weather_sr.data.transforms`) belong to the
normaliser: ``normalise`` applies them before the affine map, ``denormalise`` inverts them after
it, and the statistics are those of the transformed values. So every path from physical units
to the network and back (training, evaluation, downscaling) transforms the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import dask
import dask.array as dsa
import numpy as np
import torch
import xarray as xr

from weather_sr.errors import UserError

if TYPE_CHECKING:
    from weather_sr.data.transforms import Transform

ArrayT = TypeVar("ArrayT", np.ndarray, torch.Tensor)
KINDS = ("channel", "pixel")
STATS_BLOCK = 64  # fields per pass of compute_stats: memory does not grow with the dataset
FLOAT32_MAX = float(np.finfo(np.float32).max)


@dataclass
class Normalizer:
    """Affine per-channel normalisation ``(x - mean) / std``.

    ``mean``/``std``: float64 arrays [C, 1, 1] (kind "channel") or [C, H, W] (kind "pixel"),
    of the transformed values; ``transforms``: {channel name: Transform} applied first.
    ``low``/``high``: float64 [C], the smallest and largest transformed training value of each
    channel (the range check of :mod:`weather_sr.data.ranges`; None in older checkpoints).
    """

    kind: str
    channels: list[str]
    mean: np.ndarray
    std: np.ndarray
    transforms: dict[str, Transform] = field(default_factory=dict)
    low: np.ndarray | None = None
    high: np.ndarray | None = None

    def _each(self, x: ArrayT, inverse: bool) -> ArrayT:
        """Apply the channel transforms (or their inverses) along axis -3 of ``x``."""
        if not self.transforms:
            return x
        parts = []
        for c, name in enumerate(self.channels):
            part = x[..., c : c + 1, :, :]
            t = self.transforms.get(name)
            parts.append(part if t is None else (t.inverse(part) if inverse else t.forward(part)))
        if isinstance(x, torch.Tensor):
            return torch.cat(parts, dim=-3)
        return np.concatenate(parts, axis=-3)

    def _stats(self, x: ArrayT, region: tuple[slice, slice] | None) -> tuple[Any, Any]:
        m, s = self.mean, self.std
        if region is not None and self.kind == "pixel":
            m, s = m[:, region[0], region[1]], s[:, region[0], region[1]]
        if isinstance(x, torch.Tensor):
            return (
                torch.as_tensor(m, dtype=x.dtype, device=x.device),
                torch.as_tensor(s, dtype=x.dtype, device=x.device),
            )
        return m.astype(x.dtype, copy=False), s.astype(x.dtype, copy=False)

    def normalise(self, x: ArrayT, region: tuple[slice, slice] | None = None) -> ArrayT:
        """``x`` [..., C, H, W] physical -> normalised; ``region`` crops pixel statistics."""
        m, s = self._stats(x, region)
        return (self._each(x, inverse=False) - m) / s

    def denormalise(self, x: ArrayT, region: tuple[slice, slice] | None = None) -> ArrayT:
        """Inverse of ``normalise``: ``x`` [..., C, H, W] normalised -> physical units."""
        m, s = self._stats(x, region)
        return self._each(x * s + m, inverse=True)

    def transformed(self, x: ArrayT) -> ArrayT:
        """``x`` [..., C, H, W] physical with the channel transforms applied (not normalised)."""
        return self._each(x, inverse=False)

    def physical_mean(self) -> np.ndarray:
        """The mean in physical units (the inverse transform of ``mean``), same shape."""
        return self._each(self.mean[None], inverse=True)[0]

    def channel_std(self) -> np.ndarray:
        """One std per channel [C] (the spatial mean of the std for kind "pixel")."""
        return self.std.reshape(len(self.channels), -1).mean(axis=1)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict (plain lists and floats) for checkpoints."""
        out = {
            "kind": self.kind,
            "channels": list(self.channels),
            "mean": self.mean.tolist(),
            "std": self.std.tolist(),
        }
        if self.transforms:  # absent when there are none, as in files of earlier versions
            from weather_sr.data.transforms import transforms_to_dict

            out["transforms"] = transforms_to_dict(self.transforms)
        if self.low is not None and self.high is not None:
            out["low"], out["high"] = self.low.tolist(), self.high.tolist()
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Normalizer:
        transforms = {}
        if d.get("transforms"):
            from weather_sr.data.transforms import transforms_from_dict

            transforms = transforms_from_dict(d["transforms"])
        return cls(
            kind=str(d["kind"]),
            channels=[str(c) for c in d["channels"]],
            mean=np.asarray(d["mean"], dtype=np.float64),
            std=np.asarray(d["std"], dtype=np.float64),
            transforms=transforms,
            low=None if d.get("low") is None else np.asarray(d["low"], dtype=np.float64),
            high=None if d.get("high") is None else np.asarray(d["high"], dtype=np.float64),
        )


def _as_dask(fields: xr.DataArray) -> dsa.Array:
    data = fields.data
    return data if isinstance(data, dsa.Array) else dsa.from_array(np.asarray(data), chunks=-1)


def _block_sums(values: dsa.Array, data: dsa.Array, train_rows: np.ndarray, ref: np.ndarray,
                axes: tuple[int, ...]) -> tuple[Any, ...]:
    """One block of fields' share of :func:`compute_stats`: count, sum and sum of squares of
    the training rows' finite values (minus ``ref``), their min and max per channel, and the
    counts of Inf, finite and beyond-float32 values of all its rows."""
    c = data.shape[1]
    big = (abs(data) > FLOAT32_MAX) & dsa.isfinite(data) if data.dtype.itemsize > 4 else None
    checks = (dsa.isinf(data).sum(axis=(0, 2, 3)), dsa.isfinite(data).sum(axis=(0, 2, 3)),
              big.sum(axis=(0, 2, 3)) if big is not None else np.zeros(c, int))
    if train_rows.size == 0:
        shape = (c,) if axes == (0, 2, 3) else data.shape[1:]
        empty = (np.zeros(shape, np.int64), np.zeros(shape), np.zeros(shape),
                 np.full(c, np.inf), np.full(c, -np.inf))
        return (*empty, *dask.compute(*checks))
    train = values[train_rows].astype(np.float64) - ref[None, :, None, None]
    finite = dsa.isfinite(train)
    zero = dsa.where(finite, train, 0.0)
    return dask.compute(
        finite.sum(axis=axes), zero.sum(axis=axes), (zero * zero).sum(axis=axes),
        dsa.where(finite, train, np.inf).min(axis=(0, 2, 3)),
        dsa.where(finite, train, -np.inf).max(axis=(0, 2, 3)), *checks)


def compute_stats(
    fields: xr.DataArray, train_samples: Sequence[int], kind: str = "channel", where: str = "data",
    transforms: dict[str, Transform] | None = None,
) -> Normalizer:
    """Statistics over ``fields[train_samples]`` (sample, channel, y, x), one streaming pass
    ``STATS_BLOCK`` fields at a time, of the values after ``transforms`` ({channel: Transform})
    when given.

    The same pass checks the whole dataset for Inf and for channels that are entirely NaN.
    """
    if kind not in KINDS:
        raise UserError(f"data.normalisation={kind!r}: choose one of {', '.join(KINDS)}")
    channels = [str(c) for c in fields["channel"].values]
    if len(train_samples) == 0:
        raise UserError(f"{where}: the training split is empty: use more time steps or fractions")
    data = _as_dask(fields)
    transforms = {k: v for k, v in (transforms or {}).items() if k in channels}
    values = data
    if transforms:  # the statistics are those of what normalise() shifts and scales
        values = dsa.stack([transforms[n].forward(data[:, c]) if n in transforms else data[:, c]
                            for c, n in enumerate(channels)], axis=1)
    first = np.asarray(values[0].compute(), np.float64)  # a reference value per channel
    ok = np.isfinite(first)
    ref = np.where(ok, first, 0.0).sum(axis=(1, 2)) / np.maximum(ok.sum(axis=(1, 2)), 1)
    axes = (0, 2, 3) if kind == "channel" else (0,)
    in_train = np.zeros(data.shape[0], bool)
    in_train[np.asarray(train_samples)] = True
    parts = [_block_sums(values[a : a + STATS_BLOCK], data[a : a + STATS_BLOCK],
                         np.flatnonzero(in_train[a : a + STATS_BLOCK]), ref, axes)
             for a in range(0, data.shape[0], STATS_BLOCK)]  # bounded memory and task graph
    count, s1, s2, n_inf, n_ok, n_big = (sum(p[k] for p in parts) for k in (0, 1, 2, 5, 6, 7))
    low = np.min([p[3] for p in parts], axis=0)
    high = np.max([p[4] for p in parts], axis=0)
    for c, name in enumerate(channels):
        if n_inf[c]:
            raise UserError(f"{where}: channel {name} contains Inf values: mask them as NaN")
        if n_big[c]:
            raise UserError(
                f"{where}: channel {name} has {int(n_big[c])} values beyond the float32 range "
                "(|x| > 3.4e38), which would become Inf: mask them as NaN or fix the units"
            )
        if not n_ok[c]:
            raise UserError(f"{where}: channel {name} is entirely missing (NaN): select another")
        if not np.any(count[c]):
            raise UserError(f"{where}: channel {name} has no valid value in the training split")
    n = np.maximum(count, 1)
    mean = s1 / n
    var = np.maximum(s2 / n - mean * mean, 0.0)
    std = np.sqrt(var)
    mean = mean + (ref if kind == "channel" else ref[:, None, None])
    mean = np.where(count > 0, mean, (ref if kind == "channel" else ref[:, None, None]))
    std = np.where((count > 1) & (std > 1e-12 * (1 + np.abs(mean))), std, 1.0)
    if kind == "channel":
        mean, std = mean[:, None, None], std[:, None, None]
    return Normalizer(kind=kind, channels=channels, mean=mean, std=std,
                      transforms=transforms, low=low + ref, high=high + ref)
