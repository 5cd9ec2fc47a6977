"""Weather data pipeline: reading (NetCDF/Zarr/GRIB), LR/HR pairs, normalisation, splits, torch
datasets, synthetic fields and the shipped sample. Imports nothing above ``errors``/``atomic``."""

from weather_sr.data.builder import DataBundle, build_datasets, prepare_condition
from weather_sr.data.condition import ConditionSpec
from weather_sr.data.datasets import PairDataset
from weather_sr.data.files import open_dataset, resolve_paths
from weather_sr.data.grid import Grid, grid_of, hr_grid_from_lr
from weather_sr.data.normalise import Normalizer, compute_stats
from weather_sr.data.pairs import (
    INTERPOLATIONS,
    block_centres,
    check_lr_grid,
    coarsen,
    crop_to_multiple,
    upsample,
)
from weather_sr.data.reading import DIM_NAMES, check_values, classify_dims, is_periodic, open_fields
from weather_sr.data.sample import SAMPLE_FILE, SAMPLE_VARIABLES, sample_data_path
from weather_sr.data.splits import split_samples, split_times
from weather_sr.data.synthetic import (
    gaussian_random_field,
    synthetic_dataset,
    write_netcdf,
    write_zarr,
)

__all__ = [
    "DIM_NAMES",
    "INTERPOLATIONS",
    "SAMPLE_FILE",
    "SAMPLE_VARIABLES",
    "ConditionSpec",
    "DataBundle",
    "Grid",
    "Normalizer",
    "PairDataset",
    "block_centres",
    "build_datasets",
    "check_lr_grid",
    "check_values",
    "classify_dims",
    "coarsen",
    "compute_stats",
    "crop_to_multiple",
    "gaussian_random_field",
    "grid_of",
    "hr_grid_from_lr",
    "is_periodic",
    "open_dataset",
    "open_fields",
    "prepare_condition",
    "resolve_paths",
    "sample_data_path",
    "split_samples",
    "split_times",
    "synthetic_dataset",
    "upsample",
    "write_netcdf",
    "write_zarr",
]
