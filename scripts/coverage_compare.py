"""Coverage of the package by the test suite, per package, from coverage.py JSON reports.

    python scripts/coverage_compare.py HEAD.json                       # one run
    python scripts/coverage_compare.py HEAD.json --base BASE.json --diff-base REF

With ``--base`` it sets the two runs side by side (total and per package); with ``--diff-base`` it
also lists the lines added since REF (``git diff REF``) that the suite does not run, largest
files first: where a drop in coverage comes from. Markdown on stdout, for BENCHMARKS.md.
scripts/coverage.sh writes the reports and calls this.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

PACKAGE = "clca_edge"
HUNK = re.compile(r"^@@ -\d+(?:,\d+)? \+(\d+)(?:,(\d+))? @@")


@dataclass
class Counts:
    """Statements and branches of a set of files, run and in all."""

    statements: int = 0
    covered: int = 0
    branches: int = 0
    covered_branches: int = 0

    def add(self, summary: dict) -> None:
        self.statements += summary["num_statements"]
        self.covered += summary["covered_lines"]
        self.branches += summary.get("num_branches", 0)
        self.covered_branches += summary.get("covered_branches", 0)

    @property
    def line_pct(self) -> float:
        return 100.0 * self.covered / self.statements if self.statements else 100.0

    @property
    def combined_pct(self) -> float:
        """coverage.py's own figure: statements and branches together."""
        whole = self.statements + self.branches
        return 100.0 * (self.covered + self.covered_branches) / whole if whole else 100.0

    @property
    def branch_pct(self) -> float:
        return 100.0 * self.covered_branches / self.branches if self.branches else 100.0


def _package_relative(name: str) -> str:
    """A reported file name from the package folder on (the runs ran in different checkouts)."""
    parts = Path(name).parts
    return str(Path(*parts[parts.index(PACKAGE):])) if PACKAGE in parts else name


def _group(rel: str) -> str:
    """``clca_edge/<subpackage>`` for files in a subpackage, ``clca_edge/*.py`` for the top level."""
    parts = Path(rel).parts
    return f"{parts[0]}/{parts[1]}" if len(parts) > 2 else f"{parts[0]}/*.py"


def load(path: Path) -> dict[str, dict]:
    """File (relative to the package's parent) -> its coverage.py JSON entry."""
    files = json.loads(path.read_text())["files"]
    return {_package_relative(name): entry for name, entry in files.items()}


def by_package(files: dict[str, dict]) -> dict[str, Counts]:
    groups: dict[str, Counts] = {}
    for rel, entry in files.items():
        groups.setdefault(_group(rel), Counts()).add(entry["summary"])
    return groups


def total(files: dict[str, dict]) -> Counts:
    counts = Counts()
    for entry in files.values():
        counts.add(entry["summary"])
    return counts


def _cells(c: Counts | None) -> list[str]:
    if c is None:
        return ["-", "-", "-"]
    return [str(c.statements), f"{c.line_pct:.1f}", f"{c.branch_pct:.1f}"]


def table(head: dict[str, dict], base: dict[str, dict] | None) -> list[str]:
    """One row per package and a total: statements, line %, branch %, and the change in line %."""
    head_groups, base_groups = by_package(head), by_package(base or {})
    if base is None:
        rows = ["| package | statements | line % | branch % |", "|---|---|---|---|"]
        rows += [f"| {g} | " + " | ".join(_cells(head_groups[g])) + " |" for g in sorted(head_groups)]
        return rows + ["| **total** | " + " | ".join(_cells(total(head))) + " |"]
    rows = ["| package | base statements | base line % | base branch % | now statements | now line % "
            "| now branch % | line % change |", "|---|---|---|---|---|---|---|---|"]
    for g in sorted(set(head_groups) | set(base_groups)):
        b, h = base_groups.get(g), head_groups.get(g)
        change = f"{h.line_pct - b.line_pct:+.1f}" if b and h else ("new" if h else "removed")
        rows.append(f"| {g} | " + " | ".join(_cells(b) + _cells(h)) + f" | {change} |")
    b, h = total(base), total(head)
    return rows + ["| **total** | " + " | ".join(_cells(b) + _cells(h)) + f" | {h.line_pct - b.line_pct:+.1f} |"]


def added_lines(ref: str, repo: Path) -> dict[str, set[int]]:
    """File -> line numbers added or changed since ``ref`` in the package (now's numbering)."""
    diff = subprocess.run(["git", "diff", "-U0", "--no-color", ref, "--", PACKAGE], cwd=repo,
                          capture_output=True, text=True, check=True).stdout
    added: dict[str, set[int]] = {}
    current = None
    for line in diff.splitlines():
        if line.startswith("+++ "):
            current = line[6:] if line.startswith("+++ b/") else None
        elif current and (m := HUNK.match(line)):
            start, count = int(m.group(1)), int(m.group(2) or 1)
            added.setdefault(current, set()).update(range(start, start + count))
    return added


def _ranges(lines: list[int]) -> str:
    spans: list[list[int]] = []
    for n in sorted(lines):
        if spans and n == spans[-1][1] + 1:
            spans[-1][1] = n
        else:
            spans.append([n, n])
    return ", ".join(f"{a}-{b}" if a != b else str(a) for a, b in spans)


def uncovered_new(head: dict[str, dict], added: dict[str, set[int]]) -> list[str]:
    """Markdown lines: per file, the added statements the suite does not run, largest first."""
    found = []
    for rel, lines in added.items():
        entry = head.get(rel)
        if entry is None:
            continue
        missing = sorted(lines & set(entry["missing_lines"]))
        new_statements = len(lines & (set(entry["missing_lines"]) | set(entry["executed_lines"])))
        if missing:
            found.append((len(missing), new_statements, rel, missing))
    found.sort(key=lambda f: (-f[0], f[2]))
    return [f"- `{rel}`: {n} of {s} new statements not run (lines {_ranges(m)})" for n, s, rel, m in found]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("head", type=Path, help="coverage.py JSON report of the run to describe")
    parser.add_argument("--base", type=Path, help="coverage.py JSON report of the run to compare with")
    parser.add_argument("--diff-base", metavar="REF", help="list the lines added since REF that no test runs")
    parser.add_argument("--top", type=int, default=15, help="how many files of uncovered new lines to list")
    args = parser.parse_args()
    head = load(args.head)
    base = load(args.base) if args.base else None
    print("\n".join(table(head, base)))
    runs = [("base", base), ("now", head)] if base is not None else [("now", head)]
    print("\nStatements and branches together (coverage.py's TOTAL): "
          + ", ".join(f"{name} {total(files).combined_pct:.1f}%" for name, files in runs))
    if args.diff_base:
        listed = uncovered_new(head, added_lines(args.diff_base, Path(__file__).resolve().parents[1]))
        print(f"\nNew lines since {args.diff_base} that no test runs ({len(listed)} files):\n")
        print("\n".join(listed[:args.top]) or "- none")


if __name__ == "__main__":
    main()
