#!/usr/bin/env bash
# The whole test suite under coverage (lines and branches of clca_edge), as scripts/test.sh runs it
# (-n 2), and the report per package; with --base REF, the same for the tree at REF (a temporary
# worktree) and the two side by side, with the new lines since REF that no test runs.
#   bash scripts/coverage.sh [--base REF] [pytest args...]
# Reports land in build/coverage/ (head.json, base.json, report.md). Not part of .ci/run: coverage
# slows the suite down. CLCA_PY=/path/to/python uses that interpreter instead of setting up .venv.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
BASE=
if [ "${1:-}" = --base ]; then BASE=$2; shift 2; fi
if [ -z "${CLCA_PY:-}" ]; then
    bash scripts/setup_env.sh
    bash scripts/setup_py38_runtime.sh   # its tests run, unmeasured (no coverage in .venv-py38)
    CLCA_PY=$REPO/.venv/bin/python
fi
"$CLCA_PY" -c "import pytest_cov" 2>/dev/null || "$CLCA_PY" -m pip install -q -e ".[train,dev,coverage]"
OUT=$REPO/build/coverage
rm -rf "$OUT"
mkdir -p "$OUT"

# One tree's suite; PYTHONPATH makes that tree's clca_edge the one imported and measured. The
# settings come from this tree's pyproject.toml for both runs (patch = subprocess: the CLI the
# tests start as Python subprocesses is measured too).
measure() {
    local tree=$1 name=$2
    shift 2
    mkdir -p "$OUT/$name.data"
    (cd "$tree" && COVERAGE_FILE="$OUT/$name.data/.coverage" PYTHONPATH="$tree" \
        "$CLCA_PY" -m pytest -n 2 -q -p no:cacheprovider --cov=clca_edge --cov-config="$REPO/pyproject.toml" \
        --cov-report=json:"$OUT/$name.json" --cov-report=term:skip-covered "$@") | tee "$OUT/$name.log"
}

if [ -n "$BASE" ]; then
    TMP=$(mktemp -d)
    WT=$TMP/base
    git worktree add -q --detach "$WT" "$BASE"
    trap 'git worktree remove --force "$WT"; rmdir "$TMP"' EXIT
    measure "$WT" base "$@" || echo "the suite at $BASE failed; its coverage is still reported" >&2
    git worktree remove --force "$WT"
    rmdir "$TMP"
    trap - EXIT
fi
measure "$REPO" head "$@" || echo "the suite failed; its coverage is still reported" >&2
if [ -n "$BASE" ]; then
    "$CLCA_PY" scripts/coverage_compare.py "$OUT/head.json" --base "$OUT/base.json" --diff-base "$BASE"
else
    "$CLCA_PY" scripts/coverage_compare.py "$OUT/head.json"
fi | tee "$OUT/report.md"
