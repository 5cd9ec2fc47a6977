"""weather-sr: probabilistic super-resolution of weather fields with diffusion models.

The Python API, :func:`load_model` and :func:`downscale` (:mod:`weather_sr.inference.api`) and
:func:`score` (:mod:`weather_sr.evaluation.score_files`), is imported on first use, so
``import weather_sr`` (and ``from weather_sr import __version__``) stays cheap: it loads neither
torch nor xarray.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = ["__version__", "downscale", "load_model", "score"]

_API = ("downscale", "load_model", "score")


def __getattr__(name: str) -> Any:
    """``weather_sr.load_model`` / ``downscale`` / ``score``, imported lazily (PEP 562)."""
    if name == "score":
        from weather_sr.evaluation import score_files

        return score_files.score
    if name in _API:
        from weather_sr.inference import api

        return getattr(api, name)
    raise AttributeError(f"module 'weather_sr' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_API])
