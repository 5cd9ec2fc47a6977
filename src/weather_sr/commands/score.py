"""`weather-sr score --prediction P [--prediction P2 ...] --truth T [--lr L] --out DIR`.

Scores any tool's output files (NetCDF, Zarr, GRIB; an ensemble with a member dim, or a
deterministic field) against the truth on its grid, with the scoring code of ``evaluate``, and
writes ``report.md``, ``metrics.json`` and the figures into DIR
(:mod:`weather_sr.evaluation.score_files`).
"""

from __future__ import annotations

import argparse

from weather_sr.errors import UserError


def configure(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("--prediction", action="append", required=True,
        help="a file (or Zarr folder) of downscaled fields from any tool; repeat for several")
    add("--name", action="append",
        help="the report's label of each --prediction, in order (default: the file names)")
    add("--truth", required=True,
        help="the HR truth on the predictions' grid; 'sample': the shipped sample file")
    add("--lr", help="the LR input the predictions were made from, on the s x s blocks of the "
                     "truth's grid: adds the interpolation baselines and consistency scores")
    add("--out", required=True, help="report folder to create (report.md, metrics.json, figures)")
    add("--rename", action="append", default=[], metavar="PRED=TRUTH",
        help="a prediction's variable PRED is the truth's TRUTH; repeat for several")
    add("--variables", help="comma-separated truth variables to score (default: every "
                            "variable of the first prediction that the truth has)")
    add("--member-dim", help="the ensemble dim of the predictions when its name is not one of "
                             "member, realization, number, ensemble")
    add("--area-weighted", action="store_true",
        help="the LR is a cos-latitude weighted block mean (as data.area_weighted in training)")
    add("--no-baselines", action="store_true", help="do not score the interpolation baselines")
    from weather_sr.commands.evaluate import add_block_option, add_sum_window_option

    add_block_option(parser)
    add_sum_window_option(parser)
    add("--seed", type=int, default=0,
        help="rank-histogram and PIT tie breaking and the bootstrap's draws, as evaluate's "
             "--seed (default: %(default)s)")
    add("--chunk-fields", type=int, default=8,
        help="times read and scored at a time; memory grows with it, not with the number of "
             "times (default: %(default)s)")
    add("--overwrite", action="store_true",
        help="replace an existing --out (a report folder weather-sr wrote) once the new report "
             "is complete")
    add("--no-progress", action="store_true", help="no progress bar")


def parse_rename(items: list[str]) -> dict[str, str]:
    """``["a=b", ...]`` -> ``{"a": "b"}``; UserError naming a malformed item."""
    out: dict[str, str] = {}
    for item in items:
        old, sep, new = item.partition("=")
        if not sep or not old.strip() or not new.strip():
            raise UserError(f"--rename {item}: write PREDICTION_NAME=TRUTH_NAME")
        out[old.strip()] = new.strip()
    return out


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from weather_sr.evaluation.score_files import score_files

    if args.truth == "sample" and not Path(args.truth).exists():
        from weather_sr.data.sample import sample_data_path

        args.truth = str(sample_data_path())
    variables = [v.strip() for v in args.variables.split(",") if v.strip()] if args.variables \
        else None
    report, _ = score_files(
        args.prediction, args.truth, args.out, lr=args.lr, names=args.name,
        overwrite=args.overwrite, show_progress=not args.no_progress,
        rename=parse_rename(args.rename), variables=variables, member_dim=args.member_dim,
        area_weighted=args.area_weighted, baselines=not args.no_baselines, seed=args.seed,
        chunk_fields=args.chunk_fields, block=args.block, sum_window=args.sum_window,
    )
    print(f"report written to {report}")
    return 0
