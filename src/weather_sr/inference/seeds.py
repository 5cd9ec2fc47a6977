"""The seed of every (field, member) pair: what makes a member independent of batching, chunking,
the order of the work and the number of processes (:mod:`weather_sr.inference.ensemble`)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


def member_seed(seed: int, field: int, member: int) -> int:
    """63-bit seed of the generator for (field, member), independent of batching and order.

    Every bit of ``seed`` (0 .. 2**63 - 1) counts; its high 32 bits enter as a fourth word of
    entropy only when they are not all zero, so seeds below 2**32 give the generators of
    earlier versions."""
    high = int(seed) >> 32
    words = [int(seed) & 0xFFFFFFFF, int(field), int(member), *([high] if high else [])]
    state = np.random.SeedSequence(words)
    return int(state.generate_state(1, np.uint64)[0] >> np.uint64(1))


def pair_generators(seed: int, pairs: Sequence[tuple[int, int]]) -> list[torch.Generator]:
    """One CPU generator per (field, member) pair."""
    return [torch.Generator().manual_seed(member_seed(seed, f, m)) for f, m in pairs]
