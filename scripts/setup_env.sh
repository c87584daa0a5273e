#!/usr/bin/env bash
# Create or update .venv in the repo root with the package, the train extra and the dev tools.
# Idempotent: a second run only re-checks the installed packages.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
# torch first and pinned: this is the build that lies on the machine's disk (no multi-GB download).
if ! .venv/bin/python -c "import torch, torchvision" 2>/dev/null; then
    .venv/bin/python -m pip install -q "torch==2.14.1" "torchvision==0.29.1"
fi
.venv/bin/python -m pip install -q -e ".[train,dev]"
# The fleet link's broker (Eclipse Mosquitto) comes from the system's packages; the fleet tests start
# their own on a loopback port. Headless Chromium lets the tests open the fleet report.
missing=()
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || missing+=(mosquitto mosquitto-clients)
command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || missing+=(chromium)
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        apt-get install -y -q "${missing[@]}" >/dev/null || { apt-get update -q >/dev/null && apt-get install -y -q "${missing[@]}" >/dev/null; }
    else
        echo "the fleet link needs: ${missing[*]}; install them as root: sudo apt-get install -y ${missing[*]}" \
             "(the fleet tests that need them are skipped meanwhile)" >&2
    fi
fi
