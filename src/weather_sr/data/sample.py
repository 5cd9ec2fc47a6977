"""The small real datasets shipped with the package (see sample_data/README.md, docs/data.md).

- ``sample``: ``safrica_sample.nc``, an NCEP forecast over southern Africa (pwat, btmp);
- ``era5``: ``era5_members_sample.nc``, ERA5 ensemble members, t and z at 500/850 hPa on a
  3-degree global grid (scripts/make_era5_sample.py).

Either name (or ``@name``) is accepted as ``data.path`` (:func:`shipped_data_path`).
"""

from __future__ import annotations

from pathlib import Path

from weather_sr.errors import UserError

SAMPLE_FILE = "safrica_sample.nc"
SAMPLE_VARIABLES = ("pwat", "btmp")
ERA5_FILE = "era5_members_sample.nc"
ERA5_VARIABLES = ("t", "z")  # channels t_500, t_850, z_500, z_850
SHIPPED_FILES = {"sample": SAMPLE_FILE, "era5": ERA5_FILE}


def _shipped(file: str) -> Path:
    path = Path(__file__).resolve().parent.parent / "sample_data" / file
    if not path.is_file():
        raise UserError(f"sample data {path} is missing: reinstall weather-sr")
    return path


def sample_data_path() -> Path:
    """Path of the shipped NetCDF sample (see ``SAMPLE_VARIABLES`` and sample_data/README.md)."""
    return _shipped(SAMPLE_FILE)


def era5_data_path() -> Path:
    """Path of the shipped ERA5 members sample (see ``ERA5_VARIABLES`` and docs/data.md)."""
    return _shipped(ERA5_FILE)


def shipped_data_path(path: str | list[str]) -> str | list[str]:
    """``path`` with a shipped name (``sample``, ``era5``, or ``@`` + name) replaced by its file;
    anything else is returned as it is."""
    if isinstance(path, str):
        name = path[1:] if path.startswith("@") else path
        if name in SHIPPED_FILES:
            return str(_shipped(SHIPPED_FILES[name]))
    return path
