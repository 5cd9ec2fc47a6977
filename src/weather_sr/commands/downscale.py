"""`weather-sr downscale`: sample an HR ensemble for LR fields, or a regression checkpoint's
deterministic field (NetCDF/Zarr/GRIB in, NetCDF or Zarr out, written chunk by chunk)."""

from __future__ import annotations

import argparse
from pathlib import Path

from weather_sr.core.sampler_defaults import (
    CONSTRAINTS,
    DEFAULT_CONSTRAINT,
    DEFAULT_ETA,
    DEFAULT_PRECISION,
    DEFAULT_SAMPLER,
    DEFAULT_STEPS,
    PRECISIONS,
    SAMPLER_NAMES,
)
from weather_sr.devices import DEVICE_CHOICES


def configure(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("--checkpoint", required=True,
        help="trained diffusion checkpoint (.pt); a regression checkpoint writes its one "
             "deterministic field (mean mode: no member dimension, sampling options unused)")
    add("--input", required=True,
        help="LR fields (NetCDF, Zarr or GRIB); HR fields with --coarsen; 'sample': the "
             "shipped sample file (an HR file: use it with --coarsen)")
    add("--output", required=True,
        help="output NetCDF file, or Zarr folder (a name ending in .zarr or --format zarr); "
             "written atomically")
    add("--format", dest="output_format", choices=("netcdf", "zarr"), default=None,
        help="output format (default: zarr when --output ends in .zarr, else netcdf)")
    add("--chunk-fields", type=int, default=8,
        help="fields read, sampled and written at a time; memory grows with it, not with the "
             "number of fields (default: %(default)s)")
    add("--resume", action="store_true",
        help="Zarr: continue the partial output .NAME.partial of an interrupted run after its "
             "complete fields (the same options required)")
    add("--members", type=int, default=8, help="ensemble members per field (default: %(default)s)")
    add("--sampler", choices=SAMPLER_NAMES, default=DEFAULT_SAMPLER,
        help="sampler (default: %(default)s)")
    add("--steps", type=int, default=DEFAULT_STEPS,
        help="sampler steps (ancestral: all T steps) (default: %(default)s)")
    add("--eta", type=float, default=DEFAULT_ETA,
        help="DDIM eta: 0 deterministic, 1 ancestral-like (default: %(default)s)")
    add("--seed", type=int, default=0,
        help="random seed; each (field, member) derives its own (default: %(default)s)")
    add_noise_colour_option(parser)
    add_constrain_option(parser)
    add_coherence_options(parser)
    add("--coarsen", action="store_true",
        help="the input is HR: coarsen it by the checkpoint's scale factor first (evaluation)")
    add_tile_options(parser)
    add("--batch-size", type=int, default=8,
        help="(field, member) samples per batch, and tiles per network call (default: %(default)s)")
    add("--device", default="auto",
        help=f"one of {', '.join(DEVICE_CHOICES)} or cuda:N; under torchrun each rank takes "
             "its own GPU (default: %(default)s)")
    add_precision_option(parser)
    add("--overwrite", action="store_true",
        help="replace an existing output file (never one of the inputs) once the new one is "
             "complete")
    add("--target-grid", default=None,
        help="NetCDF file whose 1-D lat/lon give the output coordinates (same size as output; "
             "default: the cell centres of the LR grid's sub-cells)")
    add("--domain", default=None, metavar="Y0,Y1,X0,X1",
        help="a model whose predictors are regridded from their own grid: downscale the points "
             "of its static fields' domain (or training grid) within these bounds, in the HR "
             "grid's coordinates (e.g. metres of its projection) (default: the training grid)")
    add("--allow-out-of-range", action="store_true",
        help="downscale input values far outside the training data (more than 10 training "
             "standard deviations, or negative kelvin) with a warning instead of an error")
    add("--no-progress", action="store_true", help="no progress bar")


def add_tile_options(parser: argparse.ArgumentParser) -> None:
    """``--tile`` and ``--overlap``, shared by downscale and evaluate."""
    parser.add_argument(
        "--tile", type=int, default=None,
        help="tile size in HR pixels, to bound memory on large domains; use at least twice "
             "the training patch size (docs/benchmarks.md: what tiling costs) "
             "(default: whole field)")
    parser.add_argument("--overlap", type=int, default=32,
                        help="overlap between tiles in HR pixels (default: %(default)s)")


def add_precision_option(parser: argparse.ArgumentParser) -> None:
    """``--precision``, shared by downscale and evaluate."""
    parser.add_argument(
        "--precision", choices=PRECISIONS, default=DEFAULT_PRECISION,
        help="network arithmetic while sampling: float32, or bf16 autocast; auto: bf16 only on "
             "a CPU with native bf16 instructions (docs/benchmarks.md: the precision table) "
             "(default: %(default)s)")


def add_constrain_option(parser: argparse.ArgumentParser) -> None:
    """``--constrain`` (downscale and evaluate)."""
    parser.add_argument(
        "--constrain", choices=CONSTRAINTS, default=DEFAULT_CONSTRAINT,
        help="make every member's block means (the block mean that made the LR input) equal to "
             "the LR input: lr-mean corrects each final member by a smooth correction per LR "
             "block (multiplicative for variables transformed as non-negative); lr-mean-x0 "
             "also corrects the network's x0 estimate at every sampler step; none: as sampled "
             "(docs/method.md §8) (default: %(default)s)")


def add_noise_colour_option(parser: argparse.ArgumentParser) -> None:
    """``--noise-colour`` (downscale and evaluate)."""
    from weather_sr.core.spectral_options import DEFAULT_COLOUR

    parser.add_argument(
        "--noise-colour", default=DEFAULT_COLOUR,
        help="shape of the noise a stochastic sampler injects (ancestral; ddim with --eta > 0): "
             "white, or power:Q (more of it where a spectrum of amplitude slope Q is not yet "
             "resolved; docs/method.md §9); training-free (default: %(default)s)")


def add_coherence_options(parser: argparse.ArgumentParser) -> None:
    """``--coherent`` and ``--rho`` (downscale and evaluate)."""
    from weather_sr.core.sampler_defaults import COHERENCE, DEFAULT_COHERENCE

    parser.add_argument(
        "--coherent", nargs="?", const="on", default=DEFAULT_COHERENCE, choices=COHERENCE,
        help="members that stay coherent from one time to the next (the fields in time order): "
             "noise correlates each member's initial noise between consecutive times; ar "
             "conditions each member on its own previous field (a model trained with "
             "data.previous); off: every time sampled on its own; on: ar where the model "
             "allows, else noise; auto: ar where the model allows, else off (default: "
             "%(default)s; --coherent alone: on)")
    parser.add_argument(
        "--rho", type=float, default=None,
        help="the correlation in [0, 1) of --coherent noise (default: the lag-1 "
             "autocorrelation of the training truth's detail, stored in the checkpoint)")


def command_line(args: argparse.Namespace) -> list[str]:
    """The effective command (every option with its value), to reproduce the run."""
    argv = ["weather-sr", "downscale"]
    for key in ("checkpoint", "input", "output", "members", "sampler", "steps", "eta", "seed",
                "tile", "overlap", "batch_size", "chunk_fields", "output_format", "device",
                "precision", "noise_colour", "constrain", "coherent", "rho", "target_grid",
                "domain"):
        value = getattr(args, key)
        if value is not None:
            option = "format" if key == "output_format" else key.replace("_", "-")
            argv += [f"--{option}", str(value)]
    argv += [f"--{k.replace('_', '-')}" for k in ("coarsen", "overwrite", "resume",
                                                  "allow_out_of_range") if getattr(args, k)]
    return argv


def run(args: argparse.Namespace) -> int:
    from weather_sr import distributed
    from weather_sr.inference.domain import parse_domain
    from weather_sr.inference.downscale import downscale
    from weather_sr.inference.ensemble import SamplingOptions

    options = SamplingOptions(  # checks every sampling option (one line naming it)
        sampler=args.sampler, steps=args.steps, eta=args.eta, seed=args.seed,
        members=args.members, batch_size=args.batch_size, tile=args.tile, overlap=args.overlap,
        precision=args.precision, noise_colour=args.noise_colour, constrain=args.constrain,
        coherent=args.coherent, rho=args.rho,
    )
    info = distributed.setup(args.device, mps=True)  # torchrun: a process group, this rank's device
    if args.input == "sample" and not Path(args.input).exists():
        from weather_sr.data.sample import sample_data_path

        args.input = str(sample_data_path())
    try:
        path = downscale(
            args.checkpoint, args.input, args.output, options, coarsen_input=args.coarsen,
            device=str(info.device), overwrite=args.overwrite, target_grid=args.target_grid,
            argv=command_line(args), show_progress=not args.no_progress,
            chunk_fields=args.chunk_fields, output_format=args.output_format,
            resume=args.resume, allow_out_of_range=args.allow_out_of_range,
            domain=parse_domain(args.domain),
        )
    finally:
        distributed.teardown(info)
    if info.is_main:
        print(f"wrote {path}")
    return 0
