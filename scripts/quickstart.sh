#!/usr/bin/env bash
# Quick start: set up .venv, then run the main job on the built-in default.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
exec .venv/bin/clca-edge quickstart "$@"
