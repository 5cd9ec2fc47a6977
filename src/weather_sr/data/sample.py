"""The small real dataset shipped with the package (see sample_data/README.md)."""

from __future__ import annotations

from pathlib import Path

from weather_sr.errors import UserError

SAMPLE_FILE = "safrica_sample.nc"
SAMPLE_VARIABLES = ("pwat", "btmp")


def sample_data_path() -> Path:
    """Path of the shipped NetCDF sample (see ``SAMPLE_VARIABLES`` and sample_data/README.md)."""
    path = Path(__file__).resolve().parent.parent / "sample_data" / SAMPLE_FILE
    if not path.is_file():
        raise UserError(f"sample data {path} is missing: reinstall weather-sr")
    return path
