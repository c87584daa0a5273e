"""``fleet harvest``: the collected uncertain frames as a folder a person labels by moving files.

    OUT/unlabelled/SUGGESTED_CLASS/DEVICE-FRAMEID-SHA12.jpg   what the model said (``_refused``: no class)
    OUT/labelled/                                             move each file to labelled/TRUE_CLASS/
    OUT/frames.csv                                            file, device, time, reason, scores
    OUT/label-studio.json                                     the same frames as Label Studio tasks,
                                                              with the model's class as a prediction

Then ``clca-edge train --data ORIGINAL --extra-data OUT/labelled`` trains on them (train split
only). Harvesting again adds only frames not yet in OUT (in either folder), so labelling can go
on across harvests.
"""

from __future__ import annotations

import csv
import io
import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List

from ..core.atomic_io import atomic_write_bytes
from .store import Store

REFUSED = "_refused"
CSV_FIELDS = ("file", "device", "frame_id", "time", "reason", "suggested", "confidence", "topk", "sha256")


@dataclass(frozen=True)
class HarvestResult:
    added: int
    already: int
    missing: int          # rows whose frame file is not in the store (never the case unless edited by hand)
    out: Path


def _safe(name: str) -> str:
    """A class name as a folder name (no separators, no leading dot)."""
    return re.sub(r"[^\w.-]+", "_", name).lstrip(".") or "_"


def harvest(store: Store, out) -> HarvestResult:
    out = Path(out)
    (out / "unlabelled").mkdir(parents=True, exist_ok=True)
    (out / "labelled").mkdir(exist_ok=True)
    present = {p.name for p in out.glob("*labelled/**/*.jpg")}
    rows: List[Dict[str, str]] = []
    added = already = missing = 0
    for device, frame_id, sha, time, reason, label, conf, topk, path in store.query(
            "SELECT device, frame_id, sha256, time, reason, label, confidence, topk, path FROM frames "
            "ORDER BY device, frame_id"):
        name = f"{device}-{frame_id:06d}-{sha[:12]}.jpg"
        suggested = _safe(label) if label else REFUSED
        rel = Path("unlabelled") / suggested / name
        rows.append({"file": str(rel), "device": device, "frame_id": str(frame_id), "time": time or "",
                     "reason": reason or "", "suggested": label or "", "confidence": "" if conf is None else f"{conf:.6f}",
                     "topk": topk or "[]", "sha256": sha})
        if name in present:
            already += 1
            continue
        src = store.folder / path
        if not src.is_file():
            missing += 1
            continue
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, out / rel)
        added += 1
    _write_csv(out / "frames.csv", rows)
    atomic_write_bytes(out / "label-studio.json", json.dumps(label_studio_tasks(rows), indent=1).encode())
    return HarvestResult(added, already, missing, out)


def _write_csv(path: Path, rows: List[Dict[str, str]]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_FIELDS)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_bytes(path, buf.getvalue().encode())


def label_studio_tasks(rows: List[Dict[str, str]]) -> List[dict]:
    """Label Studio's import format: one task per frame (image served as a local file, relative to
    OUT: set LOCAL_FILES_DOCUMENT_ROOT to OUT), the model's class as a pre-annotation to correct.
    Labelling config: ``<Image name="image" value="$image"/><Choices name="class" toName="image">``."""
    tasks = []
    for r in rows:
        task = {"data": {"image": f"/data/local-files/?d={r['file']}", "device": r["device"],
                         "reason": r["reason"], "time": r["time"], "sha256": r["sha256"]}}
        if r["suggested"]:
            task["predictions"] = [{"model_version": "clca-edge", "score": float(r["confidence"] or 0),
                                    "result": [{"from_name": "class", "to_name": "image", "type": "choices",
                                                "value": {"choices": [r["suggested"]]}}]}]
        tasks.append(task)
    return tasks
