"""Probabilistic downscaling of weather fields: train, downscale, evaluate, score, export, demo.

The parser only parses, then hands over to a command module. Each command lives in
``weather_sr.commands.<name>`` with ``configure(parser)`` and ``run(args)``.
A :class:`~weather_sr.errors.UserError` becomes one line on stderr and exit status 2; ``--debug``
shows the traceback instead.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import warnings
from collections.abc import Sequence

from weather_sr import __version__
from weather_sr.errors import UserError

COMMANDS: dict[str, str] = {
    "train": "Train a diffusion or regression model from a YAML config.",
    "downscale": "Downscale low-resolution fields with a trained checkpoint (NetCDF out).",
    "evaluate": "Evaluate checkpoints and baselines on a test split; write a report.",
    "score": "Score any tool's downscaled files against the truth; write a report.",
    "export": "Write an inference-only checkpoint (EMA weights and metadata) to share.",
    "demo": "Train, downscale and evaluate on the shipped sample data; write the report.",
}


def _one_line(prefix: str):  # -> a warnings.showwarning replacement
    """Warnings as one line on stderr, ``<prefix>: warning: <message>`` (no source line)."""

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        text = " ".join(str(message).split())
        print(f"{prefix}: warning: {text}", file=file or sys.stderr)

    return show


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line naming the problem and pointing to --help."""

    def error(self, message: str) -> None:  # type: ignore[override]
        text = " ".join(message.split())
        self.exit(2, f"{self.prog}: error: {text} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="weather-sr", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"weather-sr {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, help_text in COMMANDS.items():
        module = importlib.import_module(f"weather_sr.commands.{name}")
        command_parser = sub.add_parser(name, help=help_text, description=help_text)
        command_parser.add_argument(
            "--debug", action="store_true", help="show the full traceback on errors"
        )
        module.configure(command_parser)
        command_parser.set_defaults(_module=module)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from weather_sr.runtime import tune_malloc

    tune_malloc()  # before any large allocation (weather_sr.runtime; opt out by environment)
    parser = build_parser()
    args = parser.parse_args(argv)
    previous, warnings.showwarning = warnings.showwarning, _one_line(f"weather-sr {args.command}")
    try:
        return int(args._module.run(args) or 0)
    except UserError as error:
        if args.debug:
            raise
        message = " ".join(str(error).split())  # one line, whatever a library put in it
        print(f"weather-sr {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"weather-sr {args.command}: interrupted", file=sys.stderr)
        return 130
    finally:
        warnings.showwarning = previous
