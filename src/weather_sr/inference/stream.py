"""Streamed output of ``weather-sr downscale``: the input is worked through in chunks of fields
and every chunk is written when it is done, so memory does not grow with the number of fields.

NetCDF. The first chunk creates the temporary file of :func:`weather_sr.atomic.atomic_output`
(netCDF4; the first dimension, ``time``, or ``sample`` for inputs with members, is unlimited); the
later chunks are appended to it with netCDF4, and the file is renamed to the output when the last
one is in. Its values, coordinates and attributes are those of the whole Dataset written at once
(the time units are chosen from the whole time axis). An interrupted run leaves nothing at the
output path.

Zarr. The chunks are appended to the hidden partial store ``.NAME.partial``, renamed to ``NAME``
when complete; its rules (resume, settings, checks) are :mod:`weather_sr.inference.partial`'s.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from weather_sr.atomic import (
    atomic_output,
    commit,
    create_folder,
    remove_folder,
)
from weather_sr.data.normalise import Normalizer
from weather_sr.errors import UserError
from weather_sr.inference.lr_consistency import GLOBAL, ConsistencyTally
from weather_sr.inference.netcdf import cf_encoding
from weather_sr.inference.partial import (
    KIND,
    SETTINGS,
    TALLY,
    check_complete,
    partial_path,
    quiet_zarr,
    saved_tally,
)
from weather_sr.write_errors import io_errors

PathLike = str | os.PathLike[str]
FORMATS = ("netcdf", "zarr")


def output_format(output: PathLike, fmt: str | None) -> str:
    """``fmt``, or by the output's name: Zarr for a name ending in ``.zarr``, else NetCDF."""
    if fmt is None:
        return "zarr" if os.fspath(output).rstrip("/").endswith(".zarr") else "netcdf"
    if fmt not in FORMATS:
        raise UserError(f"--format {fmt!r}: choose one of {', '.join(FORMATS)}")
    return fmt


def check_chunk_fields(value: Any) -> None:
    """UserError naming ``--chunk-fields`` unless ``value`` is a positive integer."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UserError(f"--chunk-fields {value!r}: give a positive integer")


def chunks(n: int, size: int, start: int = 0) -> list[tuple[int, int]]:
    """``[start, stop)`` ranges of at most ``size`` fields covering ``start .. n - 1``."""
    return [(a, min(a + size, n)) for a in range(start, n, max(1, size))]


def check_values_in_chunks(fields: xr.DataArray, size: int, where: str,
                           normalizer: Normalizer | None = None, *,
                           allow_out_of_range: bool = False) -> None:
    """:func:`weather_sr.data.reading.check_values` over the lazy input, ``size`` fields at a
    time: Inf or beyond float32 in any field, and a channel entirely missing in all of them;
    with ``normalizer`` (the checkpoint's, for these input channels in order) also the
    training range (:func:`weather_sr.data.ranges.check_input_range`)."""
    from weather_sr.data.ranges import check_input_range
    from weather_sr.data.reading import check_values

    channels = [str(c) for c in fields["channel"].values]
    times = fields["time"].values if "time" in fields.coords else None
    seen = np.zeros(len(channels), bool)
    for a, b in chunks(int(fields.sizes["sample"]), size):
        values = np.asarray(fields.isel(sample=slice(a, b)).values)
        finite = np.isfinite(values).any(axis=(0, 2, 3))
        some = finite | np.isinf(values).any(axis=(0, 2, 3))  # not all NaN in this chunk
        seen |= finite
        if some.any():
            label = where if a == 0 else f"{where} (fields {a}-{b - 1})"
            check_values(values[:, some], [c for c, k in zip(channels, some, strict=True) if k],
                         label)
        if normalizer is not None:  # the channels are the normaliser's (checked_inputs)
            check_input_range(values, list(fields.attrs.get("units") or []), normalizer, where,
                              names=channels, times=None if times is None else times[a:b],
                              offset=a, allow=allow_out_of_range)
    check_values(np.where(seen, 0.0, np.nan).reshape(1, -1, 1, 1), channels, where)


def time_encoding(times: np.ndarray | None) -> dict[str, Any]:
    """Units and calendar that xarray chooses for the whole time axis (datetimes only), so that
    a file written in chunks encodes time as one written at once."""
    if times is None or not np.issubdtype(np.asarray(times).dtype, np.datetime64):
        return {}
    whole = xr.Variable(("time",), np.asarray(times), encoding={"dtype": np.dtype("float64")})
    attrs = xr.conventions.encode_cf_variable(whole, name="time").attrs  # as to_netcdf does
    return {k: attrs[k] for k in ("units", "calendar") if k in attrs}


def _encode(ds: xr.Dataset, time_enc: Mapping[str, Any]) -> str:
    """CF-encode ``ds`` in place (time in the whole axis's units); its dimension along the
    fields, the one chunks are appended on."""
    cf_encoding(ds)
    if "time" in ds.variables:
        ds.variables["time"].encoding.update(time_enc)
    return "sample" if "sample" in ds.dims else "time"


class NetCDFStream:
    """Chunks of the output Dataset into one NetCDF4 file (the temporary file of the output)."""

    def __init__(self, path: Path, time_enc: Mapping[str, Any]) -> None:
        self.path, self.time_enc, self.length = path, dict(time_enc), 0

    def write(self, ds: xr.Dataset) -> None:
        first = _encode(ds, self.time_enc)
        n = int(ds.sizes[first])
        if self.length == 0:
            for var in ds.data_vars.values():
                if var.dims[:1] == (first,):  # one field per HDF5 chunk
                    var.encoding["chunksizes"] = (1, *var.shape[1:])
            ds.to_netcdf(self.path, engine="netcdf4", format="NETCDF4", unlimited_dims=[first])
        import netCDF4

        with netCDF4.Dataset(self.path, "a") as nc:
            if self.length == 0 and "units" in self.time_enc and "time" in nc.variables:
                # xarray rewrites given units ("... 00:00:00" -> "..."): the words it infers
                nc.variables["time"].setncattr("units", self.time_enc["units"])
            for name, var in ds.variables.items():
                if self.length and first in var.dims:
                    encoded = xr.conventions.encode_cf_variable(var, name=str(name))
                    nc.variables[str(name)][self.length : self.length + n] = encoded.values
        self.length += n

    def finish(self, tally: ConsistencyTally | None) -> None:
        """Set the consistency attributes of all the fields written (before the commit)."""
        if tally is None:
            return
        import netCDF4

        with netCDF4.Dataset(self.path, "a") as nc:
            _set_tally(nc.setncattr, {name: nc.variables[name] for name in tally.channels},
                       tally)


def _set_tally(set_global: Callable[[str, Any], None], variables: Mapping[str, Any],
               tally: ConsistencyTally) -> None:
    """Write ``tally``'s attributes through ``set_global(name, value)`` and the variables'
    ``setncattr`` / ``attrs`` (netCDF4 variables or zarr arrays)."""
    set_global(GLOBAL, tally.global_attr())
    for name, attrs in tally.variable_attrs().items():
        var = variables[name]
        for key, value in attrs.items():
            if hasattr(var, "setncattr"):
                var.setncattr(key, value)
            else:
                var.attrs[key] = value


class ZarrStream:
    """Chunks of the output Dataset appended to the partial store, renamed when complete."""

    def __init__(self, output: Path, settings: Mapping[str, Any], time_enc: Mapping[str, Any],
                 *, done: int, total: int, overwrite: bool,
                 tally: ConsistencyTally | None = None) -> None:
        self.output, self.partial = output, partial_path(output)
        self.settings, self.time_enc = dict(settings), dict(time_enc)
        self.done, self.total, self.overwrite = done, total, overwrite
        self.tally = tally  # its sums are saved with the fields done
        self.attrs: dict[str, Any] | None = None
        self.created = False  # this run created the partial store
        if done:  # resumed: the attributes of the first run (its provenance) stay
            with quiet_zarr(), xr.open_zarr(self.partial) as existing:
                self.attrs = dict(existing.attrs)

    def write(self, ds: xr.Dataset) -> None:
        first = _encode(ds, self.time_enc)
        for var in ds.data_vars.values():
            var.encoding = {"_FillValue": np.float32(np.nan), "chunks": (1, *var.shape[1:])}
        with quiet_zarr(), io_errors(self.partial, "partial output"):
            if self.attrs is None:
                self._create()
                # every chunk stored, all-NaN ones too: a chunk missing is then a loss, found by
                # check_zarr_chunks before the store is resumed or committed
                ds.to_zarr(self.partial, mode="a", zarr_format=2, consolidated=True,
                           write_empty_chunks=True)
                self.attrs = dict(ds.attrs)
            else:
                ds.attrs = dict(self.attrs)
                ds.to_zarr(self.partial, append_dim=first, zarr_format=2, consolidated=True,
                           write_empty_chunks=True)
            self._save(self.done + int(ds.sizes[first]))  # recorded, then counted as complete
            self.done += int(ds.sizes[first])

    def _create(self) -> None:
        """A new partial store (an old one, checked to be weather-sr's, is discarded now)."""
        if os.path.lexists(self.partial):
            remove_folder(self.partial)
        create_folder(self.partial, KIND, "partial output", "--output")
        self.created = True
        self._save(0)

    def _save(self, done: int) -> None:
        tmp = self.partial / f"{SETTINGS}.tmp"
        tally = {} if self.tally is None else {TALLY: self.tally.state()}
        tmp.write_text(json.dumps({**self.settings, "fields_done": done, **tally}, indent=1))
        os.replace(tmp, self.partial / SETTINGS)

    def finish(self) -> Path:
        """Put the complete store at the output path (see :func:`weather_sr.atomic.commit`),
        once every chunk of it is found on disk."""
        check_complete(self.partial)
        with io_errors(self.partial, "partial output"):
            self._set_tally()
            (self.partial / SETTINGS).unlink(missing_ok=True)
        return commit(self.partial, self.output, overwrite=self.overwrite, what="output",
                      marker=KIND, option="--output")

    def _set_tally(self) -> None:
        """The consistency attributes of all the fields, into the store's metadata."""
        if self.tally is None:
            return
        import zarr

        with quiet_zarr():
            group = zarr.open_group(str(self.partial), mode="r+", zarr_format=2)
            _set_tally(group.attrs.__setitem__,
                       {name: group[name] for name in self.tally.channels}, self.tally)
            zarr.consolidate_metadata(str(self.partial), zarr_format=2)

    def stopped(self) -> str | None:
        """After a failure: keep the partial store if a chunk is complete (and say so), else
        remove it."""
        if self.done == 0:
            if self.created:
                remove_folder(self.partial)
            return None
        return (f"the {self.done} of {self.total} fields completed are kept in {self.partial}: "
                "continue with --resume (the same options), or start again with --overwrite")


def write_chunks(
    make: Callable[[int, int], xr.Dataset], total: int, output: PathLike, *, fmt: str,
    chunk_fields: int, overwrite: bool, time_enc: Mapping[str, Any],
    settings: Mapping[str, Any] | None = None, done: int = 0,
    tally: ConsistencyTally | None = None,
) -> Path:
    """Write ``make(a, b)`` (the output Dataset of fields ``a .. b - 1``) for the chunks of
    ``done .. total - 1`` to ``output`` as ``fmt``; the path written. ``tally``: the consistency
    with the LR input that ``make`` adds its fields to; its attributes, of all the fields, are
    set when the last chunk is in, and a Zarr partial store keeps its sums (resumed runs)."""
    target = Path(output)
    if fmt == "netcdf":
        with atomic_output(target, overwrite=overwrite, what="output", option="--output",
                           checked=True) as tmp:
            writer = NetCDFStream(tmp, time_enc)
            for a, b in chunks(total, chunk_fields):
                writer.write(make(a, b))
            writer.finish(tally)
        return target
    if done and tally is not None:
        tally.restore(saved_tally(target), f"{partial_path(target) / SETTINGS}")
    store = ZarrStream(target, settings or {}, time_enc, done=done, total=total,
                       overwrite=overwrite, tally=tally)
    try:
        for a, b in chunks(total, chunk_fields, start=done):
            store.write(make(a, b))
    except UserError as error:
        kept = store.stopped()
        if kept is None:
            raise
        raise _with(error, kept) from None
    except BaseException:
        kept = store.stopped()
        if kept is not None:
            warnings.warn(f"stopped: {kept}", UserWarning, stacklevel=2)
        raise
    return store.finish()


def write_dataset(ds: xr.Dataset, output: PathLike, *, overwrite: bool) -> Path:
    """Write the output Dataset ``ds`` as NetCDF with the writer of ``downscale`` (one chunk:
    atomically, an existing file replaced only with ``overwrite``); the path written."""
    times = ds["time"].values if "time" in ds.variables else None
    return write_chunks(lambda a, b: ds, 1, output, fmt="netcdf", chunk_fields=1,
                        overwrite=overwrite, time_enc=time_encoding(times))


def _with(error: UserError, note: str) -> UserError:
    """``error`` (its class kept where it can be) with ``note`` added to its one line."""
    try:
        return type(error)(f"{error}; {note}")
    except TypeError:
        return UserError(f"{error}; {note}")
