"""`weather-sr export CHECKPOINT OUT`: an inference-only checkpoint to share.

It keeps the EMA weights and every metadata field (config, normaliser, grid, condition with its
static fields, the regression base of a residual model) and leaves out what only training needs
(the raw weights, optimiser, gradient scaler, scheduler and RNG state):
:func:`weather_sr.model.checkpoint.export_payload`. ``downscale``, ``evaluate``, the Python API and
``diffusion.regression_checkpoint`` load it as they load the training checkpoint; ``train
--resume`` refuses it.
"""

from __future__ import annotations

import argparse


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="a checkpoint of weather-sr train (e.g. best.pt)")
    parser.add_argument("out", help="the inference-only checkpoint (.pt) to write")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing OUT (a weather-sr checkpoint) once the new one "
                             "is complete")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from weather_sr.atomic import check_output_path
    from weather_sr.errors import UserError
    from weather_sr.model.checkpoint import export_payload, load_checkpoint, save_checkpoint
    from weather_sr.model.loading import model_from_payload
    from weather_sr.targets import Source, check_target

    check_target(args.out, "exported checkpoint", "OUT", [Source("CHECKPOINT", args.checkpoint)],
                 folder=False)
    check_output_path(args.out, args.overwrite, what="exported checkpoint", option="OUT")
    if args.overwrite and Path(args.out).exists():
        try:
            load_checkpoint(args.out)
        except UserError as err:
            raise UserError(f"OUT {args.out} is not a weather-sr checkpoint ({err}): --overwrite "
                            "replaces only checkpoints; choose another OUT") from None
    payload = load_checkpoint(args.checkpoint)
    exported = export_payload(payload)
    model_from_payload(exported, source=str(args.checkpoint))  # loads as downscale will
    save_checkpoint(args.out, exported)
    before, after = Path(args.checkpoint).stat().st_size, Path(args.out).stat().st_size
    print(f"wrote {args.out}: {after / 2**20:.2f} MiB (the training checkpoint: "
          f"{before / 2**20:.2f} MiB)")
    return 0
