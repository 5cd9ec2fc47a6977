"""Small pieces of the training loop: learning rate, EMA, resumable data order, seeds, precision.

Everything random in a training step is a pure function of (seed, rank, step): the data order
(``StreamBatchSampler``), the diffusion noise and dropout (``step_seed``). Resuming at step k
therefore continues exactly as if the run had not stopped, on any number of workers.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import numpy as np
import torch
from torch import nn

from weather_sr.errors import UserError


def lr_at(step: int, base_lr: float, warmup: int, total: int, schedule: str) -> float:
    """Linear warm-up over ``warmup`` steps (step counts from 0), then constant or cosine to 0."""
    if warmup > 0 and step < warmup:
        return base_lr * (step + 1) / warmup
    if schedule == "cosine":
        progress = (step - warmup) / max(1, total - warmup)
        return base_lr * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    return base_lr


def step_seed(seed: int, rank: int, step: int, stream: int = 0) -> int:
    """A well-mixed 63-bit seed for (seed, rank, step, stream)."""
    return int(
        np.random.SeedSequence([seed, rank, step, stream]).generate_state(2, np.uint64)[0]
        >> np.uint64(1)
    )


class EMA:
    """Exponential moving average of a module's parameters (and a copy of its buffers).

    decay_k = min(decay, (1 + k) / (10 + k)) with warm-up, else ``decay``.
    """

    def __init__(self, model: nn.Module, decay: float, warmup: bool = True) -> None:
        self.decay, self.warmup = decay, warmup
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items()}

    def decay_at(self, step: int) -> float:
        return min(self.decay, (1 + step) / (10 + step)) if self.warmup else self.decay

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        d = self.decay_at(step)
        pairs = [(self.shadow[k], v) for k, v in model.state_dict().items()]
        floats = [(s, v) for s, v in pairs if s.is_floating_point()]
        if floats:
            torch._foreach_lerp_([s for s, _ in floats], [v.detach() for _, v in floats], 1.0 - d)
        for s, v in pairs:
            if not s.is_floating_point():
                s.copy_(v)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.shadow

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        for k, v in state.items():
            self.shadow[k].copy_(v)

    def copy_to(self, model: nn.Module) -> None:
        model.load_state_dict(self.shadow)


class StreamBatchSampler(torch.utils.data.Sampler[list[tuple[int, int]]]):
    """Batches for micro-steps ``start .. stop-1`` of an endless stream of shuffled epochs.

    The stream concatenates permutations of ``range(n)``, epoch e's seeded by (seed, e). Global
    micro-step m takes stream positions [m·B·W, (m+1)·B·W); rank r gets its r-th block of B.
    So ranks see disjoint data and the order depends only on (seed, m), never on restarts.
    Each index comes with a seed for the item's own randomness (patch position, flips), a
    function of its stream position (see ``ItemSeeded``).
    """

    def __init__(
        self,
        n: int,
        batch_size: int,
        seed: int,
        start: int,
        stop: int,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if n < 1:
            raise UserError("the training split is empty: check data.split and the data file")
        self.n, self.b, self.seed = n, batch_size, seed
        self.start, self.stop, self.rank, self.world = start, stop, rank, world_size
        self._epoch, self._perm = -1, torch.empty(0, dtype=torch.int64)

    def _position(self, pos: int) -> int:
        epoch, offset = divmod(pos, self.n)
        if epoch != self._epoch:
            g = torch.Generator().manual_seed(step_seed(self.seed, 0, epoch, stream=7))
            self._epoch, self._perm = epoch, torch.randperm(self.n, generator=g)
        return int(self._perm[offset])

    def batch(self, m: int) -> list[tuple[int, int]]:
        """(dataset index, item seed) pairs of micro-step m on this rank."""
        first = (m * self.world + self.rank) * self.b
        return [
            (self._position(p), step_seed(self.seed, 0, p, stream=5))
            for p in range(first, first + self.b)
        ]

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for m in range(self.start, self.stop):
            yield self.batch(m)

    def __len__(self) -> int:
        return self.stop - self.start


def resolve_precision(name: str, device: torch.device) -> torch.dtype | None:
    """auto: bf16 on CUDA (fp16 when bf16 is unsupported), float32 elsewhere. None = float32."""
    if name == "auto":
        if device.type != "cuda":
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if name == "fp16" and device.type == "cpu":
        raise UserError(
            "training.precision = fp16 is for GPUs (float16 autocast on CPU is very "
            "slow): use bf16 or fp32 on CPU"
        )
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[name]


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


class ItemSeeded(torch.utils.data.Dataset):
    """Wraps a training dataset so that item (k, seed) draws its randomness from ``seed``.

    ``PairDataset`` draws patch positions from one generator per process (a stream), which a
    restart would rewind; seeding each item from its stream position makes the patches of step m
    the same whether or not the run was resumed. Uses the dataset's ``item(k, generator)`` when it
    has one (``PairDataset`` does), else plain indexing.
    """

    def __init__(self, dataset: torch.utils.data.Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int]) -> dict:
        k, seed = key
        g = torch.Generator().manual_seed(seed)
        if hasattr(self.dataset, "item"):
            return self.dataset.item(k, g)
        return self.dataset[k]  # a dataset without randomness of its own
