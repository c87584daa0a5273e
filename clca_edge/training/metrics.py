"""Classification metrics (top-1/top-5, per-class accuracy, confusion matrix), their CSV/PNG
outputs, and the per-epoch metrics log (CSV, plus TensorBoard when it is installed)."""

from __future__ import annotations

import csv
import io
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from .checkpoint import atomic_write_bytes

log = logging.getLogger(__name__)


@dataclass
class ClassificationReport:
    class_names: list[str]
    confusion: np.ndarray  # (K, K) int64, rows = true class, columns = predicted
    top5_correct: int
    loss_sum: float = 0.0
    skipped: Sequence[str] = ()

    @property
    def num_images(self) -> int:
        return int(self.confusion.sum())

    @property
    def top1(self) -> float:
        n = self.num_images
        return 100.0 * float(np.trace(self.confusion)) / n if n else 0.0

    @property
    def top5(self) -> float:
        n = self.num_images
        return 100.0 * self.top5_correct / n if n else 0.0

    @property
    def loss(self) -> float:
        n = self.num_images
        return self.loss_sum / n if n else float("nan")

    def per_class(self) -> list[dict[str, Any]]:
        rows = []
        for i, name in enumerate(self.class_names):
            n = int(self.confusion[i].sum())
            rows.append({"class_id": i, "class_name": name, "images": n,
                         "accuracy": 100.0 * float(self.confusion[i, i]) / n if n else None})
        return rows

    def to_dict(self) -> dict[str, Any]:
        return {"top1": self.top1, "top5": self.top5, "num_images": self.num_images, "loss": self.loss,
                "skipped_images": len(self.skipped), "per_class": self.per_class()}


def topk_counts(logits, labels, k: int = 5) -> tuple[np.ndarray, int]:
    """Predicted classes (top-1) and how many labels are within the top-min(k, K) logits."""
    k = min(k, logits.shape[1])
    topk = logits.topk(k, dim=1).indices
    hit5 = int((topk == labels[:, None]).any(dim=1).sum())
    return topk[:, 0].cpu().numpy(), hit5


def write_confusion_csv(path: Path, report: ClassificationReport) -> None:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["true \\ predicted"] + report.class_names)
    for name, row in zip(report.class_names, report.confusion):
        w.writerow([name] + [int(v) for v in row])
    atomic_write_bytes(Path(path), buf.getvalue().encode())


def write_per_class_csv(path: Path, report: ClassificationReport) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=["class_id", "class_name", "images", "accuracy"])
    w.writeheader()
    for row in report.per_class():
        w.writerow({**row, "accuracy": "" if row["accuracy"] is None else f"{row['accuracy']:.4f}"})
    atomic_write_bytes(Path(path), buf.getvalue().encode())


def confusion_image(report: ClassificationReport, max_side: int = 900) -> np.ndarray:
    """Row-normalised confusion matrix as a BGR heat map (OpenCV only, no plotting library)."""
    import cv2

    cm = report.confusion.astype(np.float64)
    k = cm.shape[0]
    norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    cell = max(2, min(48, max_side // max(k, 1)))
    heat = cv2.applyColorMap((norm * 255).astype(np.uint8), cv2.COLORMAP_VIRIDIS)
    heat = cv2.resize(heat, (k * cell, k * cell), interpolation=cv2.INTER_NEAREST)
    labels = k <= 40
    margin = 140 if labels else 20
    img = np.full((k * cell + margin + 30, k * cell + margin + 10, 3), 255, np.uint8)
    img[margin:margin + k * cell, margin:margin + k * cell] = heat
    font = cv2.FONT_HERSHEY_SIMPLEX
    cv2.putText(img, f"top-1 {report.top1:.2f}%  n={report.num_images}  (rows: true, cols: predicted)",
                (5, 18), font, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    if labels:
        scale = min(0.4, cell / 30)
        for i, name in enumerate(report.class_names):
            y = margin + i * cell + cell // 2 + 4
            cv2.putText(img, name[:18], (4, y), font, scale, (0, 0, 0), 1, cv2.LINE_AA)
        col = np.full((margin - 30, k * cell, 3), 255, np.uint8)
        col = np.ascontiguousarray(np.rot90(col, 1))  # write column labels sideways
        for i, name in enumerate(report.class_names):
            cv2.putText(col, name[:18], (4, (k - 1 - i) * cell + cell // 2 + 4), font, scale, (0, 0, 0), 1,
                        cv2.LINE_AA)
        img[30:margin, margin:margin + k * cell] = np.rot90(col, -1)
        if cell >= 22:
            for i in range(k):
                for j in range(k):
                    if cm[i, j]:
                        colour = (0, 0, 0) if norm[i, j] > 0.6 else (255, 255, 255)
                        cv2.putText(img, str(int(cm[i, j])), (margin + j * cell + 3, margin + i * cell + cell // 2 + 4),
                                    font, min(0.4, cell / 60), colour, 1, cv2.LINE_AA)
    return img


def write_confusion_png(path: Path, report: ClassificationReport) -> None:
    import cv2

    ok, data = cv2.imencode(".png", confusion_image(report))
    if not ok:
        raise RuntimeError(f"could not encode {path}")
    atomic_write_bytes(Path(path), data.tobytes())


class MetricsLog:
    """``metrics.csv``: one row per finished epoch, rewritten atomically; on resume the rows of
    epochs that will be run again are dropped."""

    def __init__(self, path: Path, keep_until_epoch: int = 0) -> None:
        self.path = Path(path)
        self.rows: list[dict[str, Any]] = []
        if keep_until_epoch and self.path.is_file():
            with open(self.path, newline="") as f:
                self.rows = [r for r in csv.DictReader(f) if int(r["epoch"]) <= keep_until_epoch]
        self.tb = _tensorboard(self.path.parent)

    def append(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        fields = list(row)
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=fields, extrasaction="ignore")
        w.writeheader()
        for r in self.rows:
            w.writerow(r)
        atomic_write_bytes(self.path, buf.getvalue().encode())
        if self.tb is not None:
            for k, v in row.items():
                if k != "epoch" and isinstance(v, (int, float)):
                    self.tb.add_scalar(k, v, int(row["epoch"]))
            self.tb.flush()

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def _tensorboard(folder: Path) -> Optional[Any]:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except Exception:  # tensorboard not installed: CSV only
        return None
    return SummaryWriter(str(folder / "tensorboard"))
