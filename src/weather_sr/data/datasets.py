"""torch Datasets of (HR, condition, mask) items: random patches for training, full fields in order.

Each item is a dict:

- ``"hr"``: float32 [C, H, W], normalised, missing values set to 0;
- ``"cond"``: float32 [Cc, H, W], the network condition
  (:class:`weather_sr.data.condition.ConditionSpec`): by default the LR field interpolated onto
  the HR grid, normalised with the same statistics (LR cells with no valid value are filled with
  the climatological mean first); else the predictors, static fields and features;
- ``"mask"``: float32 [1, H, W], 1 where every HR channel is valid, 0 elsewhere;
- ``"index"``: int, the row of the split (``dataset.times[index]``, ``dataset.members[index]``).

Randomness (patch positions, flips, LR noise) comes from a torch.Generator: in a DataLoader
worker it is seeded from ``worker_info.seed`` (derived from the DataLoader's own generator, so
pass ``generator=`` to the DataLoader for reproducible runs); in the main process from ``seed``.
Val/test LR noise is seeded per item, so evaluation is deterministic.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, get_worker_info

from weather_sr.data.condition import ConditionSpec, default_condition
from weather_sr.data.normalise import Normalizer
from weather_sr.data.pairs import coarsen, upsample_window, window_indices
from weather_sr.data.source import FieldSource, RegriddedInputs

MAX_TRIES = 32  # patch draws before giving up on the valid-fraction threshold


class PairDataset(Dataset):
    """Items of one split. ``samples``: rows of the source in this split (time order).

    ``condition`` (default: the targets' own LR field) says what ``cond`` holds; its inputs
    come from ``inputs`` (a source of LR predictors coarsened like the targets, or predictors
    regridded onto the HR grid; default: the targets' own source). ``lat`` / ``lon`` ([H] or
    [H, W], the HR grid) are needed for the lat/lon features, ``scalars`` [N, K] (physical,
    one row per sample) for the condition's scalars, ``previous`` [N] (the source row of each
    row's previous time, -1 for none; its field normalised, plus noise of std
    ``previous_noise``, or zeros with probability ``previous_dropout``) for ``data.previous``.
    """

    def __init__(
        self,
        source: FieldSource,
        samples: np.ndarray,
        normalizer: Normalizer,
        *,
        interpolation: str = "bicubic",
        periodic: bool = False,
        patch_size: tuple[int, int] | None = None,
        min_valid_fraction: float = 0.0,
        flips: bool = False,
        lr_noise_std: float = 0.0,
        seed: int = 0,
        random: bool = False,
        times: np.ndarray | None = None,
        scalars: np.ndarray | None = None,
        previous: np.ndarray | None = None,
        previous_noise: float = 0.0,
        previous_dropout: float = 0.0,
        members: np.ndarray | None = None,
        condition: ConditionSpec | None = None,
        inputs: FieldSource | RegriddedInputs | None = None,
        lat: np.ndarray | None = None,
        lon: np.ndarray | None = None,
    ) -> None:
        self.source, self.samples, self.normalizer = source, np.asarray(samples), normalizer
        self.interpolation, self.periodic, self.patch_size = interpolation, periodic, patch_size
        self.min_valid_fraction, self.flips, self.lr_noise_std = (
            min_valid_fraction,
            flips,
            lr_noise_std,
        )
        self.seed, self.random = seed, random
        self.times, self.members = times, members
        self.scalars = scalars  # [N, K] physical, the condition's scalars of each row
        # [N]: the source row of each row's previous time (-1: none), for data.previous
        self.previous, self.previous_noise, self.previous_dropout = (
            previous, previous_noise, previous_dropout)
        self.condition = condition or default_condition(normalizer.channels, normalizer)
        self.inputs = source if inputs is None else inputs
        self.lat, self.lon = lat, lon
        self._rng: tuple[int, torch.Generator] | None = None
        self._lr_mean = self._coarse_mean()

    def __len__(self) -> int:
        return len(self.samples)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_rng"] = None
        return state

    def _coarse_mean(self) -> np.ndarray:
        """The inputs' climatological mean [Ci, 1, 1] (or [Ci, h, w] on the LR grid), physical,
        to fill missing LR cells."""
        norm = self.condition.input_normalizer
        mean = norm.physical_mean()
        if norm.kind == "channel" or isinstance(self.inputs, RegriddedInputs):
            return mean.astype(np.float32)
        return coarsen(torch.from_numpy(mean), self.source.scale_factor).numpy().astype(np.float32)

    def _generator(self, k: int) -> torch.Generator:
        if not self.random:
            return torch.Generator().manual_seed(int(self.seed) * 1_000_003 + int(k))
        info = get_worker_info()
        key = info.id if info is not None else -1
        if self._rng is None or self._rng[0] != key:
            seed = info.seed if info is not None else int(self.seed)
            self._rng = (key, torch.Generator().manual_seed(int(seed) % 2**63))
        return self._rng[1]

    def _window(self, g: torch.Generator) -> tuple[slice, slice]:
        H, W = self.source.shape
        if self.patch_size is None:
            return slice(0, H), slice(0, W)
        s = self.source.scale_factor
        (ph, pw) = self.patch_size
        y0 = int(torch.randint(0, (H - ph) // s + 1, (1,), generator=g)) * s
        x0 = int(torch.randint(0, (W - pw) // s + 1, (1,), generator=g)) * s
        return slice(y0, y0 + ph), slice(x0, x0 + pw)

    def _choose(self, k: int, g: torch.Generator) -> tuple[int, slice, slice, np.ndarray]:
        """Pick (row, window) with enough valid pixels: other windows, then other samples."""
        best: tuple[float, int, slice, slice, np.ndarray] | None = None
        tries = MAX_TRIES if self.random and self.min_valid_fraction > 0 else 1
        for attempt in range(tries):
            if attempt > 0 and (attempt >= tries // 2 or self.patch_size is None):
                k = int(torch.randint(0, len(self.samples), (1,), generator=g))
            ys, xs = self._window(g)
            hr = self.source.hr_window(int(self.samples[k]), ys, xs)
            frac = float(np.isfinite(hr).all(axis=0).mean())
            if best is None or frac > best[0]:
                best = (frac, k, ys, xs, hr)
            if frac >= self.min_valid_fraction:
                break
        assert best is not None
        return best[1], best[2], best[3], best[4]

    def _inputs_window(self, row: int, ys: slice, xs: slice, g: torch.Generator
                         ) -> np.ndarray:
        """The inputs [Ci, hy, hx] in physical units on HR window (ys, xs): the LR predictors
        interpolated (or regridded) onto the HR grid, missing cells filled with the mean."""
        std = torch.as_tensor(self.condition.input_normalizer.channel_std(), dtype=torch.float32)
        if isinstance(self.inputs, RegriddedInputs):
            x = self.inputs.window(row, ys, xs)
            x = torch.from_numpy(np.where(np.isfinite(x), x, self._lr_mean).astype(np.float32))
            if self.lr_noise_std > 0:
                x = x + self.lr_noise_std * std[:, None, None] * torch.randn(x.shape, generator=g)
            return x.numpy()
        s, (H, W) = self.source.scale_factor, self.source.shape
        ly = window_indices(ys.start // s, ys.stop // s, H // s, periodic=False)
        lx = window_indices(xs.start // s, xs.stop // s, W // s, periodic=self.periodic)
        lr = self.inputs.lr_window(row, ly, lx)
        fill = self._lr_mean if self._lr_mean.shape[1] == 1 else self._lr_mean[:, ly][:, :, lx]
        lr = np.where(np.isfinite(lr), lr, fill).astype(np.float32)
        lr_t = torch.from_numpy(np.ascontiguousarray(lr))
        if self.lr_noise_std > 0:
            lr_t = lr_t + self.lr_noise_std * std[:, None, None] * torch.randn(lr_t.shape,
                                                                               generator=g)
        return upsample_window(lr_t[None], s, self.interpolation)[0].numpy()

    def _features_at(self, k: int, ys: slice, xs: slice
                     ) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None]:
        """(lat, lon, times) of item ``k``'s window, for the condition's features."""
        if not self.condition.features:
            return None, None, None
        lat, lon = self.lat, self.lon
        if lat is not None:
            lat = lat[ys] if lat.ndim == 1 else lat[ys, xs]
        if lon is not None:
            lon = lon[xs] if lon.ndim == 1 else lon[ys, xs]
        times = None if self.times is None else np.asarray(self.times[k : k + 1])
        return lat, lon, times

    def _previous(self, k: int, ys: slice, xs: slice, g: torch.Generator
                  ) -> np.ndarray | None:
        """Row ``k``'s previous time on window (ys, xs) for the condition [1, C, h, w]
        (normalised, NaN as 0, noised), or None (zeros: a first time, or dropped)."""
        if self.previous is None or self.previous[k] < 0:
            return None
        if self.previous_dropout > 0 and float(torch.rand((), generator=g)) < self.previous_dropout:
            return None
        hr = self.source.hr_window(int(self.previous[k]), ys, xs)
        z = torch.from_numpy(np.nan_to_num(self.normalizer.normalise(hr, (ys, xs)), nan=0.0)
                             .astype(np.float32))
        if self.previous_noise > 0:
            z = z + self.previous_noise * torch.randn(z.shape, generator=g)
        return z.numpy()[None]

    def __getitem__(self, k: int) -> dict[str, Any]:
        return self.item(k, self._generator(k))

    def item(self, k: int, g: torch.Generator) -> dict[str, Any]:
        """Item ``k`` drawing its randomness (patch, flips, LR noise) from generator ``g``."""
        k, ys, xs, hr = self._choose(int(k), g)
        row = int(self.samples[k])
        inputs = self._inputs_window(row, ys, xs, g)
        valid = np.isfinite(hr).all(axis=0, keepdims=True)
        hr_n = np.nan_to_num(self.normalizer.normalise(hr, (ys, xs)), nan=0.0)
        scalars = None if self.scalars is None else self.scalars[k : k + 1]
        cond_n = self.condition.assemble(inputs[None], (ys, xs), *self._features_at(k, ys, xs),
                                         scalars, self._previous(k, ys, xs, g))[0]
        out = [
            torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))
            for a in (hr_n, cond_n, valid)
        ]
        if self.flips:
            for dim in (-1, -2):
                if bool(torch.rand((), generator=g) < 0.5):
                    out = [a.flip(dim) for a in out]
        return {"hr": out[0], "cond": out[1], "mask": out[2], "index": k}
