"""Finding and opening gridded files (NetCDF, Zarr, GRIB) as an ``xarray.Dataset``, lazily.

Only file handling lives here: resolving paths and globs, guessing the format from the first
bytes, and turning every failure into a one-line ``UserError`` naming the file.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import xarray as xr

from weather_sr.errors import UserError
from weather_sr.targets import expand_path, is_pattern

PathLike = str | os.PathLike[str]
PathSpec = PathLike | Sequence[PathLike]

GRIB_SUFFIXES = (".grib", ".grb", ".grib1", ".grib2", ".grb2")


def resolve_paths(path: PathSpec) -> list[Path]:
    """Expand a file, a Zarr folder, a glob pattern or a list of these into existing paths
    (:func:`weather_sr.targets.expand_path`: an existing name is never read as a pattern)."""
    items = [path] if isinstance(path, str | os.PathLike) else list(path)
    if not items:
        raise UserError("data path: the list of files is empty: give at least one file")
    out: list[Path] = []
    for item in items:
        text = os.fspath(item)
        matches = expand_path(text)
        if is_pattern(text):
            if not matches:
                raise UserError(f"data path {text}: the pattern matches no file: check the path")
        elif not Path(text).exists():
            raise UserError(f"data file {text} not found: check the path")
        out.extend(Path(m) for m in matches)
    return out


def _same_variables_and_units(paths: Sequence[Path], variables: Sequence[str]):  # -> callable
    """``preprocess`` for ``open_mfdataset``: every file of a glob or list must hold all
    ``variables``, in the units of the first file (only its attributes survive the combine)."""
    first: dict[str, tuple[str, str]] = {}
    count = iter(range(len(paths)))

    def check(ds: xr.Dataset) -> xr.Dataset:
        k = next(count, len(paths) - 1)
        source = str(ds.encoding.get("source") or paths[k])
        for var in variables:
            if var not in ds.data_vars:
                available = ", ".join(str(v) for v in ds.data_vars)
                raise UserError(
                    f"data file {source}: variable {var!r} not found; available: {available} "
                    f"(every file of the {len(paths)} given must hold it)"
                )
            units = str(ds[var].attrs.get("units", ""))
            if var in first and first[var][0] != units:
                raise UserError(
                    f"data file {source}: variable {var} is in units {units!r} but data file "
                    f"{first[var][1]} has {first[var][0]!r}: convert the files to the same units"
                )
            first.setdefault(var, (units, source))
        return ds

    return check


def detect_engine(path: Path) -> str:
    """Return the xarray engine for ``path`` from its first bytes (or folder layout for Zarr)."""
    if path.is_dir():
        markers = (".zgroup", ".zarray", "zarr.json", ".zmetadata")
        if any((path / m).exists() for m in markers):
            return "zarr"
        raise UserError(
            f"data path {path} is a folder but not a Zarr store: give a file or a .zarr"
        )
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
    except OSError as exc:
        raise UserError(
            f"data file {path} cannot be read ({exc.strerror}): check permissions"
        ) from exc
    if head.startswith(b"CDF"):
        return "scipy" if _netcdf4_missing() else "netcdf4"
    if head.startswith(b"\x89HDF"):
        return "h5netcdf" if _netcdf4_missing() else "netcdf4"
    if head.startswith(b"GRIB") or path.suffix.lower() in GRIB_SUFFIXES:
        return "cfgrib"
    raise UserError(
        f"data file {path} is not a readable NetCDF, Zarr or GRIB file: convert it to NetCDF"
    )


def _netcdf4_missing() -> bool:
    try:
        import netCDF4  # noqa: F401
    except ImportError:
        return True
    return False


def _open_one(path: Path, engine: str, variables: Sequence[str]) -> xr.Dataset:
    """Open one file lazily; a GRIB file with several hypercubes is split by cfgrib, merged."""
    if engine == "zarr":
        ds = xr.open_dataset(path, engine=engine, chunks=None)
        check_zarr_chunks(path, [v for v in variables if v in ds.data_vars])
        return ds
    if engine != "cfgrib":
        return xr.open_dataset(path, engine=engine, chunks=None)
    kwargs = {"indexpath": ""}  # never write .idx files beside the user's data
    try:
        return xr.open_dataset(path, engine="cfgrib", chunks=None, backend_kwargs=kwargs)
    except Exception as exc:
        if "DatasetBuildError" not in type(exc).__name__:
            raise
    import cfgrib

    parts = cfgrib.open_datasets(str(path), backend_kwargs=kwargs)
    wanted = [ds for ds in parts if any(v in ds.data_vars for v in variables)] or parts
    return xr.merge(wanted, compat="override", join="exact")


def check_zarr_chunks(path: Path, variables: Sequence[str] | None, what: str = "data file",
                      fix: str = "rewrite it completely", *,
                      rows: tuple[str, int] | None = None) -> None:
    """UserError naming the variable and region of a chunk missing from the Zarr store ``path``
    (``variables``: those to check; None: every array of the store).

    Zarr reads a chunk that is not stored as the fill value (NaN for floats), so a store whose
    writer died, or was copied in part, would read as data with holes and nobody told. The
    number of stored chunks (shards) of each variable is compared with its chunk grid.
    ``what`` names the store in the message and ``fix`` says what to do. ``rows`` = (dim, n):
    of the arrays whose first dimension is ``dim``, only the first ``n`` entries along it are
    checked (local stores: a store being appended to may hold a cut-off row beyond them).
    """
    try:
        import zarr

        group = zarr.open_group(str(path), mode="r")
        names = list(variables) if variables is not None else [n for n, _ in group.arrays()]
    except Exception:  # xarray opened it; a layout zarr cannot list is not checked here
        return
    for var in names:
        try:
            arr = group[var]
            if rows is not None and _dims(arr)[:1] == [rows[0]]:
                missing, total, region = _missing_chunks(arr, rows[1])
            else:
                missing, total, region = arr.nchunks - arr.nchunks_initialized, arr.nchunks, None
        except Exception:
            continue
        if missing and region is None:
            with contextlib.suppress(Exception):  # the place is known for local stores only
                region = _missing_chunks(arr)[2]
        if not missing:
            continue
        raise UserError(
            f"{what} {path}: variable {var}: {missing} of {total} chunks are missing from "
            f"the Zarr store{f' (the first at {region})' if region else ''}; they would read as "
            f"fill value {arr.fill_value}: the store is incomplete, or was written without empty "
            f"chunks (write_empty_chunks=False): {fix}"
        )


def _dims(arr: Any) -> list[str]:
    """The dimension names of a Zarr array (v3 metadata or xarray's v2 attribute)."""
    shape = tuple(arr.shape)
    return list(getattr(arr.metadata, "dimension_names", None)
                or arr.attrs.get("_ARRAY_DIMENSIONS")
                or [f"dim{i}" for i in range(len(shape))])


def _missing_chunks(arr: Any, rows: int | None = None) -> tuple[int, int, str | None]:
    """(chunks missing, chunks in all, 'time 4-4, lat 0-15, lon 16-31' of the first missing) of
    a local Zarr array, over its first ``rows`` entries along dimension 0 when given."""
    import itertools
    import math

    block = tuple(getattr(arr, "shards", None) or arr.chunks)
    shape = list(arr.shape)
    if rows is not None:
        shape[0] = min(shape[0], rows)
    root = Path(arr.store.root) / arr.path
    encode = arr.metadata.encode_chunk_key
    grid = [range(math.ceil(n / b)) for n, b in zip(shape, block, strict=True)]
    missing = [idx for idx in itertools.product(*grid) if not (root / encode(idx)).exists()]
    first = None
    if missing:
        first = ", ".join(f"{name} {i * b}-{min((i + 1) * b, n) - 1}" for name, i, b, n
                          in zip(_dims(arr), missing[0], block, shape, strict=True))
    return len(missing), math.prod(len(g) for g in grid), first


def open_dataset(
    path: PathSpec, variables: Sequence[str] = (), sample_dims: Sequence[str] = ()
) -> tuple[xr.Dataset, list[Path]]:
    """Open ``path`` (file, Zarr folder, glob or list) lazily; return it and its files.

    One file is opened without dask (lazily indexed: the caller chunks it, so a read touches only
    its slice). Several files are combined with ``xarray.open_mfdataset`` (``combine="by_coords"``,
    usually along time), chunked by 1 along the dims of the first file named in ``sample_dims``.
    """
    paths = resolve_paths(path)
    engines = {detect_engine(p) for p in paths}
    if len(engines) > 1:
        raise UserError(
            f"data files {paths[0]} ...: mixed formats {sorted(engines)}: use one format"
        )
    engine = engines.pop()
    try:
        if len(paths) == 1:
            return _open_one(paths[0], engine, variables), paths
        kwargs = {"indexpath": ""} if engine == "cfgrib" else None
        names = {d.lower() for d in sample_dims}
        with _open_one(paths[0], engine, variables) as first:
            chunks = {str(d): 1 for d in first.dims if str(d).lower() in names}
        if engine == "zarr":
            for p in paths[1:]:
                with _open_one(p, engine, variables):
                    pass  # checks its chunks
        ds = xr.open_mfdataset(
            paths, engine=engine, combine="by_coords", chunks=chunks, backend_kwargs=kwargs,
            preprocess=_same_variables_and_units(paths, variables),
        )
        return ds, paths
    except UserError:
        raise
    except Exception as exc:
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(
            f"data file {paths[0]} could not be opened as {engine} ({msg}): "
            "check it is a valid NetCDF/Zarr/GRIB file"
        ) from exc
