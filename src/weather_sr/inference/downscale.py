"""File to file: read LR (or HR to coarsen) fields, check them against the checkpoint, sample an
ensemble on the HR grid with :mod:`weather_sr.inference.ensemble`, build the CF Dataset with
:mod:`weather_sr.inference.netcdf`; :func:`downscale` does this chunk by chunk of fields and
writes each chunk at once (NetCDF or Zarr, :mod:`weather_sr.inference.stream`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import xarray as xr

from weather_sr.devices import select_device
from weather_sr.errors import UserError
from weather_sr.inference.coherence import NoiseChain, PreviousState
from weather_sr.inference.constraint import target_index, target_lr
from weather_sr.inference.domain import Domain
from weather_sr.inference.ensemble import (
    SamplingOptions,
    is_mean,
    noise_chain,
    options_for,
    previous_state,
    sample_ensemble,
)
from weather_sr.inference.lr_consistency import ConsistencyTally
from weather_sr.inference.netcdf import (
    build_dataset,
    check_finite,
    provenance,
)
from weather_sr.inference.precision import resolve_precision
from weather_sr.inference.prepare import (
    Prepared,
    checked_inputs,
    feature_grid,
    input_variables,
    opened,
    prepare_fields,
    with_scalars,
)
from weather_sr.lock import lock_output
from weather_sr.model.meta import CheckpointMeta
from weather_sr.targets import Source, check_target


def downscale(
    checkpoint: str | os.PathLike[str], input_path: str | os.PathLike[str],
    output: str | os.PathLike[str], options: SamplingOptions, *, coarsen_input: bool = False,
    device: str = "auto", overwrite: bool = False,
    target_grid: str | os.PathLike[str] | None = None, argv: Sequence[str] | None = None,
    show_progress: bool = True, chunk_fields: int = 8, output_format: str | None = None,
    resume: bool = False, allow_out_of_range: bool = False, domain: Domain | None = None,
) -> Path:
    """The whole ``weather-sr downscale``; returns the output path.

    Works through the lazily opened input ``chunk_fields`` fields at a time: each chunk is read,
    checked (:func:`prepare_fields`), sampled with the same :func:`downscale_prepared` as the
    Python API (:func:`weather_sr.downscale`, field indices global: the seeds do not depend on
    the chunks) and written at once by :mod:`weather_sr.inference.stream` (NetCDF, or Zarr with
    ``output_format="zarr"`` or an output ending in ``.zarr``; ``resume``: continue a Zarr output's
    partial store). Peak memory does not grow with the number of fields. Input values outside
    the training range are an error (a warning with ``allow_out_of_range``;
    :mod:`weather_sr.data.ranges`). ``domain``: with predictors regridded from their own grid,
    the part of the domain to downscale (:mod:`weather_sr.inference.domain`).

    Under ``torchrun`` every rank reads and checks the same input and samples its share of each
    chunk (:mod:`weather_sr.inference.ensemble`); rank 0 alone writes, after every rank has
    checked the output path (a barrier), and returns the path.
    """
    from weather_sr import distributed
    from weather_sr.inference import partial, stream
    from weather_sr.inference.netcdf import sha256_file
    from weather_sr.model.loading import load_model

    stream.check_chunk_fields(chunk_fields)
    fmt = stream.output_format(output, output_format)
    folder = fmt == "zarr"
    check_downscale_target(output, checkpoint, input_path, target_grid, folder=folder)
    rank, _ = distributed.current()
    # one writer per output (rank 0 writes): a second run to it exits at once
    with lock_output(output, "output", rank == 0):
        partial.check_start(output, fmt, overwrite=overwrite, resume=resume)  # before sampling
        dev = select_device(device)
        model = load_model(checkpoint, dev)
        check_downscale_target(output, checkpoint, input_path, target_grid, model, folder=folder)
        meta = check_model(model, checkpoint)
        fields = read_input(input_path, meta, coarsen_input=coarsen_input,
                            chunk_fields=chunk_fields, allow_out_of_range=allow_out_of_range)
        total = int(fields.sizes["sample"])
        times = fields["time"].values
        settings = partial.run_settings(
            checkpoint_sha256=sha256_file(checkpoint), options=options,
            precision=resolve_precision(options.precision, dev), input_path=input_path,
            times=times, coarsen=coarsen_input, target_grid=target_grid,
            domain=domain) if folder else None
        done = partial.resume_point(output, settings or {}) if resume else 0
        tally = consistency_tally(meta)  # the consistency with the LR input, over all chunks
        distributed.barrier()  # every rank has checked the output before rank 0 writes to it
        bar: list[tuple[Any, Callable[[], None]]] = []

        def progress(i: int, n_steps: int) -> None:  # the bar appears with the first evaluation
            if not bar:
                bar.append(progress_bar((total - done) * options.members,
                                         show_progress and rank == 0))
            if bar[0][0] is not None:
                bar[0][0](i, n_steps)

        chain = noise_chain(model, options, times)  # carried over the chunks (coherence)
        state = previous_state(model, options, times)
        if state is not None and done:  # a resumed run continues from the fields written
            partial.read_back(output, state, list(meta.channels), done)
        with opened(input_path) as source:

            def chunk(a: int, b: int) -> xr.Dataset:
                prep = prepare_fields(fields.isel(sample=slice(a, b)).load(), meta,
                                      coarsen_input=coarsen_input, target_grid=target_grid,
                                      where=f"input {input_path}", source=source,
                                      domain=domain)
                return downscale_prepared(model, prep, options, checkpoint=checkpoint, device=dev,
                                          coarsen_input=coarsen_input, input_name=str(input_path),
                                          argv=argv, field_offset=a, progress=progress,
                                          tally=tally, chain=chain, state=state)

            try:
                if rank == 0:
                    return stream.write_chunks(
                        chunk, total, output, fmt=fmt, chunk_fields=chunk_fields,
                        overwrite=overwrite, time_enc=stream.time_encoding(times),
                        settings=settings, done=done, tally=tally)
                for a, b in stream.chunks(total, chunk_fields, start=done):
                    chunk(a, b)  # this rank's share of the sampling; rank 0 writes
                return Path(output)
            finally:
                if bar:
                    bar[0][1]()


def read_input(input_path: str | os.PathLike[str], meta: CheckpointMeta, *, coarsen_input: bool,
               chunk_fields: int, allow_out_of_range: bool) -> xr.DataArray:
    """The input file's fields for the checkpoint, lazily: checked against it
    (:func:`checked_inputs`, predictors then in the model's units), their values checked
    ``chunk_fields`` at a time (Inf, all-NaN channels, the training range)."""
    from weather_sr import data
    from weather_sr.inference import stream

    fields = data.open_fields(input_path, input_variables(meta, coarsen_input)[0])
    files = list(fields.attrs.get("source") or [input_path])
    where = f"data file {files[0]}" + (f" (+{len(files) - 1} more)" if len(files) > 1 else "")
    fields = checked_inputs(fields, meta, where, coarsen_input=coarsen_input)
    if meta.condition_spec().scalar_names:
        with data.open_dataset(input_path)[0] as ds:  # the scalars are read at once
            fields = with_scalars(fields, ds, meta, where)
    stream.check_values_in_chunks(fields, chunk_fields, where,
                                  meta.condition_spec().input_normalizer,
                                  allow_out_of_range=allow_out_of_range)
    if int(fields.sizes["sample"]) == 0:
        raise UserError(f"input {input_path}: no fields to downscale")
    return fields


def check_model(model: Any, checkpoint: str | os.PathLike[str]) -> CheckpointMeta:
    """The metadata of ``model`` (a diffusion model: an ensemble; a regression model: its
    deterministic field, :func:`~weather_sr.inference.ensemble.is_mean`), with what
    downscaling needs (older files may lack it); UserError when it cannot downscale."""
    meta = getattr(model, "meta", None)
    if meta is None:
        raise UserError(f"checkpoint {checkpoint} has no metadata: it cannot downscale")
    meta.require("normalizer", "scale_factor", to="downscale")
    return meta


SAMPLING_ATTRS = ("sampler", "steps", "eta", "seed", "members", "noise_colour")  # not in mean mode


def consistency_tally(meta: CheckpointMeta) -> ConsistencyTally:
    """The empty :class:`ConsistencyTally` of an output of ``meta``'s model: its variables, the
    block mean that made its LR, measured unless its inputs are not the targets' LR fields."""
    return ConsistencyTally(list(meta.channels), int(meta.scale_factor or 0),
                            area_weighted=meta.config.data.area_weighted,
                            measured=target_index(meta.condition_spec()) is not None)


def downscale_prepared(
    model: Any, prep: Prepared, options: SamplingOptions, *,
    checkpoint: str | os.PathLike[str] | None, device: torch.device, coarsen_input: bool,
    input_name: str, argv: Sequence[str] | None = None, field_offset: int = 0,
    progress: Callable[[int, int], None] | None = None, tally: ConsistencyTally | None = None,
    chain: NoiseChain | None = None, state: PreviousState | None = None,
) -> xr.Dataset:
    """Sample the ensemble for checked input ``prep`` and build the CF Dataset (values, grid,
    attributes) that ``weather-sr downscale`` writes and :func:`weather_sr.downscale` returns.

    ``checkpoint``: the file the model came from (its SHA-256 goes into the provenance); None for
    a model built in memory (no file to hash: ``checkpoint_sha256`` is ""). ``field_offset``: the
    global index of ``prep``'s first field (seeds, messages); ``progress``: the callback of the
    caller's bar (:func:`progress_bar`), if any. ``tally``: the consistency with the LR input
    of the fields so far, to which these are added (:mod:`weather_sr.inference.lr_consistency`;
    None: these fields alone); the Dataset carries its attributes after them. ``chain``: the
    run's :func:`~weather_sr.inference.ensemble.noise_chain` (``--coherent noise``), kept from
    one chunk to the next (None: a new one); ``state``: its
    :func:`~weather_sr.inference.ensemble.previous_state` (``--coherent ar``), likewise.
    """
    from weather_sr import data
    from weather_sr.core.sampling import network_evaluations

    meta = check_model(model, checkpoint or "(in memory)")
    options = options_for(model, options, periodic=prep.periodic)
    normalizer = meta.make_normalizer()
    spec = meta.condition_spec().on_grid(prep.grid.lat, prep.grid.lon, f"input {input_name}")
    s = int(meta.scale_factor or 0)
    lat, lon = feature_grid(prep, meta) if spec.features else (None, None)
    cond = data.prepare_condition(prep.lr, spec, s, meta.interpolation or "bicubic",
                                  periodic=prep.periodic, lat=lat, lon=lon, times=prep.times,
                                  scalars=prep.scalars)
    lr = target_lr(prep.lr, spec)  # the targets' LR in physical units (None: regridded inputs)
    weights = np.asarray(prep.grid.lat) if meta.config.data.area_weighted else None
    missing = _missing(prep.lr, spec, s)
    x = sample_ensemble(model, cond, options, device=device, progress=progress,
                        field_offset=field_offset, lr=lr, lat=weights, chain=chain, state=state,
                        missing=missing)
    fields = normalizer.denormalise(x.double()).float().numpy()  # [N, M, C, H, W] physical
    check_finite(fields, list(meta.channels), ~missing)
    fields = np.where(missing, np.nan, fields)  # no data where the input had none
    tally = consistency_tally(meta) if tally is None else tally
    tally.update(lr, fields, weights)
    mean = is_mean(model)
    extra = {"input": input_name, "downscaling_factor": s, "coarsened_input": int(coarsen_input),
             "output_mode": "mean" if mean else "ensemble",
             # denoiser calls per member actually made (ancestral: all T, not --steps)
             "network_evaluations": 1 if mean else network_evaluations(
                 options.sampler, model.schedule, options.steps),
             "precision": "float32" if mean else resolve_precision(options.precision, device),
             "noise_colour": options.noise_colour,
             "constrain": options.constrain,
             **({} if mean else {"coherent": options.coherent}),
             **({} if chain is None else {"coherent_rho": [float(r) for r in chain.rho.flatten()]}),
             "forward_noise": meta.config.diffusion.noise,
             "spectral_schedule": meta.config.diffusion.spectral_schedule}
    attrs = provenance(checkpoint=checkpoint if checkpoint is not None else os.devnull,
                       sampler=options.sampler, steps=options.steps, eta=options.eta,
                       seed=options.seed, members=options.members, tile=options.tile,
                       overlap=options.overlap, argv=argv, extra=extra,
                       model="regression model: deterministic mean" if mean else
                       "conditional diffusion model")
    if mean:  # no sampling: no sampler, seed or members to record
        attrs = {k: v for k, v in attrs.items() if k not in SAMPLING_ATTRS}
    if checkpoint is None:  # the file it was loaded from, if known, but not hashed again
        source = str(getattr(meta, "source", "") or "")
        attrs.update(checkpoint=source if source != "checkpoint" else "(in memory)",
                     checkpoint_sha256="")
    ds = build_dataset(fields, prep.grid, channels=list(meta.channels),
                       units=list(meta.units or []) or [""] * fields.shape[2],
                       long_names=prep.long_names, standard_names=prep.standard_names,
                       times=prep.times, input_members=prep.input_members, attrs=attrs,
                       members=not mean)
    for name, value in (prep.aux or {}).items():
        if name.startswith("grid_mapping:"):
            ds[name.split(":", 1)[1]] = value
            for var in meta.channels:
                ds[var].attrs["grid_mapping"] = name.split(":", 1)[1]
        else:
            ds = ds.assign_coords({name: value.drop_vars(list(value.coords), errors="ignore")})
    return tally.apply(ds)


def _missing(lr: np.ndarray, spec: Any, s: int) -> np.ndarray:
    """Where the output has no data, [N, 1, C, H, W]: under the input cells that are missing,
    channel by channel for the targets' own LR field; for predictors, in every channel under
    a cell where a predictor is missing that had a value in every training field (as with the
    own LR field, the network sees a filled value there: what it makes of it is no output;
    where training too had gaps, it learned from filled values). Older checkpoints, which do
    not record where training had values: under every missing predictor cell."""
    nan = np.isnan(lr)  # [N, Ci, h, w]: on the LR grid, or the HR grid when regridded
    if spec.mode != "own":
        valid = spec.input_valid
        if valid is not None and valid.shape == nan.shape[1:]:
            nan &= valid[None]
        nan = np.repeat(nan.any(axis=1, keepdims=True), len(spec.targets), axis=1)
    if spec.mode != "regrid":
        nan = np.repeat(np.repeat(nan, s, axis=2), s, axis=3)
    return nan[:, None]


def check_downscale_target(
    output: str | os.PathLike[str], checkpoint: str | os.PathLike[str],
    input_path: str | os.PathLike[str], target_grid: str | os.PathLike[str] | None,
    model: Any = None, *, folder: bool = False,
) -> None:
    """The output (and a Zarr output's partial store) is none of the files read (checkpoint,
    input, target grid and, once the model is loaded, the paths its config names:
    :func:`checkpoint_sources`), nor the current/home folder."""
    from weather_sr.inference.partial import partial_path

    sources = [Source("--checkpoint", checkpoint), Source("--input", input_path, data=True),
               Source("--target-grid", target_grid, data=True)]
    if model is not None:
        sources += checkpoint_sources(checkpoint, model)
    writes = [("partial output", partial_path(output))] if folder else []
    check_target(output, "output", "--output", sources, folder=folder, writes=writes)


def checkpoint_sources(checkpoint: str | os.PathLike[str], model: Any) -> list[Source]:
    """Every path the config saved in a loaded model's checkpoint names (training data, LR
    data, predictors, static fields, regression checkpoint): an output must not touch them,
    whether or not this command reads them."""
    from weather_sr.data.sample import shipped_data_path

    meta = getattr(model, "meta", None)
    if meta is None:  # a model built in memory names no files
        return []
    data, of = meta.config.data, f"of {checkpoint}"
    return [
        Source(f"data.path {of}", shipped_data_path(data.path), data=True),
        Source(f"data.lr_path {of}", data.lr_path, data=True),
        *(Source(f"data.{key}.path {of}", None if part is None else part.path, data=True)
          for key, part in (("inputs", data.inputs), ("static", data.static))),
        Source(f"diffusion.regression_checkpoint {of}",
               meta.config.diffusion.regression_checkpoint),
    ]


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
