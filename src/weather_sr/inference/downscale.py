"""File to file: read LR (or HR to coarsen) fields, check them against the checkpoint, sample an
ensemble on the HR grid with :mod:`weather_sr.inference.ensemble`, write CF NetCDF with
:mod:`weather_sr.inference.netcdf`.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import xarray as xr

from weather_sr.atomic import check_output_path
from weather_sr.devices import select_device
from weather_sr.errors import UserError
from weather_sr.inference.ensemble import SamplingOptions, sample_ensemble
from weather_sr.inference.netcdf import (
    OutputGrid,
    build_dataset,
    check_finite,
    hr_grid_from_lr,
    provenance,
    read_target_grid,
    write_dataset,
)
from weather_sr.model.meta import CheckpointMeta
from weather_sr.targets import Source, check_target


@dataclass
class Prepared:
    """LR input checked against the checkpoint: ``lr [N, C, h, w]`` physical, grid, sample info."""

    lr: np.ndarray
    grid: OutputGrid
    periodic: bool
    times: np.ndarray | None
    input_members: np.ndarray | None
    long_names: list[str]
    aux: dict[str, xr.DataArray] | None = None  # 2-D lat/lon, grid mapping (HR input only)
    standard_names: list[str] | None = None  # of the input variables ("" when none)


def _meta(model: Any, checkpoint: str | os.PathLike[str]) -> CheckpointMeta:
    """The checkpoint's metadata, with what downscaling needs (older files may lack it)."""
    meta = getattr(model, "meta", None)
    if meta is None:
        raise UserError(f"checkpoint {checkpoint} has no metadata: it cannot downscale")
    meta.require("normalizer", "scale_factor", to="downscale")
    return meta


def input_variables(meta: CheckpointMeta, coarsen_input: bool) -> tuple[list[str], bool]:
    """The variables to read for the checkpoint, and whether they are its own HR channels
    (False: the config names separate ``data.lr_variables`` for the LR input)."""
    cfg = meta.run_config().data
    lr_vars = cfg.lr_variables if not coarsen_input else None
    return list(lr_vars or cfg.variables or meta.channels), not lr_vars


def prepare_input(
    path: str | os.PathLike[str], meta: CheckpointMeta, *, coarsen_input: bool,
    target_grid: str | os.PathLike[str] | None,
) -> Prepared:
    """Open the input file with the checkpoint's variables; then :func:`prepare_fields`."""
    from weather_sr import data

    variables, _ = input_variables(meta, coarsen_input)
    fields = data.open_fields(path, variables, load=True)
    with _opened(path) as source:
        return prepare_fields(fields, meta, coarsen_input=coarsen_input, target_grid=target_grid,
                              where=f"input {path}", source=source)


def prepare_dataset(
    ds: xr.Dataset, meta: CheckpointMeta, *, coarsen_input: bool,
    target_grid: str | os.PathLike[str] | None = None, where: str = "input Dataset",
) -> Prepared:
    """:func:`prepare_input` for an ``xarray.Dataset`` in memory (the Python API)."""
    from weather_sr.data.reading import check_values, standardise

    if not isinstance(ds, xr.Dataset):
        raise UserError(f"{where}: expected an xarray.Dataset, got {type(ds).__name__}")
    variables, _ = input_variables(meta, coarsen_input)
    fields = standardise(ds, variables, where).load()
    check_values(fields.values, [str(c) for c in fields["channel"].values], where)
    return prepare_fields(fields, meta, coarsen_input=coarsen_input, target_grid=target_grid,
                          where=where, source=ds)


def prepare_fields(
    fields: xr.DataArray, meta: CheckpointMeta, *, coarsen_input: bool,
    target_grid: str | os.PathLike[str] | None, where: str, source: xr.Dataset | None,
) -> Prepared:
    """Standardised, loaded input ``fields`` (:func:`weather_sr.data.open_fields`) checked
    against the checkpoint (channels, units), coarsened if asked, with the output grid;
    ``source`` (the raw Dataset, None if it cannot be opened) gives long names and the 2-D
    auxiliary coordinates of an HR input."""
    from weather_sr import data

    cfg = meta.run_config().data
    meta.require("scale_factor", to="downscale")
    s = int(meta.scale_factor or 0)
    channels = list(meta.channels)
    variables, own = input_variables(meta, coarsen_input)
    meta.check_data([str(c) for c in fields["channel"].values], list(fields.attrs["units"]),
                    where, names=own, unknown_units=True)
    long_names = _long_names(source, variables, len(channels))
    aux = None
    grid = data.grid_of(fields)
    if not coarsen_input:
        warn_if_finer(grid, meta, s, where)
    values = np.asarray(fields.values, dtype=np.float32)
    if coarsen_input:
        h, w = data.crop_to_multiple(values.shape[2], values.shape[3], s, True, where)
        values = values[:, :, :h, :w]
        lat = grid.lat[:h] if cfg.area_weighted else None
        lr = data.coarsen(torch.from_numpy(values), s, lat).numpy()
        out_grid = OutputGrid(grid.lat[:h], grid.lon[:w], grid.lat_name, grid.lon_name,
                              grid.lat_attrs, grid.lon_attrs)
        if target_grid is None:
            aux = _aux_coords(source, variables[0], out_grid)
    else:
        lr = values
        out_grid = hr_grid_from_lr(grid.lat, grid.lon, s, lat_name=grid.lat_name,
                                   lon_name=grid.lon_name, lat_attrs=grid.lat_attrs,
                                   lon_attrs=grid.lon_attrs)
    if target_grid is not None:
        out_grid = read_target_grid(target_grid, lr.shape[2] * s, lr.shape[3] * s)
    times = fields["time"].values if "time" in fields.coords else None
    members = fields["member"].values if "member" in fields.coords else None
    return Prepared(lr, out_grid, bool(grid.periodic), times, members, long_names, aux,
                    _long_names(source, variables, len(channels), "standard_name"))


def _spacing(values: Any) -> float | None:
    """Median absolute spacing of 1-D coordinate values (None for fewer than 2)."""
    v = np.asarray(values, dtype=np.float64)
    return float(np.median(np.abs(np.diff(v)))) if v.ndim == 1 and v.size > 1 else None


def warn_if_finer(grid: Any, meta: CheckpointMeta, s: int, where: str) -> None:
    """Warn (one line) when the input grid is clearly finer than the model's LR grid (the
    training HR spacing x ``s``): an HR file given without --coarsen makes an s x s larger run."""
    trained = meta.grid or {}
    units = (str(trained.get("lat_attrs", {}).get("units", "")),
             str(getattr(grid, "lat_attrs", {}).get("units", "")))
    hr, found = _spacing(trained.get("lat", [])), _spacing(grid.lat)
    if hr is None or found is None or units[0] != units[1] or found >= 0.75 * hr * s:
        return
    h, w = grid.shape
    warnings.warn(
        f"{where}: its grid spacing ({found:.4g}) is finer than the model's LR grid "
        f"({hr * s:.4g}, the HR training grid {hr:.4g} x {s}): it is downscaled to "
        f"{h * s}x{w * s}; if it is an HR field, give --coarsen", UserWarning, stacklevel=2)


@contextlib.contextmanager
def _opened(path: str | os.PathLike[str]) -> Iterator[xr.Dataset | None]:
    """The input file as one Dataset (for its attributes), None when xarray cannot open it so."""
    try:
        ds = xr.open_dataset(path)
    except (OSError, ValueError):
        yield None
        return
    with ds:
        yield ds


def _aux_coords(
    ds: xr.Dataset | None, variable: str, grid: OutputGrid
) -> dict[str, xr.DataArray] | None:
    """2-D auxiliary coordinates (e.g. latitude/longitude of a projected grid) on the output grid
    and the CF grid-mapping variable of an HR input, to carry into the output; None if absent."""
    dims = (grid.lat_name, grid.lon_name)
    if ds is None:
        return None
    try:
        if variable not in ds or not set(dims) <= set(ds.dims):
            return None
        sel = {grid.lat_name: grid.lat, grid.lon_name: grid.lon}
        aux = {str(k): v.sel(sel).load() for k, v in ds.coords.items()
               if set(v.dims) == set(dims)}
        mapping = str(ds[variable].attrs.get("grid_mapping", ""))
        if mapping in ds.variables:
            aux[f"grid_mapping:{mapping}"] = ds[mapping].load()
    except (OSError, ValueError, KeyError):
        return None
    return aux or None


def _long_names(
    ds: xr.Dataset | None, variables: Sequence[str], n: int, attr: str = "long_name"
) -> list[str]:
    """long_name (or ``attr``) of each input variable ("" when unknown)."""
    if ds is None:
        return [""] * n
    names = [str(ds[v].attrs.get(attr, "")) if v in ds else "" for v in variables]
    return names if len(names) == n else [""] * n


def downscale(
    checkpoint: str | os.PathLike[str], input_path: str | os.PathLike[str],
    output: str | os.PathLike[str], options: SamplingOptions, *, coarsen_input: bool = False,
    device: str = "auto", overwrite: bool = False,
    target_grid: str | os.PathLike[str] | None = None, argv: Sequence[str] | None = None,
    show_progress: bool = True,
) -> Path:
    """The whole ``weather-sr downscale``; returns the output path.

    Reads with :func:`prepare_input`, then the same :func:`downscale_prepared` as the Python API
    (:func:`weather_sr.downscale`), and writes the Dataset it returns.
    """
    from weather_sr.model.loading import load_model

    check_downscale_target(output, checkpoint, input_path, target_grid)
    check_output_path(output, overwrite, option="--output")  # fail before sampling, not after
    dev = select_device(device)
    model = load_model(checkpoint, dev)
    check_downscale_target(output, checkpoint, input_path, target_grid, model)
    meta = check_model(model, checkpoint)
    prep = prepare_input(input_path, meta, coarsen_input=coarsen_input, target_grid=target_grid)
    ds = downscale_prepared(model, prep, options, checkpoint=checkpoint, device=dev,
                            coarsen_input=coarsen_input, input_name=str(input_path), argv=argv,
                            show_progress=show_progress)
    return write_dataset(ds, output, overwrite=overwrite, checked=True)


def check_model(model: Any, checkpoint: str | os.PathLike[str]) -> CheckpointMeta:
    """UserError unless ``model`` is a diffusion model whose metadata can downscale."""
    if getattr(model, "kind", "diffusion") != "diffusion":
        raise UserError(f"checkpoint {checkpoint} is a regression model: downscale samples "
                        "ensembles and needs a diffusion checkpoint (model.kind: diffusion, "
                        "e.g. runs/diffusion/checkpoints/best.pt); use the regression one with "
                        "evaluate or as diffusion.regression_checkpoint")
    return _meta(model, checkpoint)


def downscale_prepared(
    model: Any, prep: Prepared, options: SamplingOptions, *,
    checkpoint: str | os.PathLike[str] | None, device: torch.device, coarsen_input: bool,
    input_name: str, argv: Sequence[str] | None = None, show_progress: bool = False,
) -> xr.Dataset:
    """Sample the ensemble for checked input ``prep`` and build the CF Dataset (values, grid,
    attributes) that ``weather-sr downscale`` writes and :func:`weather_sr.downscale` returns.

    ``checkpoint``: the file the model came from (its SHA-256 goes into the provenance); None for
    a model built in memory (no file to hash: ``checkpoint_sha256`` is "").
    """
    from weather_sr import data
    from weather_sr.core.sampling import network_evaluations

    meta = check_model(model, checkpoint or "(in memory)")
    options = _resolve_options(options, model, prep)
    normalizer = meta.make_normalizer()
    s = int(meta.scale_factor or 0)
    cond = data.prepare_condition(prep.lr, normalizer, s, meta.interpolation or "bicubic",
                                  periodic=prep.periodic)
    progress, close = _progress_bar(len(prep.lr) * options.members, show_progress)
    try:
        x = sample_ensemble(model, cond, options, device=device, progress=progress)
    finally:
        close()
    fields = normalizer.denormalise(x.double()).float().numpy()  # [N, M, C, H, W] physical
    missing = np.repeat(np.repeat(np.isnan(prep.lr), s, axis=2), s, axis=3)[:, None]
    try:
        check_finite(fields, list(meta.channels), ~missing)
    except UserError:  # name the input field when one far outside the training data explains it
        culprit = out_of_range_input(fields, missing, prep, normalizer, list(meta.channels),
                                     list(meta.units or []), input_name)
        if culprit is None:
            raise
        raise UserError(culprit) from None
    fields = np.where(missing, np.nan, fields)  # no data where the input had none
    extra = {"input": input_name, "downscaling_factor": s, "coarsened_input": int(coarsen_input),
             # denoiser calls per member actually made (ancestral: all T, not --steps)
             "network_evaluations": network_evaluations(options.sampler, model.schedule,
                                                        options.steps)}
    attrs = provenance(checkpoint=checkpoint if checkpoint is not None else os.devnull,
                       sampler=options.sampler, steps=options.steps, eta=options.eta,
                       seed=options.seed, members=options.members, tile=options.tile,
                       overlap=options.overlap, argv=argv, extra=extra)
    if checkpoint is None:  # the file it was loaded from, if known, but not hashed again
        source = str(getattr(meta, "source", "") or "")
        attrs.update(checkpoint=source if source != "checkpoint" else "(in memory)",
                     checkpoint_sha256="")
    ds = build_dataset(fields, prep.grid, channels=list(meta.channels),
                       units=list(meta.units or []) or [""] * fields.shape[2],
                       long_names=prep.long_names, standard_names=prep.standard_names,
                       times=prep.times, input_members=prep.input_members, attrs=attrs)
    for name, value in (prep.aux or {}).items():
        if name.startswith("grid_mapping:"):
            ds[name.split(":", 1)[1]] = value
            for var in meta.channels:
                ds[var].attrs["grid_mapping"] = name.split(":", 1)[1]
        else:
            ds = ds.assign_coords({name: value.drop_vars(list(value.coords), errors="ignore")})
    return ds


def check_downscale_target(
    output: str | os.PathLike[str], checkpoint: str | os.PathLike[str],
    input_path: str | os.PathLike[str], target_grid: str | os.PathLike[str] | None,
    model: Any = None,
) -> None:
    """The output is none of the files read (checkpoint, input, target grid and, once the model
    is loaded, the regression checkpoint named in its config), nor the current/home folder."""
    sources = [Source("--checkpoint", checkpoint), Source("--input", input_path, data=True),
               Source("--target-grid", target_grid, data=True)]
    if model is not None:
        regression = (saved_config(model).get("diffusion") or {}).get("regression_checkpoint")
        sources.append(Source(f"diffusion.regression_checkpoint of {checkpoint}", regression))
    check_target(output, "output", "--output", sources, folder=False)


def saved_config(model: Any) -> Mapping[str, Any]:
    """The run config saved in a loaded model's checkpoint (``model.meta``), {} if none."""
    meta = getattr(model, "meta", None)
    cfg = meta.get("config") if isinstance(meta, Mapping) else getattr(meta, "config", None)
    return cfg if isinstance(cfg, Mapping) else {}


OUT_OF_RANGE = 30.0  # input values this many training standard deviations from the mean


def out_of_range_input(
    fields: np.ndarray, missing: np.ndarray, prep: Prepared, normalizer: Any,
    channels: Sequence[str], units: Sequence[str], input_path: str | os.PathLike[str],
) -> str | None:
    """When the output ``fields [N, M, C, H, W]`` is non-finite for an input field whose values
    lie far outside the training data (:data:`OUT_OF_RANGE` standard deviations), the message
    naming that field, its time and channel; None when no such field explains it."""
    bad = (~np.isfinite(fields) & ~missing).reshape(len(fields), -1).any(axis=1)
    n_ch = len(channels)
    mean = np.asarray(normalizer.mean, np.float64).reshape(n_ch, -1).mean(axis=1)
    std = np.asarray(normalizer.channel_std(), np.float64)
    lr = prep.lr.astype(np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        z = np.abs(lr - mean[None, :, None, None]) / std[None, :, None, None]
        z = np.where(np.isfinite(z), z, -1.0).reshape(len(lr), n_ch, -1).max(axis=2)  # [N, C]
    z[~bad] = -1.0
    k, c = np.unravel_index(int(np.argmax(z)), z.shape)
    if z[k, c] < OUT_OF_RANGE:
        return None
    values = lr[k, c][np.isfinite(lr[k, c])]
    extreme = values[np.argmax(np.abs(values - mean[c]))]
    when = f"time {prep.times[k]}" if prep.times is not None else "no time coordinate"
    unit = f" {units[c]}" if c < len(units) and units[c] else ""
    return (
        f"input {input_path}: field {k} ({when}) has {channels[c]} values up to {extreme:.3g}"
        f"{unit}, {z[k, c]:.3g} standard deviations from the training data (mean "
        f"{mean[c]:.4g}, std {std[c]:.3g}): the model produced non-finite values for it; "
        "nothing written: check that field (units, fill values) or leave it out"
    )


def _resolve_options(options: SamplingOptions, model: Any, prep: Prepared) -> SamplingOptions:
    """Fill in UNet size multiple and periodicity; check tile/overlap (UserError naming options)."""
    levels = int(getattr(getattr(model, "net", None), "levels", 1) or 1)
    multiple = 2 ** (levels - 1)
    if options.tile is not None:
        if options.tile < multiple or options.tile % multiple:
            raise UserError(f"--tile {options.tile}: must be a multiple of {multiple} "
                            f"(2**(levels-1) for this {levels}-level UNet)")
        if not 0 <= options.overlap < options.tile:
            raise UserError(f"--overlap {options.overlap}: must lie in 0..{options.tile - 1}")
        if options.overlap < 2 * multiple:
            warnings.warn(f"--overlap {options.overlap} is small for a {levels}-level UNet; "
                          f"seams may show (use >= {4 * multiple})", stacklevel=2)
    return SamplingOptions(**{**options.__dict__, "pad_multiple": multiple,
                              "periodic_x": prep.periodic})


def _progress_bar(total_pairs: int, show: bool):  # -> (progress callback, close)
    """A tqdm bar over (field, member) x network evaluations, fed by the samplers' callback."""
    if not show:
        return None, lambda: None
    from tqdm.auto import tqdm

    bar = tqdm(total=None, unit="eval", desc="downscale", dynamic_ncols=True)

    def progress(i: int, n_steps: int) -> None:
        if bar.total is None:
            bar.total = total_pairs * n_steps
            bar.refresh()
        bar.update(1)

    return progress, bar.close
