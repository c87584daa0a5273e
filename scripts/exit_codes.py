#!/usr/bin/env python
"""Write (or with --check, compare) the README's exit-code table from clca_edge.core.errors.EXIT_CODES.

    python scripts/exit_codes.py           # rewrite the block between the markers in README.md
    python scripts/exit_codes.py --check   # exit 1 if README.md's block differs
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from clca_edge.core.errors import README_BEGIN, README_END, exit_code_table  # noqa: E402


def readme_block(text: str) -> tuple[int, int]:
    """Start and end offsets of the generated table between the markers."""
    start = text.index(README_BEGIN) + len(README_BEGIN) + 1
    return start, text.index(README_END, start)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="only compare; exit 1 when README.md is stale")
    ap.add_argument("--readme", type=Path, default=ROOT / "README.md")
    args = ap.parse_args()
    text = args.readme.read_text()
    start, end = readme_block(text)
    table = exit_code_table()
    if text[start:end] == table:
        return 0
    if args.check:
        print(f"{args.readme}: the exit-code table differs from EXIT_CODES; run python scripts/exit_codes.py",
              file=sys.stderr)
        return 1
    args.readme.write_text(text[:start] + table + text[end:])
    print(f"updated the exit-code table in {args.readme}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
