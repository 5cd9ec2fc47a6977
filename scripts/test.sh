#!/usr/bin/env bash
# The README's test command: set up .venv, lint, run the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_venv.sh
.venv/bin/ruff check .
.venv/bin/python -m pytest "$@"
