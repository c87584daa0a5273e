"""Write image files into a video, e.g. held-out leaves for a capture dry run without a camera."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from ..core.errors import OutputError


class VideoWriteError(OutputError):
    """The video file cannot be written."""


def write_video(images: Sequence[Path], out: Path, fps: float = 10.0, size: int = 224,
                frames_per_image: int = 1) -> int:
    """MJPG .avi of ``images`` (each letterboxed to ``size`` x ``size``); returns frames written.
    Unreadable images are skipped."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"MJPG"), fps, (size, size))
    if not writer.isOpened():
        raise VideoWriteError(f"cannot write a video to {out} (OpenCV without an MJPG writer?)")
    written = 0
    try:
        for path in images:
            img = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if img is None:
                continue
            h, w = img.shape[:2]
            scale = size / max(h, w)
            img = cv2.resize(img, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
            canvas = np.zeros((size, size, 3), np.uint8)
            top, left = (size - img.shape[0]) // 2, (size - img.shape[1]) // 2
            canvas[top:top + img.shape[0], left:left + img.shape[1]] = img
            for _ in range(frames_per_image):
                writer.write(canvas)
                written += 1
    finally:
        writer.release()
    if written == 0:
        raise VideoWriteError(f"no readable image among the {len(images)} given; nothing written to {out}")
    return written
