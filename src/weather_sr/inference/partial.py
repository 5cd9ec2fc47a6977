"""The partial store of a Zarr output of ``weather-sr downscale`` and its rules.

The chunks are appended to a hidden sibling store ``.NAME.partial`` that carries weather-sr's
marker (kind "downscale") and the run's settings with the number of fields complete
(:data:`SETTINGS`); it is renamed to ``NAME`` when complete (:mod:`weather_sr.inference.stream`
writes it). A run that stops after a complete chunk (interrupted, killed, a failure) keeps the
partial store; ``--resume`` checks that it was written with the same settings
(:data:`COMPARED`: checkpoint SHA-256, sampler, steps, eta, seed, members, tile, overlap,
precision, noise colour, constraint, coherent, rho, input path, its number of fields and their
times, coarsen, target grid, domain), that its settings file is weather-sr's (a whole number of
fields done, within the input) and that no chunk of the fields done is missing, and continues
after them. Every (field, member) draws its noise from the seed of its global field index (and
``--coherent`` rebuilds its chain from those seeds), so the result is that of an uninterrupted
run. The settings file also keeps the running sums of the consistency with the
LR input (:data:`TALLY`, :mod:`weather_sr.inference.lr_consistency`) of the fields done, so the
resumed run's attributes are those of an uninterrupted one too.
Without ``--resume`` an existing partial store is an error; with ``--overwrite`` it is
discarded when the new run has its first chunk. A store with a missing chunk is neither
continued nor committed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from weather_sr.atomic import check_output_path, read_marker
from weather_sr.errors import UserError
from weather_sr.write_errors import io_errors

PathLike = str | os.PathLike[str]
KIND = "downscale"  # the marker kind of a Zarr output and of its partial store
SETTINGS = ".weather-sr-downscale.json"  # in the partial store: settings and fields complete
TALLY = "lr_consistency"  # in SETTINGS: the consistency sums of the fields complete
COMPARED = ("checkpoint_sha256", "sampler", "steps", "eta", "seed", "members", "tile", "overlap",
            "precision", "noise_colour", "constrain", "coherent", "rho", "input", "input_fields",
            "input_times_sha256", "coarsen", "target_grid", "domain")


def partial_path(output: PathLike) -> Path:
    """Where a Zarr output is built: the hidden sibling ``.NAME.partial``."""
    out = Path(output)
    return out.parent / f".{out.name}.partial"


def check_start(output: PathLike, fmt: str, *, overwrite: bool, resume: bool) -> None:
    """Before any work: the output can be written, and the partial store rules (module doc)."""
    zarr_out = fmt == "zarr"
    if resume and not zarr_out:
        raise UserError("--resume continues a Zarr output (--format zarr, or an --output ending "
                        "in .zarr): an interrupted NetCDF run leaves nothing to continue")
    check_output_path(output, overwrite, option="--output", marker=KIND if zarr_out else None)
    if not zarr_out:
        return
    partial = partial_path(output)
    if os.path.lexists(partial):
        if partial.is_symlink() or not partial.is_dir() or read_marker(partial) != KIND:
            raise UserError(f"output {output}: {partial} is in the way of its partial output and "
                            "was not written by weather-sr downscale: move it away or choose "
                            "another --output")
        if not resume and not overwrite:
            raise UserError(f"output {output}: the partial output {partial} of an interrupted run "
                            "is there: continue it with --resume, start again with --overwrite, "
                            "or delete it")
    elif resume:
        raise UserError(f"--resume: there is no partial output {partial} to continue (an "
                        f"interrupted Zarr run leaves one): run without --resume")


def run_settings(*, checkpoint_sha256: str, options: Any, precision: str, input_path: PathLike,
                 times: np.ndarray, coarsen: bool, target_grid: PathLike | None,
                 domain: Sequence[float] | None = None) -> dict[str, Any]:
    """What must be the same for ``--resume`` to continue a partial output (:data:`COMPARED`);
    ``precision``: the resolved one (float32 or bf16), as the output records it."""
    return {
        "checkpoint_sha256": checkpoint_sha256, "sampler": options.sampler,
        "steps": int(options.steps), "eta": float(options.eta), "seed": int(options.seed),
        "members": int(options.members), "tile": int(options.tile or 0),
        "overlap": int(options.overlap), "precision": precision,
        "noise_colour": options.noise_colour, "constrain": options.constrain,
        "coherent": options.coherent,
        "rho": None if options.rho is None else float(options.rho),
        "input": os.path.abspath(os.fspath(input_path)),
        "input_fields": len(times),
        "input_times_sha256": hashlib.sha256(np.asarray(times).astype(str).tobytes()).hexdigest(),
        "coarsen": bool(coarsen),
        "target_grid": os.path.abspath(os.fspath(target_grid)) if target_grid else None,
        "domain": None if domain is None else [float(v) for v in domain],
    }


@contextlib.contextmanager
def quiet_zarr() -> Iterator[None]:
    """Zarr warns about the files beside its own (marker, settings) whenever it lists a store."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Object at .* is not recognized as a "
                                "component of a Zarr hierarchy")
        yield


def resume_point(output: PathLike, settings: Mapping[str, Any]) -> int:
    """The fields complete in the partial store of ``output`` written with ``settings``;
    UserError (nothing changed) when they differ, when its settings file is not one weather-sr
    wrote, or when a chunk is missing. A chunk whose append was cut off is dropped."""
    partial = partial_path(output)
    saved = _saved_settings(partial)
    differ = [k for k in COMPARED if saved.get(k) != settings.get(k)]
    if differ:
        said = ", ".join(f"{k} {_short(saved.get(k))} there, {_short(settings.get(k))} now"
                         for k in differ)
        raise UserError(f"--resume: the partial output {partial} was written with other "
                        f"settings ({said}): give the same options, or start again with "
                        "--overwrite")
    done = saved["fields_done"]
    if done:
        check_complete(partial, done)  # before _trim changes anything
        _trim(partial, done)
    return done


def saved_tally(output: PathLike) -> Any:
    """The consistency sums the partial store of ``output`` keeps with its fields done (read
    after :func:`resume_point` has checked its settings; checked by
    :meth:`weather_sr.inference.lr_consistency.ConsistencyTally.restore`)."""
    return _saved_settings(partial_path(output)).get(TALLY)


def _saved_settings(partial: Path) -> dict[str, Any]:
    """The settings file of a partial store, its ``fields_done`` checked: a whole number from 0
    to the number of input fields (UserError naming the field otherwise)."""
    try:
        saved = json.loads((partial / SETTINGS).read_text())
    except (OSError, ValueError):
        saved = None
    if not isinstance(saved, dict):
        raise UserError(f"--resume: the partial output {partial} has no readable {SETTINGS} "
                        "(complete, or cut off while starting): start again with --overwrite")
    done, total = saved.get("fields_done"), saved.get("input_fields")
    valid = (not isinstance(done, bool) and isinstance(done, int)
             and not isinstance(total, bool) and isinstance(total, int) and 0 <= done <= total)
    if not valid:
        raise UserError(f"--resume: the partial output {partial}: field 'fields_done' of "
                        f"{SETTINGS} is {_short(done)}, not a whole number from 0 to the "
                        f"{_short(total)} input fields: the file was edited or damaged; start "
                        "again with --overwrite")
    return saved


def check_complete(partial: Path, done: int | None = None) -> None:
    """UserError when a chunk of the partial store is missing (a file lost or deleted): it
    would read as NaN, so it is neither continued nor committed. ``done``: only the first
    ``done`` fields are checked (an append cut off after them is dropped on resume)."""
    from weather_sr.data.files import check_zarr_chunks

    with quiet_zarr():
        rows = None if done is None else (_fields_dim(partial), done)
        check_zarr_chunks(partial, None, what="partial output",
                          fix="start again with --overwrite", rows=rows)


def _short(value: Any) -> str:
    text = repr(value)
    return text[:14] + "...'" if isinstance(value, str) and len(value) == 64 else text


def read_back(output: PathLike, state: Any, channels: Sequence[str], done: int) -> None:
    """Give ``state`` (a :class:`~weather_sr.inference.coherence.PreviousState`) the members
    of the last ``state.stride`` fields done of ``output``'s partial store, as written."""
    import xarray as xr

    partial = partial_path(output)
    dim = _fields_dim(partial)
    with quiet_zarr(), xr.open_zarr(partial, consolidated=False) as z:
        for f in range(max(0, done - state.stride), done):
            one = [z[c].isel({dim: f}) for c in channels]
            one = [v.transpose("member", ...) if "member" in v.dims else v.expand_dims("member")
                   for v in one]
            state.put(f, np.stack([np.asarray(v.values, np.float32) for v in one], axis=1))


def _fields_dim(partial: Path) -> str:
    """The dimension along the fields of a partial store: the first of the output variables
    (the arrays with the most dimensions): ``sample`` (inputs with members) or ``time``."""
    import zarr

    group = zarr.open_group(str(partial), mode="r", zarr_format=2)
    dims = [list(a.attrs.get("_ARRAY_DIMENSIONS", [])) for _, a in group.arrays()]
    longest = max(dims, key=len, default=[])
    return longest[0] if longest else "time"


def _trim(partial: Path, done: int) -> None:
    """Cut the arrays along the fields back to ``done`` (an append stopped half way leaves them
    longer); UserError, before any change, if some are shorter."""
    import zarr

    with quiet_zarr(), io_errors(partial, "partial output"):
        first = _fields_dim(partial)
        group = zarr.open_group(str(partial), mode="r+", zarr_format=2)
        arrays = {name: arr for name, arr in group.arrays()
                  if list(arr.attrs.get("_ARRAY_DIMENSIONS", []))[:1] == [first]}
        for name, arr in arrays.items():
            if arr.shape[0] < done:
                raise UserError(f"--resume: the partial output {partial} lacks fields of "
                                f"{name} it records as complete: start again with --overwrite")
        longer = [arr for arr in arrays.values() if arr.shape[0] > done]
        for arr in longer:
            arr.resize((done, *arr.shape[1:]))
        if longer:
            zarr.consolidate_metadata(str(partial), zarr_format=2)
