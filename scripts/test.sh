#!/usr/bin/env bash
# Set up (or update) .venv, then run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
bash scripts/setup_py38_runtime.sh
exec .venv/bin/python -m pytest -n 2 -q "$@"
