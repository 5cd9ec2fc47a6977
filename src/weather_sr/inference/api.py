"""The Python API: ``weather_sr.load_model`` and ``weather_sr.downscale`` on ``xarray`` data.

The same steps as ``weather-sr downscale`` (:mod:`weather_sr.inference.downscale`: input checks,
conditioning, sampling, the CF Dataset), without files: the CLI writes the Dataset that
:func:`downscale` returns. Defaults are the library's (:mod:`weather_sr.core.sampling`).

    import xarray as xr
    import weather_sr

    model = weather_sr.load_model("runs/sample/checkpoints/best.pt")
    lr = xr.open_dataset("lr.nc")
    ens = weather_sr.downscale(lr, model, members=8, seed=0)   # xarray.Dataset
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch
import xarray as xr

from weather_sr.core.sampler_defaults import (
    DEFAULT_COHERENCE,
    DEFAULT_CONSTRAINT,
    DEFAULT_PRECISION,
)
from weather_sr.core.sampling import DEFAULT_ETA, DEFAULT_SAMPLER, DEFAULT_STEPS
from weather_sr.core.spectral_options import DEFAULT_COLOUR
from weather_sr.devices import select_device
from weather_sr.inference.domain import parse_domain
from weather_sr.inference.downscale import (
    check_model,
    consistency_tally,
    downscale_prepared,
    progress_bar,
)
from weather_sr.inference.ensemble import SamplingOptions, noise_chain, previous_state
from weather_sr.inference.netcdf import cf_encoding
from weather_sr.inference.prepare import dataset_fields, prepare_fields
from weather_sr.inference.stream import check_chunk_fields, chunks
from weather_sr.model import loading
from weather_sr.model.downscaling_model import DownscalingModel

__all__ = ["downscale", "load_model"]


def load_model(path: str | os.PathLike[str], device: str | torch.device = "cpu"
               ) -> DownscalingModel:
    """A trained checkpoint (``.pt`` of ``weather-sr train``) as an eval-mode model on ``device``
    (``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"mps"``), with its EMA weights."""
    return loading.load_model(path, select_device(str(device)))


def downscale(
    ds: xr.Dataset, checkpoint: str | os.PathLike[str] | DownscalingModel, *, members: int = 8,
    sampler: str = DEFAULT_SAMPLER, steps: int = DEFAULT_STEPS, eta: float = DEFAULT_ETA,
    seed: int = 0, coarsen: bool = False, tile: int | None = None, overlap: int = 32,
    batch_size: int = 8, device: str | torch.device = "auto", progress: bool = False,
    precision: str = DEFAULT_PRECISION, chunk_fields: int = 8, allow_out_of_range: bool = False,
    noise_colour: str = DEFAULT_COLOUR, constrain: str = DEFAULT_CONSTRAINT,
    domain: Sequence[float] | str | None = None, coherent: bool | str | None = None,
    rho: float | None = None,
) -> xr.Dataset:
    """Sample an HR ensemble for the LR fields of ``ds`` (HR fields with ``coarsen=True``); a
    regression checkpoint gives its deterministic field (mean mode).

    Args:
        ds: the checkpoint's variables (names and units as in training) on a lat/lon grid, with
            an optional time (and member) dimension; a lazy Dataset (``xr.open_dataset``,
            ``xr.open_zarr``, dask) is read ``chunk_fields`` fields at a time.
        checkpoint: a checkpoint path or a model of :func:`load_model` (moved to ``device``).
        members, sampler, steps, eta, seed, tile, overlap, batch_size, precision, chunk_fields:
            as the CLI's options of the same names; each (field, member) has its own seed, so
            values depend neither on batching nor on chunking.
        allow_out_of_range: input values outside the training range (more than 10 training
            standard deviations off, or negative kelvin) warn instead of raising, as the CLI's
            ``--allow-out-of-range`` (:mod:`weather_sr.data.ranges`).
        noise_colour: ``--noise-colour``: ``white``, or ``power:Q`` for coloured-noise sampling
            with a stochastic sampler (docs/method.md §9).
        constrain: ``--constrain``: ``none``, ``lr-mean`` (every member's block means equal to
            the LR input) or ``lr-mean-x0`` (also the x0 estimate at every step;
            docs/method.md §8).
        domain: ``--domain``: (y0, y1, x0, x1), for a model whose predictors are regridded
            from their own grid: the part of its static fields' domain (or training grid) to
            downscale (:mod:`weather_sr.inference.domain`).
        coherent, rho: ``--coherent``, ``--rho``: None (``auto``), True (``on``), False
            (``off``) or a name (``noise``: each member's initial noise correlated between
            consecutive times by ``rho``, None: the checkpoint's measured value; ``ar``: each
            member conditioned on its own previous field; :mod:`weather_sr.inference.coherence`);
            the members run over all of ``ds``'s fields in order, whatever ``chunk_fields``.
    Returns:
        The Dataset ``weather-sr downscale`` writes for the same arguments: one variable per
        channel ``[time, member, lat, lon]`` (a regression checkpoint: its deterministic field
        ``[time, lat, lon]``, the sampling options unused) with CF attributes and the
        provenance attributes (with the consistency with the LR input of all the fields,
        :mod:`weather_sr.inference.lr_consistency`).
    Raises:
        UserError (a ValueError): a bad option, or a Dataset without the checkpoint's variables or
        with other units.
    """
    check_chunk_fields(chunk_fields)
    bounds = parse_domain(domain, "domain")
    # the one validator of sampling options, as for the CLI
    options = SamplingOptions(sampler=sampler, steps=steps, eta=eta, seed=seed,
                              members=members, batch_size=batch_size, tile=tile, overlap=overlap,
                              precision=precision, noise_colour=noise_colour,
                              constrain=constrain, coherent=_coherence(coherent), rho=rho)
    dev = select_device(str(device))
    path: str | os.PathLike[str] | None
    if isinstance(checkpoint, DownscalingModel):
        model, path = checkpoint.to(dev).eval(), None
    else:
        model, path = loading.load_model(checkpoint, dev), checkpoint
    meta = check_model(model, path or "(in memory)")
    where = "input Dataset"
    fields = dataset_fields(ds, meta, coarsen_input=coarsen, where=where,
                            chunk_fields=chunk_fields, allow_out_of_range=allow_out_of_range)
    total = int(fields.sizes["sample"])
    bar, close = progress_bar(total * members, progress)  # one bar over all chunks
    parts, tally = [], consistency_tally(meta)
    chain = noise_chain(model, options, fields["time"].values)
    state = previous_state(model, options, fields["time"].values)
    try:
        for a, b in chunks(total, chunk_fields):
            prep = prepare_fields(fields.isel(sample=slice(a, b)).load(), meta,
                                  coarsen_input=coarsen, target_grid=None, where=where,
                                  source=ds, domain=bounds)
            parts.append(downscale_prepared(model, prep, options, checkpoint=path, device=dev,
                                            coarsen_input=coarsen, input_name=_input_name(ds),
                                            argv=[], field_offset=a, progress=bar,
                                            tally=tally, chain=chain, state=state))
    finally:
        close()
    first = parts[0][meta.channels[0]].dims[0]  # time (or sample, with input members)
    out = parts[0] if len(parts) == 1 else xr.concat(parts, dim=first, data_vars="minimal",
                                                     coords="minimal", compat="override",
                                                     combine_attrs="override")
    call = _call(members, sampler, steps, eta, seed, coarsen, tile, overlap, batch_size,
                 precision, chunk_fields, dev, allow_out_of_range, noise_colour, constrain,
                 bounds, coherent, rho)
    tally.apply(out)  # of all the fields (the first part's attributes were kept)
    out.attrs["command_line"] = call
    out.attrs["history"] = f"{out.attrs['date_created']}: {call}"
    cf_encoding(out)  # so that out.to_netcdf(...) writes what the CLI writes
    return out


def _coherence(coherent: bool | str | None) -> str:
    """The ``coherent`` argument as :class:`SamplingOptions` takes it."""
    if coherent is None:
        return DEFAULT_COHERENCE
    if isinstance(coherent, bool):
        return "on" if coherent else "off"
    return coherent


def _input_name(ds: xr.Dataset) -> str:
    """Where the Dataset came from (its file, when xarray recorded one) for the provenance."""
    source: Any = ds.encoding.get("source")
    return str(source) if source else "(xarray.Dataset)"


def _call(*values: Any) -> str:
    """The call, as the provenance's command line (``history``, ``command_line``)."""
    names = ("members", "sampler", "steps", "eta", "seed", "coarsen", "tile", "overlap",
             "batch_size", "precision", "chunk_fields", "device", "allow_out_of_range",
             "noise_colour", "constrain", "domain", "coherent", "rho")
    args = ", ".join(f"{n}={str(v) if isinstance(v, torch.device) else v!r}"
                     for n, v in zip(names, values, strict=True))
    return f"weather_sr.downscale(ds, checkpoint, {args})"
