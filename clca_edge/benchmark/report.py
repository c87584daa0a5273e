"""Benchmark output: a rich table, a CSV, and a PNG of accuracy (or latency) against GFLOPs in
the style of the paper's trade-off figure, with the plain ViT as the baseline."""

from __future__ import annotations

import csv
import datetime as dt
import os
import platform
from pathlib import Path
from typing import Optional

from .sweep import BenchRow


def machine_description() -> dict[str, str]:
    cpu = platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {}
    for name in ("torch", "onnxruntime", "tensorrt", "timm"):
        try:
            from importlib.metadata import version

            versions[name] = version(name)
        except Exception:
            pass
    return {"machine": f"{cpu}, {os.cpu_count()} cores", "python": platform.python_version(),
            "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "versions": ", ".join(f"{k} {v}" for k, v in versions.items())}


def run_header() -> dict:
    """What a benchmark script's JSON opens with: the machine, when, and the load it ran under."""
    return {"machine": machine_description()["machine"],
            "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "load": os.getloadavg()}


def emit_results(results: dict, json_path: Optional[Path]) -> None:
    """A benchmark script's results on stdout (the figures BENCHMARKS.md quotes), and to ``json_path``."""
    import json

    text = json.dumps(results, indent=2)
    print(text)
    if json_path:
        Path(json_path).write_text(text)


COLUMNS = ("method", "keep_rate", "clca", "backend", "gflops", "params_m", "p50_ms", "p90_ms", "throughput",
           "peak_mb", "top1", "speedup", "error")


def write_csv(rows: list[BenchRow], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS)
        w.writeheader()
        for r in rows:
            w.writerow({k: getattr(r, k) for k in COLUMNS})
    return path


def write_plot(rows: list[BenchRow], path: Path, title: str) -> Optional[Path]:
    """Accuracy against GFLOPs when accuracy was measured, else batch-1 latency against GFLOPs."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    metric = "top1" if any(r.top1 is not None for r in rows) else "p50_ms"
    ylabel = "top-1 accuracy (%)" if metric == "top1" else "latency p50, batch 1 (ms)"
    backend = rows[0].backend if rows else ""
    pts = [r for r in rows if r.backend == backend and getattr(r, metric) is not None]
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    groups: dict[str, list[BenchRow]] = {}
    for r in pts:
        groups.setdefault(r.label, []).append(r)
    for label, rs in sorted(groups.items()):
        rs.sort(key=lambda r: r.gflops)
        if label == "ViT (baseline)":
            for r in rs:
                ax.axhline(getattr(r, metric), color="black", ls="--", lw=1)
                ax.scatter([r.gflops], [getattr(r, metric)], marker="*", s=140, color="black", label=label, zorder=3)
            continue
        ax.plot([r.gflops for r in rs], [getattr(r, metric) for r in rs], marker="o", label=label)
        for r in rs:
            ax.annotate(f"{r.keep_rate:g}", (r.gflops, getattr(r, metric)), textcoords="offset points",
                        xytext=(3, 4), fontsize=7)
    ax.set_xlabel("GFLOPs (MACs, batch 1)")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def rich_table(rows: list[BenchRow], title: str):
    from rich.table import Table

    def fmt(v, spec=""):
        return "" if v is None else format(v, spec)

    table = Table(title=title)
    for col in ("model", "r", "backend", "GFLOPs", "params M", "p50 ms", "p90 ms", "img/s", "peak MB", "top-1",
                "speedup"):
        table.add_column(col, justify="left" if col in ("model", "backend") else "right")
    for r in rows:
        table.add_row(r.label, f"{r.keep_rate:g}", r.backend, fmt(r.gflops, ".2f"), fmt(r.params_m, ".1f"),
                      fmt(r.p50_ms, ".1f") or f"[red]{r.error[:30]}[/]", fmt(r.p90_ms, ".1f"),
                      fmt(r.throughput, ".1f"), fmt(r.peak_mb, ".0f"), fmt(r.top1, ".1f"),
                      fmt(r.speedup, ".2f") + ("x" if r.speedup else ""))
    return table
