"""A run config's data section as the data layer's call: what training and evaluation both build
their datasets from (so that evaluation needs no training code)."""

from __future__ import annotations

import dataclasses
from typing import Any

from weather_sr.config import RunConfig


def data_kwargs(cfg: RunConfig) -> dict[str, Any]:
    """``cfg.data`` as keyword arguments of ``weather_sr.data.build_datasets`` (a shipped name
    such as ``sample`` replaced by its file; lists that the data layer takes as tuples)."""
    from weather_sr.data.sample import shipped_data_path

    kw = dataclasses.asdict(cfg.data)
    kw["path"] = shipped_data_path(kw["path"])
    for key in ("patch_size", "split"):
        if isinstance(kw[key], list):
            kw[key] = tuple(kw[key])
    return kw
