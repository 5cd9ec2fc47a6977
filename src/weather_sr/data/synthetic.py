"""Synthetic fields for tests and scaling experiments: Gaussian random fields with a power-law
spectrum, as an xarray Dataset (time, lat, lon) that flows through the same pipeline as files.

The field is white noise filtered in Fourier space by |k|^(slope/2), so the 2-D power spectral
density is P(k) ∝ |k|^slope (k ≠ 0; the mean is 0). The radially summed spectrum E(k) (the
isotropic energy spectrum that meteorologists plot) then scales as k^(slope+1).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import xarray as xr

from weather_sr.atomic import atomic_output


def gaussian_random_field(
    n: int, ny: int, nx: int, *, slope: float = -3.0, generator: torch.Generator | None = None
) -> torch.Tensor:
    """``n`` fields [n, ny, nx] (float64), 2-D power spectral density ∝ |k|^slope, unit variance."""
    g = generator if generator is not None else torch.Generator().manual_seed(0)
    noise = torch.randn((n, ny, nx), generator=g, dtype=torch.float64)
    ky = torch.fft.fftfreq(ny, dtype=torch.float64)[:, None]
    kx = torch.fft.rfftfreq(nx, dtype=torch.float64)[None, :]
    k = torch.sqrt(ky**2 + kx**2)
    amp = torch.where(k > 0, k.clamp_min(1e-12) ** (slope / 2.0), 0.0)
    field = torch.fft.irfft2(torch.fft.rfft2(noise) * amp, s=(ny, nx))
    field = field - field.mean(dim=(-2, -1), keepdim=True)
    return field / field.std(dim=(-2, -1), keepdim=True)


def synthetic_dataset(
    n_time: int = 32,
    ny: int = 64,
    nx: int = 64,
    *,
    slope: float = -3.0,
    variables: Sequence[str] = ("x",),
    seed: int = 0,
    global_grid: bool = True,
    lat_range: tuple[float, float] = (-60.0, 60.0),
) -> xr.Dataset:
    """A Dataset with variables (time, lat, lon), float32, one GRF per time and variable.

    ``global_grid``: lon spans 360 degrees (periodic, like a global model; the GRF is periodic
    too), else 0..nx-1 degrees. Variable ``i`` has mean ``280 + 10 i`` and std ``5`` (kelvin-like).
    """
    g = torch.Generator().manual_seed(int(seed))
    lat = np.linspace(lat_range[0], lat_range[1], ny)
    lon = np.arange(nx) * (360.0 / nx if global_grid else 1.0)
    times = np.datetime64("2020-01-01T00") + np.arange(n_time) * np.timedelta64(6, "h")
    data_vars = {}
    for i, name in enumerate(variables):
        f = gaussian_random_field(n_time, ny, nx, slope=slope, generator=g)
        values = (280.0 + 10.0 * i + 5.0 * f).numpy().astype(np.float32)
        data_vars[name] = xr.DataArray(
            values,
            dims=("time", "lat", "lon"),
            attrs={"units": "K", "long_name": f"synthetic {name}"},
        )
    coords = {
        "time": times,
        "lat": xr.DataArray(
            lat, dims="lat", attrs={"units": "degrees_north", "standard_name": "latitude"}
        ),
        "lon": xr.DataArray(
            lon, dims="lon", attrs={"units": "degrees_east", "standard_name": "longitude"}
        ),
    }
    return xr.Dataset(data_vars, coords=coords, attrs={"title": f"GRF, spectral slope {slope}"})


def write_netcdf(ds: xr.Dataset, path: str | os.PathLike[str], overwrite: bool = True) -> Path:
    """Write ``ds`` to NetCDF atomically (temp file + rename); return the path."""
    with atomic_output(path, overwrite=overwrite, what="NetCDF file") as tmp:
        ds.to_netcdf(tmp)
    return Path(path)


def write_zarr(ds: xr.Dataset, path: str | os.PathLike[str], overwrite: bool = True) -> Path:
    """Write ``ds`` to a Zarr folder atomically; return the path."""
    with atomic_output(path, overwrite=overwrite, what="Zarr store") as tmp:
        ds.to_zarr(tmp, mode="w", zarr_format=2)  # v2: consolidated metadata without a warning
    return Path(path)
