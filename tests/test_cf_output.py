"""Outputs for every tool: IOOS compliance-checker reports no CF-1.8 error on real downscale
outputs, they convert to netCDF classic, standard names are set, and the projected x/y of the
shipped sample and of an output lie where their 2-D latitude/longitude say (pyproj)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

# pyproj first: the eccodes wheel (grib extra) loads a PROJ library of its own once xarray
# discovers the cfgrib backend, and pyproj then fails to read its database
pyproj = pytest.importorskip("pyproj")

import netCDF4  # noqa: E402
import torch  # noqa: E402
import xarray as xr  # noqa: E402

from weather_sr.cli import main  # noqa: E402
from weather_sr.data.sample import SAMPLE_VARIABLES, sample_data_path  # noqa: E402
from weather_sr.inference.netcdf import STANDARD_NAMES, OutputGrid, build_dataset  # noqa: E402

CELL = 47625.0  # grid spacing of the sample (m)


def _checkpoint(path: Path, scale: int = 2, kind: str = "diffusion") -> Path:
    """A tiny untrained checkpoint (diffusion or regression) for the sample's variables."""
    from weather_sr.config import RunConfig, config_to_dict, model_config_from_dict
    from weather_sr.data import Normalizer
    from weather_sr.model.checkpoint import save_checkpoint
    from weather_sr.model.downscaling_model import build_unet

    ch = list(SAMPLE_VARIABLES)
    cfg = config_to_dict(RunConfig())
    cfg["data"]["variables"] = ch
    cfg["model"].update(base_channels=8, channel_mults=[1, 2], num_res_blocks=1,
                        mid_attention=False, groups=4, kind=kind)
    cfg["diffusion"]["timesteps"] = 20
    torch.manual_seed(0)
    state = build_unet(model_config_from_dict(cfg["model"]), 2, 2, False).state_dict()
    norm = Normalizer("channel", ch, np.array([20.0, 260.0]).reshape(2, 1, 1),
                      np.array([10.0, 20.0]).reshape(2, 1, 1))
    save_checkpoint(path, {"step": 0, "model": state, "ema": state, "config": cfg,
                           "channels": ch, "units": ["kg m**-2", "K"],
                           "normalizer": norm.to_dict(), "scale_factor": scale,
                           "interpolation": "bicubic", "grid": None, "regression": None})
    return path


@pytest.fixture(scope="module")
def outputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Real CLI outputs: the sample (3 times) coarsened and downscaled back (projected grid with
    2-D lat/lon and grid mapping), and the same file downscaled as LR input."""
    root = tmp_path_factory.mktemp("cf")
    ckpt = _checkpoint(root / "model.pt")
    with xr.open_dataset(sample_data_path()) as ds:
        part = ds.isel(time=slice(0, 3)).load()
    part.to_netcdf(root / "hr.nc")
    common = ["--checkpoint", str(ckpt), "--members", "2", "--sampler", "ddim", "--steps", "2",
              "--device", "cpu", "--no-progress"]
    out = {"coarsened": root / "coarsened.nc", "lr": root / "lr_out.nc", "input": root / "hr.nc",
           "mean": root / "mean.nc"}
    assert main(["downscale", *common, "--input", str(root / "hr.nc"), "--coarsen",
                 "--output", str(out["coarsened"])]) == 0
    assert main(["downscale", *common, "--input", str(root / "hr.nc"),
                 "--output", str(out["lr"])]) == 0
    common[1] = str(_checkpoint(root / "regression.pt", kind="regression"))  # mean mode
    assert main(["downscale", *common, "--input", str(root / "hr.nc"), "--coarsen",
                 "--output", str(out["mean"])]) == 0
    return out


def cf_errors(path: Path, report: Path, version: str = "1.8") -> list[str]:
    """The compliance-checker's errors (high-priority failures) for ``path`` at CF-``version``
    (its JSON report written to ``report``)."""
    from compliance_checker.runner import CheckSuite, ComplianceChecker

    CheckSuite.load_all_available_checkers()
    ComplianceChecker.run_checker(str(path), [f"cf:{version}"], 0, "normal",
                                  output_filename=str(report), output_format="json")
    result = json.loads(report.read_text())[f"cf:{version}"]
    return [f"{item['name']}: {msg}" for item in result["high_priorities"]
            for msg in item["msgs"]]


@pytest.mark.parametrize("which", ["coarsened", "lr", "mean"])
def test_compliance_checker_reports_no_cf_error(outputs: dict[str, Path], which: str,
                                                tmp_path: Path) -> None:
    assert cf_errors(outputs[which], tmp_path / "report.json") == []


def test_sample_passes_compliance_checker(tmp_path: Path) -> None:
    assert cf_errors(Path(sample_data_path()), tmp_path / "report.json") == []


def _to_classic(src: Path, dst: Path) -> None:
    """What ``nccopy -k classic`` does: fails on types classic lacks (int64, strings, ...)."""
    with netCDF4.Dataset(src) as a, netCDF4.Dataset(dst, "w", format="NETCDF3_CLASSIC") as b:
        b.setncatts({k: a.getncattr(k) for k in a.ncattrs()})
        for name, dim in a.dimensions.items():
            b.createDimension(name, len(dim))
        for name, var in a.variables.items():
            var.set_auto_maskandscale(False)
            fill = var.getncattr("_FillValue") if "_FillValue" in var.ncattrs() else None
            new = b.createVariable(name, var.dtype, var.dimensions, fill_value=fill)
            new.setncatts({k: var.getncattr(k) for k in var.ncattrs() if k != "_FillValue"})
            new.set_auto_maskandscale(False)
            new[...] = var[...]


def test_output_converts_to_netcdf_classic(outputs: dict[str, Path], tmp_path: Path) -> None:
    allowed = {np.dtype(t) for t in ("i1", "S1", "i2", "i4", "f4", "f8")}
    for which in ("coarsened", "lr", "mean"):
        with netCDF4.Dataset(outputs[which]) as nc:
            for name, var in nc.variables.items():
                assert var.dtype in allowed, (name, var.dtype)
                for key in var.ncattrs():
                    value = np.asarray(var.getncattr(key))
                    assert value.dtype.kind in "USf" or value.dtype in allowed, (name, key)
            for key in nc.ncattrs():
                value = np.asarray(nc.getncattr(key))
                assert value.dtype.kind in "USf" or value.dtype in allowed, key
        _to_classic(outputs[which], tmp_path / f"{which}.nc")
        with xr.open_dataset(tmp_path / f"{which}.nc") as a, xr.open_dataset(outputs[which]) as b:
            xr.testing.assert_identical(a.drop_attrs(), b.drop_attrs())


def test_cf_attributes_of_an_output(outputs: dict[str, Path]) -> None:
    with xr.open_dataset(outputs["coarsened"], decode_times=False) as ds:
        assert ds["member"].attrs["units"] == "1"
        assert ds["member"].attrs["standard_name"] == "realization"
        assert "scale_factor" not in ds.attrs and ds.attrs["downscaling_factor"] == 2
        assert ds["time"].dtype == np.float64
        for name in ("x", "y", "time", "member", "latitude", "longitude"):
            assert "_FillValue" not in ds[name].encoding, name
        for name in SAMPLE_VARIABLES:  # copied from the input
            assert ds[name].attrs["standard_name"] == STANDARD_NAMES[name]
    with xr.open_dataset(outputs["lr"]) as ds, xr.open_dataset(outputs["input"]) as src:
        assert ds.attrs["downscaling_factor"] == 2 and ds.sizes["y"] == 2 * src.sizes["y"]
        # the input's 2-D lat/lon interpolated onto the finer grid, the input's grid mapping
        assert ds["pwat"].attrs["grid_mapping"] == src["pwat"].attrs["grid_mapping"]
        assert ds["latitude"].dims == ("y", "x") and ds.sizes["x"] == 2 * src.sizes["x"]


def test_standard_name_from_input_else_table_else_none() -> None:
    grid = OutputGrid(np.linspace(-10, 10, 4), np.linspace(0, 21, 4), "latitude", "longitude",
                      {"units": "degrees_north"}, {"units": "degrees_east"})
    ds = build_dataset(np.zeros((1, 1, 3, 4, 4), np.float32), grid,
                       channels=["t2m", "my_index", "u10"], units=["K", "1", "m s-1"],
                       standard_names=["", "", "wind_speed"])
    assert ds["t2m"].attrs["standard_name"] == "air_temperature"  # built-in table
    assert "standard_name" not in ds["my_index"].attrs  # unknown: none
    assert ds["u10"].attrs["standard_name"] == "wind_speed"  # the input's wins


def _placement_error(ds: xr.Dataset, mapping: str) -> float:
    """Largest distance (m) between the points of x/y put through the grid mapping (pyproj) and
    the stored 2-D latitude/longitude."""
    crs = pyproj.CRS.from_cf(dict(ds[mapping].attrs))
    to_lonlat = pyproj.Transformer.from_crs(crs, crs.geodetic_crs, always_xy=True)
    x, y = np.meshgrid(ds["x"].values, ds["y"].values)
    lon, lat = to_lonlat.transform(x, y)
    geod = pyproj.Geod(ellps="sphere")
    _, _, dist = geod.inv(lon, lat, ds["longitude"].values, ds["latitude"].values)
    return float(np.max(dist))


def test_sample_projection_matches_its_latitude_longitude() -> None:
    with xr.open_dataset(sample_data_path()) as ds:
        mapping = ds["pwat"].attrs["grid_mapping"]
        assert ds["x"].attrs["units"] == "m" and ds["y"].attrs["units"] == "m"
        assert _placement_error(ds, mapping) < 0.01 * CELL
        np.testing.assert_allclose(np.diff(ds["x"].values), CELL, rtol=1e-4)


@pytest.mark.parametrize("which", ["coarsened", "lr", "mean"])
def test_output_projection_matches_its_latitude_longitude(outputs: dict[str, Path],
                                                          which: str) -> None:
    """Also where 2-D lat/lon are interpolated from the LR input's ("lr": about 90 m off)."""
    with xr.open_dataset(outputs[which]) as ds:
        mapping = ds["pwat"].attrs["grid_mapping"]
        assert _placement_error(ds, mapping) < 0.01 * CELL
