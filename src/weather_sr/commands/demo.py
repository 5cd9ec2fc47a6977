"""`weather-sr demo [--out DIR] [--quick]`: the Fourier-loss ablation on the shipped sample data.

Trains four models (regression; diffusion with λ = 0; λ = 1, W ≡ 1; λ = 1, radial W), downscales
the test split and writes ``DIR/report/report.md``. ``--quick`` is a tiny version for CI.
"""

from __future__ import annotations

import argparse

from weather_sr.errors import UserError


def configure(parser: argparse.ArgumentParser) -> None:
    from weather_sr.core.sampler_defaults import DEFAULT_SAMPLER, SAMPLER_NAMES

    names = f"{', '.join(SAMPLER_NAMES[:-1])} or {SAMPLER_NAMES[-1]}"

    parser.add_argument("--out", default="demo_output",
                        help="folder to create (default: %(default)s)")
    parser.add_argument("--quick", action="store_true",
                        help="tiny models and budgets (about a minute)")
    parser.add_argument("--device", default="auto",
                        help="auto, cpu, cuda, mps or cuda:N (default: %(default)s)")
    parser.add_argument("--sampler", default=DEFAULT_SAMPLER,
                        help=f"sampler for the ensembles: {names} (default: %(default)s)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing --out (a demo folder weather-sr wrote) once "
                             "the new one is complete")


def run(args: argparse.Namespace) -> int:
    from weather_sr.atomic import check_output_path
    from weather_sr.core.sampler_defaults import SAMPLER_NAMES
    from weather_sr.demo import check_demo_target, run_demo
    from weather_sr.devices import select_device

    # every option is checked before the demo creates --out and spends minutes training
    if args.sampler not in SAMPLER_NAMES:
        raise UserError(
            f"option --sampler {args.sampler!r}: choose one of {', '.join(SAMPLER_NAMES)}"
        )
    select_device(args.device)
    check_demo_target(args.out)
    check_output_path(args.out, args.overwrite, what="demo folder", marker="demo", option="--out")

    run_demo(args.out, quick=args.quick, device=args.device, overwrite=args.overwrite,
             sampler=args.sampler)
    return 0
