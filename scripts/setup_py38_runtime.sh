#!/usr/bin/env bash
# Create or update .venv-py38: the device runtime alone (no torch) on Python 3.8, the Python of
# JetPack 5, so the tests can run predict/capture there. Skipped quietly when no 3.8 is installed.
set -euo pipefail
cd "$(dirname "$0")/.."
# A python3.8 on PATH, else one pyenv installed (its shim fails unless 3.8 is selected).
PY38=${PYTHON38:-}
for cand in python3.8 "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.8*/bin/python3.8; do
    [ -n "$PY38" ] && break
    "$cand" -c 'import sys; assert sys.version_info[:2] == (3, 8)' 2>/dev/null && PY38=$cand
done
if [ -z "$PY38" ] || ! "$PY38" -c 'import sys; assert sys.version_info[:2] == (3, 8)' 2>/dev/null; then
    echo "no Python 3.8 here: skipping the JetPack 5 runtime check" >&2
    exit 0
fi
[ -x .venv-py38/bin/python ] || "$PY38" -m venv .venv-py38
.venv-py38/bin/python -m pip install -q --upgrade pip 2>/dev/null >/dev/null || true
# The runtime's own dependencies (setup.cfg install_requires), then the package without them.
.venv-py38/bin/python -m pip install -q -e . 2>&1 | grep -v "^WARNING: Location" >&2 || true
.venv-py38/bin/python -c "import clca_edge.runtime.backends, cv2, onnxruntime" \
    || { echo "the Python 3.8 runtime environment is broken" >&2; exit 1; }
