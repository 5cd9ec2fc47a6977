"""`weather-sr downscale` (not implemented yet)."""

from __future__ import annotations

import argparse

from weather_sr.errors import UserError


def configure(parser: argparse.ArgumentParser) -> None:
    del parser


def run(args: argparse.Namespace) -> int:
    raise UserError("'downscale' is not implemented yet")
