"""File to file: read LR (or HR to coarsen) fields, check them against the checkpoint, sample an
ensemble on the HR grid with :mod:`weather_sr.inference.ensemble`, build the CF Dataset with
:mod:`weather_sr.inference.netcdf`; :func:`downscale` does this chunk by chunk of fields and
writes each chunk at once (NetCDF or Zarr, :mod:`weather_sr.inference.stream`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import xarray as xr

from weather_sr.devices import select_device
from weather_sr.errors import UserError
from weather_sr.inference.ensemble import SamplingOptions, options_for, sample_ensemble
from weather_sr.inference.netcdf import (
    build_dataset,
    check_finite,
    provenance,
)
from weather_sr.inference.precision import resolve_precision
from weather_sr.inference.prepare import (
    Prepared,
    feature_grid,
    input_variables,
    opened,
    prepare_fields,
)
from weather_sr.model.meta import CheckpointMeta
from weather_sr.targets import Source, check_target


def _meta(model: Any, checkpoint: str | os.PathLike[str]) -> CheckpointMeta:
    """The checkpoint's metadata, with what downscaling needs (older files may lack it)."""
    meta = getattr(model, "meta", None)
    if meta is None:
        raise UserError(f"checkpoint {checkpoint} has no metadata: it cannot downscale")
    meta.require("normalizer", "scale_factor", to="downscale")
    return meta


def downscale(
    checkpoint: str | os.PathLike[str], input_path: str | os.PathLike[str],
    output: str | os.PathLike[str], options: SamplingOptions, *, coarsen_input: bool = False,
    device: str = "auto", overwrite: bool = False,
    target_grid: str | os.PathLike[str] | None = None, argv: Sequence[str] | None = None,
    show_progress: bool = True, chunk_fields: int = 8, output_format: str | None = None,
    resume: bool = False,
) -> Path:
    """The whole ``weather-sr downscale``; returns the output path.

    Works through the lazily opened input ``chunk_fields`` fields at a time: each chunk is read,
    checked (:func:`prepare_fields`), sampled with the same :func:`downscale_prepared` as the
    Python API (:func:`weather_sr.downscale`, field indices global: the seeds do not depend on
    the chunks) and written at once by :mod:`weather_sr.inference.stream` (NetCDF, or Zarr with
    ``output_format="zarr"`` or an output ending in ``.zarr``; ``resume``: continue a Zarr output's
    partial store). Peak memory does not grow with the number of fields.

    Under ``torchrun`` every rank reads and checks the same input and samples its share of each
    chunk (:mod:`weather_sr.inference.ensemble`); rank 0 alone writes, after every rank has
    checked the output path (a barrier), and returns the path.
    """
    from weather_sr import data, distributed
    from weather_sr.inference import stream
    from weather_sr.inference.netcdf import sha256_file
    from weather_sr.model.loading import load_model

    stream.check_chunk_fields(chunk_fields)
    fmt = stream.output_format(output, output_format)
    folder = fmt == "zarr"
    check_downscale_target(output, checkpoint, input_path, target_grid, folder=folder)
    stream.check_start(output, fmt, overwrite=overwrite, resume=resume)  # before sampling
    dev = select_device(device)
    model = load_model(checkpoint, dev)
    check_downscale_target(output, checkpoint, input_path, target_grid, model, folder=folder)
    meta = check_model(model, checkpoint)
    fields = data.open_fields(input_path, input_variables(meta, coarsen_input)[0])
    files = list(fields.attrs.get("source") or [input_path])
    where = f"data file {files[0]}" + (f" (+{len(files) - 1} more)" if len(files) > 1 else "")
    stream.check_values_in_chunks(fields, chunk_fields, where)
    total = int(fields.sizes["sample"])
    if total == 0:
        raise UserError(f"input {input_path}: no fields to downscale")
    times = fields["time"].values
    settings = stream.run_settings(
        checkpoint_sha256=sha256_file(checkpoint), options=options,
        precision=resolve_precision(options.precision, dev), input_path=input_path,
        times=times, coarsen=coarsen_input, target_grid=target_grid) if folder else None
    done = stream.resume_point(output, settings or {}) if resume else 0
    rank, _ = distributed.current()
    distributed.barrier()  # every rank has checked the output before rank 0 writes to it
    bar: list[tuple[Any, Callable[[], None]]] = []

    def progress(i: int, n_steps: int) -> None:  # the bar appears with the first evaluation
        if not bar:
            bar.append(progress_bar((total - done) * options.members,
                                     show_progress and rank == 0))
        if bar[0][0] is not None:
            bar[0][0](i, n_steps)

    with opened(input_path) as source:

        def chunk(a: int, b: int) -> xr.Dataset:
            prep = prepare_fields(fields.isel(sample=slice(a, b)).load(), meta,
                                  coarsen_input=coarsen_input, target_grid=target_grid,
                                  where=f"input {input_path}", source=source)
            return downscale_prepared(model, prep, options, checkpoint=checkpoint, device=dev,
                                      coarsen_input=coarsen_input, input_name=str(input_path),
                                      argv=argv, field_offset=a, progress=progress)

        try:
            if rank == 0:
                return stream.write_chunks(
                    chunk, total, output, fmt=fmt, chunk_fields=chunk_fields,
                    overwrite=overwrite, time_enc=stream.time_encoding(times),
                    settings=settings, done=done)
            for a, b in stream.chunks(total, chunk_fields, start=done):
                chunk(a, b)  # this rank's share of the sampling; rank 0 writes
            return Path(output)
        finally:
            if bar:
                bar[0][1]()


def check_model(model: Any, checkpoint: str | os.PathLike[str]) -> CheckpointMeta:
    """UserError unless ``model`` is a diffusion model whose metadata can downscale."""
    if getattr(model, "kind", "diffusion") != "diffusion":
        raise UserError(f"checkpoint {checkpoint} is a regression model: downscale samples "
                        "ensembles and needs a diffusion checkpoint (model.kind: diffusion, "
                        "e.g. runs/diff/checkpoints/best.pt); use the regression one with "
                        "evaluate or as diffusion.regression_checkpoint")
    return _meta(model, checkpoint)


def downscale_prepared(
    model: Any, prep: Prepared, options: SamplingOptions, *,
    checkpoint: str | os.PathLike[str] | None, device: torch.device, coarsen_input: bool,
    input_name: str, argv: Sequence[str] | None = None, field_offset: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> xr.Dataset:
    """Sample the ensemble for checked input ``prep`` and build the CF Dataset (values, grid,
    attributes) that ``weather-sr downscale`` writes and :func:`weather_sr.downscale` returns.

    ``checkpoint``: the file the model came from (its SHA-256 goes into the provenance); None for
    a model built in memory (no file to hash: ``checkpoint_sha256`` is ""). ``field_offset``: the
    global index of ``prep``'s first field (seeds, messages); ``progress``: the callback of the
    caller's bar (:func:`progress_bar`), if any.
    """
    from weather_sr import data
    from weather_sr.core.sampling import network_evaluations

    meta = check_model(model, checkpoint or "(in memory)")
    options = options_for(model, options, periodic=prep.periodic)
    normalizer = meta.make_normalizer()
    spec = meta.condition_spec()
    s = int(meta.scale_factor or 0)
    lat, lon = feature_grid(prep, meta) if spec.features else (None, None)
    cond = data.prepare_condition(prep.lr, spec, s, meta.interpolation or "bicubic",
                                  periodic=prep.periodic, lat=lat, lon=lon, times=prep.times)
    x = sample_ensemble(model, cond, options, device=device, progress=progress,
                        field_offset=field_offset)
    fields = normalizer.denormalise(x.double()).float().numpy()  # [N, M, C, H, W] physical
    missing = _missing(prep.lr, spec, s)
    try:
        check_finite(fields, list(meta.channels), ~missing)
    except UserError:  # name the input field when one far outside the training data explains it
        culprit = None if spec.mode != "own" else out_of_range_input(
            fields, missing, prep, normalizer, list(meta.channels), list(meta.units or []),
            input_name, field_offset)
        if culprit is None:
            raise
        raise UserError(culprit) from None
    fields = np.where(missing, np.nan, fields)  # no data where the input had none
    extra = {"input": input_name, "downscaling_factor": s, "coarsened_input": int(coarsen_input),
             # denoiser calls per member actually made (ancestral: all T, not --steps)
             "network_evaluations": network_evaluations(options.sampler, model.schedule,
                                                        options.steps),
             "precision": resolve_precision(options.precision, device)}
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


def _missing(lr: np.ndarray, spec: Any, s: int) -> np.ndarray:
    """Where the output has no data, [N, 1, C, H, W]: under LR cells missing in the input
    (the targets' own LR field); with predictors, nowhere (missing inputs are filled)."""
    if spec.mode != "own":
        n, (h, w) = len(lr), lr.shape[-2:]
        H, W = (h, w) if spec.mode == "regrid" else (h * s, w * s)
        return np.zeros((n, 1, len(spec.targets), H, W), bool)
    return np.repeat(np.repeat(np.isnan(lr), s, axis=2), s, axis=3)[:, None]


def check_downscale_target(
    output: str | os.PathLike[str], checkpoint: str | os.PathLike[str],
    input_path: str | os.PathLike[str], target_grid: str | os.PathLike[str] | None,
    model: Any = None, *, folder: bool = False,
) -> None:
    """The output is none of the files read (checkpoint, input, target grid and, once the model
    is loaded, the regression checkpoint named in its config), nor the current/home folder."""
    sources = [Source("--checkpoint", checkpoint), Source("--input", input_path, data=True),
               Source("--target-grid", target_grid, data=True)]
    if model is not None:
        regression = (saved_config(model).get("diffusion") or {}).get("regression_checkpoint")
        sources.append(Source(f"diffusion.regression_checkpoint of {checkpoint}", regression))
    check_target(output, "output", "--output", sources, folder=folder)  # folder: Zarr


def saved_config(model: Any) -> Mapping[str, Any]:
    """The run config saved in a loaded model's checkpoint (``model.meta``), {} if none."""
    meta = getattr(model, "meta", None)
    cfg = meta.get("config") if isinstance(meta, Mapping) else getattr(meta, "config", None)
    return cfg if isinstance(cfg, Mapping) else {}


OUT_OF_RANGE = 30.0  # input values this many training standard deviations from the mean


def out_of_range_input(
    fields: np.ndarray, missing: np.ndarray, prep: Prepared, normalizer: Any,
    channels: Sequence[str], units: Sequence[str], input_path: str | os.PathLike[str],
    offset: int = 0,
) -> str | None:
    """When the output ``fields [N, M, C, H, W]`` is non-finite for an input field whose values
    lie far outside the training data (:data:`OUT_OF_RANGE` standard deviations), the message
    naming that field (its global index: ``offset`` + the index in ``fields``), its time and
    channel; None when no such field explains it."""
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
        f"input {input_path}: field {k + offset} ({when}) has {channels[c]} values up to "
        f"{extreme:.3g}{unit}, {z[k, c]:.3g} standard deviations from the training data (mean "
        f"{mean[c]:.4g}, std {std[c]:.3g}): the model produced non-finite values for it; "
        "nothing written: check that field (units, fill values) or leave it out"
    )


def progress_bar(total_pairs: int, show: bool):  # -> (progress callback, close)
    """A tqdm bar over (field, member) x network evaluations, fed by the samplers' callback
    (None and a no-op close when not ``show``)."""
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
