#!/usr/bin/env bash
# The README's main command: set up .venv and run the demo on the shipped sample data.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_venv.sh
.venv/bin/weather-sr demo "$@"
