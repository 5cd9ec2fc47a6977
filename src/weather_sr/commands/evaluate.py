"""`weather-sr evaluate --checkpoint C [--checkpoint C2 ...] [--data D] --out DIR`.

Scores each checkpoint (regression: its prediction; diffusion: an ensemble) and the nearest,
bilinear and bicubic baselines on the test split, and writes ``report.md``, ``metrics.json``
and PNG figures into DIR.
"""

from __future__ import annotations

import argparse

from weather_sr.errors import UserError


def add_sampling_options(parser: argparse.ArgumentParser, members: int, steps: int) -> None:
    """The sampling options of ``evaluate`` (``--tile``, ``--overlap``, ``--precision`` are
    ``downscale``'s, added beside them)."""
    from weather_sr.core.sampler_defaults import DEFAULT_ETA, DEFAULT_SAMPLER, SAMPLER_NAMES

    names = f"{', '.join(SAMPLER_NAMES[:-1])} or {SAMPLER_NAMES[-1]}"
    parser.add_argument("--members", type=int, default=members,
                        help="ensemble size (default: %(default)s)")
    parser.add_argument("--sampler", default=DEFAULT_SAMPLER,
                        help=f"{names} (default: %(default)s)")
    parser.add_argument("--steps", type=int, default=steps,
                        help="sampler steps (ancestral: all T steps) (default: %(default)s)")
    parser.add_argument("--eta", type=float, default=DEFAULT_ETA,
                        help="DDIM eta in [0, 1] (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=16,
                        help="samples per network call (default: %(default)s)")
    parser.add_argument("--device", default="auto",
                        help="auto, cpu, cuda, mps or cuda:N (default: %(default)s)")


def sampling_options(args: argparse.Namespace):  # -> SamplingOptions
    """The sampling options of ``evaluate`` (checked by ``SamplingOptions``, the one validator;
    ensemble scores need 2 members, which only evaluate requires)."""
    from weather_sr.inference.ensemble import SamplingOptions

    options = SamplingOptions(sampler=args.sampler, steps=args.steps, eta=args.eta,
                              seed=args.seed, members=args.members, batch_size=args.batch_size,
                              tile=args.tile, overlap=args.overlap, precision=args.precision,
                              noise_colour=args.noise_colour, constrain=args.constrain,
                              coherent=args.coherent, rho=args.rho)
    if args.members < 2:
        raise UserError(f"--members {args.members}: ensemble scores (CRPS, spread) need at "
                        "least 2")
    return options


def add_block_option(parser: argparse.ArgumentParser) -> None:
    """``--block`` (evaluate and score)."""
    parser.add_argument("--block", type=int, default=None,
                        help="block length in fields (times) of the bootstrap of the confidence "
                             "intervals and paired tests; longer than the time over which "
                             "errors stay correlated (default: round(N^(1/3)) of N fields)")


def add_sum_window_option(parser: argparse.ArgumentParser) -> None:
    """``--sum-window`` (evaluate and score)."""
    from weather_sr.evaluation.temporal import DEFAULT_SUM_WINDOW

    parser.add_argument("--sum-window", default=None, metavar="N|DURATION",
                        help="the window of the CRPS of sums over consecutive times: a number "
                             "of times (8) or a duration (24h, 1D) that is a whole number of the "
                             f"time step (default: {DEFAULT_SUM_WINDOW} when the times are dated "
                             "with a step that divides it, else no CRPS of sums)")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", action="append", required=True,
                        help="a checkpoint (.pt) of weather-sr train; repeat for several")
    parser.add_argument("--data", help="data files (default: the checkpoint's training data)")
    parser.add_argument("--out", required=True,
                        help="report folder to create (report.md, metrics.json, figures)")
    parser.add_argument("--split", default="test", choices=("train", "val", "test"),
                        help="which split of the data to score (default: %(default)s)")
    parser.add_argument("--max-fields", type=int,
                        help="score only the first N fields (default: all)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing --out (a report folder weather-sr wrote) once "
                             "the new report is complete")
    from weather_sr.core.sampler_defaults import DEFAULT_STEPS

    add_sampling_options(parser, members=8, steps=DEFAULT_STEPS)
    from weather_sr.commands.downscale import (
        add_coherence_options,
        add_constrain_option,
        add_noise_colour_option,
        add_precision_option,
        add_tile_options,
    )

    add_noise_colour_option(parser)
    add_constrain_option(parser)
    add_coherence_options(parser)
    add_tile_options(parser)
    add_precision_option(parser)
    parser.add_argument("--allow-out-of-range", action="store_true",
                        help="score inputs far outside the training data (more than 10 "
                             "training standard deviations beyond its range, or negative "
                             "kelvin) with a warning instead of an error")
    add_block_option(parser)
    add_sum_window_option(parser)
    parser.add_argument("--chunk-fields", type=int, default=8,
                        help="fields read, sampled and scored at a time; memory grows with it, "
                             "not with the number of fields (default: %(default)s)")


def run(args: argparse.Namespace) -> int:
    from weather_sr import distributed
    from weather_sr.evaluation.pipeline import evaluate_checkpoints

    options = sampling_options(args)
    if args.max_fields is not None and args.max_fields < 1:
        raise UserError(f"option --max-fields {args.max_fields}: give at least 1")
    info = distributed.setup(args.device, mps=True)  # torchrun: a process group, this rank's GPU
    try:
        report, _ = evaluate_checkpoints(
            args.checkpoint, args.out, options=options, data_path=args.data, split=args.split,
            max_fields=args.max_fields, device=info.device, overwrite=args.overwrite,
            chunk_fields=args.chunk_fields, allow_out_of_range=args.allow_out_of_range,
            block=args.block, sum_window=args.sum_window,
        )
    finally:
        distributed.teardown(info)
    if info.is_main:
        print(f"report written to {report}")
    return 0
