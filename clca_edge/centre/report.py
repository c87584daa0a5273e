"""``fleet report``: one static HTML page (plots inlined as PNG data URIs) that opens from disk in
any browser, with no server: decisions per hour per device, refusal and low-confidence rates over
time, the confidence histogram, the class mix per device, and the device table.

The plots come first, each in a fixed-size box (``.plot``), so the page looks the same whatever
the fleet's size; matplotlib (the Agg backend, no display) draws them.
"""

from __future__ import annotations

import base64
import html
import io
from collections import defaultdict
from pathlib import Path
from typing import Dict, List, Tuple

from ..core.errors import ConfigError
from ..core.atomic_io import atomic_write_bytes
from .status import DeviceStatus, device_statuses
from .store import Store

PLOT_W, PLOT_H, DPI = 5.6, 3.6, 100        # inches: a 560 x 360 px box each
CSS = """
body { font-family: sans-serif; margin: 0; padding: 0; background: #fff; color: #222; }
header { height: 48px; padding: 8px 16px; box-sizing: border-box; }
header h1 { font-size: 20px; margin: 0; } header p { font-size: 12px; margin: 2px 0 0; color: #666; }
.plots { display: grid; grid-template-columns: 560px 560px; gap: 16px; padding: 0 16px; }
.plot { width: 560px; height: 360px; margin: 0; } .plot img { width: 560px; height: 360px; display: block; }
table { border-collapse: collapse; margin: 16px; font-size: 13px; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: left; }
"""


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise ConfigError("fleet report draws its plots with matplotlib: pip install matplotlib") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _hourly(store: Store) -> Dict[str, Dict[str, Dict[str, int]]]:
    """device -> hour ("YYYY-MM-DDTHH") -> {"decision": n, "refused": n, "low": n}."""
    out: Dict[str, Dict[str, Dict[str, int]]] = defaultdict(lambda: defaultdict(lambda: defaultdict(int)))
    for device, hour, kind, n, low in store.query(
            "SELECT device, substr(time, 1, 13), type, COUNT(*), SUM(confidence < 0.5) FROM records "
            "WHERE type IN ('decision', 'refused') AND time IS NOT NULL GROUP BY 1, 2, 3"):
        out[device][hour][kind] = n
        if kind == "decision":
            out[device][hour]["low"] = int(low or 0)
    return out


def _plot_hourly(plt, hourly, what: str) -> str:
    """Per device, one point per hour on a time axis all devices share."""
    fig, ax = plt.subplots(figsize=(PLOT_W, PLOT_H))
    axis = sorted({h for hours in hourly.values() for h in hours})
    at = {h: i for i, h in enumerate(axis)}
    for device, hours in sorted(hourly.items()):
        xs = sorted(hours)
        decided = [hours[h].get("decision", 0) for h in xs]
        if what == "decisions":
            ax.plot([at[h] for h in xs], decided, marker="o", label=device)
            continue
        refused = [hours[h].get("refused", 0) for h in xs]
        ax.plot([at[h] for h in xs], [r / max(1, r + d) for r, d in zip(refused, decided)], marker="o",
                label=f"{device} refused")
        ax.plot([at[h] for h in xs], [hours[h].get("low", 0) / max(1, d) for h, d in zip(xs, decided)], marker="s",
                linestyle="--", label=f"{device} low-confidence")
    step = max(1, len(axis) // 8)
    ax.set_xticks(range(0, len(axis), step), [axis[i][5:].replace("T", " ") + "h" for i in range(0, len(axis), step)],
                  rotation=30, fontsize=7)
    ax.set_title("decisions per hour" if what == "decisions" else "refusal and low-confidence rates per hour")
    ax.set_ylabel("decisions" if what == "decisions" else "share")
    if hourly:
        ax.legend(fontsize=7)
    fig.tight_layout()
    return _png(fig)


def _plot_confidence(plt, store: Store) -> str:
    fig, ax = plt.subplots(figsize=(PLOT_W, PLOT_H))
    by_device: Dict[str, List[float]] = defaultdict(list)
    for device, conf in store.query("SELECT device, confidence FROM records WHERE type = 'decision' "
                                    "AND confidence IS NOT NULL"):
        by_device[device].append(conf)
    if by_device:
        names = sorted(by_device)
        ax.hist([by_device[n] for n in names], bins=20, range=(0, 1), stacked=True, label=names)
        ax.legend(fontsize=7)
    ax.set_title("calibrated confidence of decisions")
    ax.set_xlabel("confidence")
    ax.set_ylabel("decisions")
    fig.tight_layout()
    return _png(fig)


def _plot_classes(plt, rows: List[DeviceStatus]) -> str:
    fig, ax = plt.subplots(figsize=(PLOT_W, PLOT_H))
    classes = sorted({c for r in rows for c in r.classes})
    left = [0.0] * len(rows)
    for c in classes:
        shares = [r.classes.get(c, 0) / max(1, sum(r.classes.values())) for r in rows]
        ax.barh([r.device for r in rows], shares, left=left, label=c)
        left = [a + b for a, b in zip(left, shares)]
    ax.set_title("class mix per device")
    ax.set_xlim(0, 1)
    if classes:
        ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return _png(fig)


def _table(rows: List[DeviceStatus], drops: Dict[str, int]) -> str:
    head = ("device", "online", "last seen", "bundle", "backend", "decisions", "refused", "low confidence",
            "frames", "self-check")
    cells = ["<tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr>"]
    for r in rows:
        values = (r.device, "yes" if r.online else f"no ({r.state or '?'})", r.last_seen or "-",
                  r.bundle_version or (r.bundle or "-")[:12], f"{r.backend or '-'} {r.precision or ''}",
                  r.decisions, r.refused,
                  "-" if r.low_confidence_share is None else f"{r.low_confidence_share:.1%}", r.frames,
                  r.selfcheck or "-")
        cells.append("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in values) + "</tr>")
    dropped = ", ".join(f"{html.escape(k)} {v}" for k, v in sorted(drops.items())) or "none"
    return f"<table id='devices'>{''.join(cells)}</table><p style='margin:16px'>dropped messages: {dropped}</p>"


def write_report(store: Store, out, generated: str) -> Tuple[Path, int]:
    """Write OUT/index.html; returns (its path, the number of plots)."""
    plt = _pyplot()
    rows = device_statuses(store)
    hourly = _hourly(store)
    plots = [("decisions", "decisions per hour per device", _plot_hourly(plt, hourly, "decisions")),
             ("rates", "refusal and low-confidence rates over time", _plot_hourly(plt, hourly, "rates")),
             ("confidence", "confidence histogram", _plot_confidence(plt, store)),
             ("classes", "class mix per device", _plot_classes(plt, rows))]
    plt.close("all")
    figures = "".join(f"<figure class='plot' id='plot-{key}'><img alt='{html.escape(alt)}' "
                      f"src='data:image/png;base64,{data}'></figure>" for key, alt, data in plots)
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>clca-edge fleet report</title>"
            f"<style>{CSS}</style></head><body><header><h1>clca-edge fleet: {len(rows)} device(s)</h1>"
            f"<p>generated {html.escape(generated)} from {html.escape(str(store.folder))}</p></header>"
            f"<div class='plots'>{figures}</div>{_table(rows, store.drops())}</body></html>")
    path = Path(out) / "index.html"
    atomic_write_bytes(path, page.encode())
    return path, len(plots)
