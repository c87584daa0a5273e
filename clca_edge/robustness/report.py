"""The robustness report as a rich table, a CSV and a PNG (accuracy against severity per
perturbation, the clean figure as a line). Torch-free; matplotlib is optional (the train extra
has it; a device without it gets the table and the CSV, and a note instead of the PNG)."""

from __future__ import annotations

import csv
import io
import logging
from pathlib import Path
from typing import Optional

from ..core.atomic_io import atomic_write_bytes
from .evaluate import RobustnessReport
from .suite import BY_NAME

log = logging.getLogger(__name__)

CSV_NAME = "robustness.csv"
PNG_NAME = "robustness.png"
CSV_COLUMNS = ("variant", "name", "severity", "level", "top1", "drop", "refused", "judged_top1", "wrong_given")


def _level_text(name: str, level: float) -> str:
    unit = BY_NAME[name].unit if name in BY_NAME else ""
    if unit == "gain":
        return f"x{level:g}"
    if unit == "sigma / shorter side":
        return f"{100 * level:g}%"
    if unit == "degrees":
        return f"{level:g}°"
    return f"{level:g}"


def _pct(v: Optional[float]) -> str:
    return "" if v is None else f"{v:.2f}"


def table(reports: dict[str, RobustnessReport], title: str = "field robustness"):
    """One row per condition, a top-1 and a drop column per variant; each variant's worst drop in
    red. Judged reports (a bundle with its quality guard) add the share capture would refuse (the
    same frames for every variant) and, per variant, the share it would classify wrongly."""
    from rich.table import Table

    names = list(reports)
    first = reports[names[0]]
    judged = first.clean_judged is not None
    t = Table(title=title)
    for col in ("perturbation", "severity", "level"):
        t.add_column(col)
    for n in names:
        t.add_column(f"{n} top-1 %" if len(names) > 1 else "top-1 %", justify="right")
        t.add_column(f"{n} drop" if len(names) > 1 else "drop", justify="right")
    if judged:
        t.add_column("refused %", justify="right")
        for n in names:
            t.add_column(f"{n} wrong %" if len(names) > 1 else "wrong %", justify="right")

    def guard_cells(pick) -> list[str]:
        if not judged:
            return []
        return [_pct(pick(first).refused), *[_pct(pick(reports[n]).wrong_given) for n in names]]

    t.add_row("clean", "", "", *[c for n in names for c in (f"{reports[n].clean:.2f}", "")],
              *guard_cells(lambda r: r.clean_judged), style="bold")
    worst = {n: reports[n].worst for n in names}
    for i, r in enumerate(first.results):
        cells = []
        for n in names:
            row = reports[n].results[i]
            is_worst = worst[n] is not None and worst[n] == row and row.drop > 0
            cells += [f"{row.top1:.2f}", f"[red]{row.drop:+.2f}[/]" if is_worst else f"{row.drop:+.2f}"]
        t.add_row(r.name, str(r.severity), _level_text(r.name, r.level), *cells,
                  *guard_cells(lambda rep, i=i: rep.results[i]))
    t.add_row("worst", "", "", *[c for n in names for c in (
        f"{worst[n].name} s{worst[n].severity}" if worst[n] else "-", f"{worst[n].drop:+.2f}" if worst[n] else "")],
        *([""] * (1 + len(names)) if judged else []), style="bold")
    return t


def write_csv(path: Path, reports: dict[str, RobustnessReport]) -> Path:
    """One row per variant and condition (clean first); the guard's columns are empty when the
    frames were not judged."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    fmt = lambda v: "" if v is None else f"{v:.4f}"  # noqa: E731
    for variant, rep in reports.items():
        c = rep.clean_judged
        w.writerow([variant, "clean", 0, "", f"{rep.clean:.4f}", "0.0000",
                    *((fmt(c.refused), fmt(c.judged_top1), fmt(c.wrong_given)) if c else ("", "", ""))])
        for r in rep.results:
            w.writerow([variant, r.name, r.severity, f"{r.level:g}", f"{r.top1:.4f}", f"{r.drop:.4f}",
                        fmt(r.refused), fmt(r.judged_top1), fmt(r.wrong_given)])
    atomic_write_bytes(Path(path), buf.getvalue().encode())
    return Path(path)


def write_png(path: Path, reports: dict[str, RobustnessReport], title: str = "") -> Optional[str]:
    """Accuracy against severity, one panel per perturbation, each variant a line and its clean
    figure a dashed line. Returns None when written, else the reason it was not (no matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (pip install matplotlib, or the [train] extra); PNG not written"
    first = next(iter(reports.values()))
    perts = list(dict.fromkeys(r.name for r in first.results))
    if not perts:
        return "the suite was empty; PNG not written"
    cols = min(4, len(perts))
    rows = -(-len(perts) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.6 * rows), squeeze=False, sharey=True)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for k, name in enumerate(perts):
        ax = axes[k // cols][k % cols]
        for j, (variant, rep) in enumerate(reports.items()):
            pts = [r for r in rep.results if r.name == name]
            colour = colours[j % len(colours)]
            ax.plot([0] + [r.severity for r in pts], [rep.clean] + [r.top1 for r in pts], "o-", color=colour,
                    label=variant, markersize=3)
            ax.axhline(rep.clean, color=colour, linestyle="--", linewidth=0.8)
        pts = [r for r in first.results if r.name == name]
        ax.set_xticks([0] + [r.severity for r in pts])
        ax.set_xticklabels(["clean"] + [_level_text(name, r.level) for r in pts], fontsize=7)
        ax.set_title(name, fontsize=9)
        ax.set_ylim(0, 100)
        ax.grid(alpha=0.3)
        if k % cols == 0:
            ax.set_ylabel("top-1 %")
    for k in range(len(perts), rows * cols):
        axes[k // cols][k % cols].axis("off")
    if len(reports) > 1:
        axes[0][0].legend(fontsize=7)
    fig.suptitle(title or "accuracy under field perturbations (dashed: clean)", fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(Path(path), buf.getvalue())
    return None


def write_outputs(out: Path, reports: dict[str, RobustnessReport], title: str = "") -> tuple[list[Path], list[str]]:
    """CSV and PNG into ``out``; returns the files written and notes (e.g. why no PNG)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = [write_csv(out / CSV_NAME, reports)]
    note = write_png(out / PNG_NAME, reports, title)
    if note is None:
        written.append(out / PNG_NAME)
        return written, []
    return written, [note]


__all__ = ["CSV_COLUMNS", "CSV_NAME", "PNG_NAME", "table", "write_csv", "write_outputs", "write_png"]
