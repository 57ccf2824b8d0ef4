#!/usr/bin/env bash
# Quick start: set everything up, then run Marionette's main job on the bundled sample.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/python cli.py sample
