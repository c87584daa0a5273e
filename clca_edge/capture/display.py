"""What a person may watch: a rich live panel in a terminal, and an optional OpenCV overlay
window (--show). Both are optional extras on top of the headless loop; neither may stop it."""

from __future__ import annotations

import logging
import time
from typing import Optional

import numpy as np

from .hooks import FrameObserver

log = logging.getLogger(__name__)


class FpsMeter:
    def __init__(self, alpha: float = 0.1):
        self.alpha, self.fps, self._last = alpha, 0.0, None

    def tick(self) -> float:
        now = time.monotonic()
        if self._last is not None and now > self._last:
            inst = 1.0 / (now - self._last)
            self.fps = inst if self.fps == 0 else (1 - self.alpha) * self.fps + self.alpha * inst
        self._last = now
        return self.fps


class LivePanel:
    """A rich table refreshed a few times a second: last decision (or refused frame and why), top-k,
    FPS, latencies, class counts and refusals."""

    def __init__(self, console, title: str):
        from rich.live import Live

        self.console, self.title = console, title
        self.fps = FpsMeter()
        self._live = Live(self._render(None, None), console=console, refresh_per_second=4, transient=False)

    def __enter__(self) -> "LivePanel":
        self._live.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._live.__exit__(*exc)

    def _render(self, record: Optional[dict], summary):
        from rich.table import Table

        t = Table(title=self.title, show_header=False, expand=False)
        t.add_column(style="bold")
        t.add_column()
        if record is None:
            t.add_row("status", "waiting for frames...")
            return t
        lat = record["latency_ms"]
        if record["type"] == "refused":
            t.add_row("frame", f"source frame {record['source_frame']}")
            t.add_row("class", f"[red]refused: {', '.join(record['reasons'])}[/] (not classified)")
            t.add_row("measures", ", ".join(f"{k} {v:g}" for k, v in record["measures"].items()))
            t.add_row("latency ms", f"grab {lat['grab']:.1f} / pre {lat['preprocess']:.1f}")
        else:
            t.add_row("frame", str(record["frame"]))
            style = "yellow" if record["class"] == "uncertain" else "green"
            t.add_row("class", f"[{style}]{record['class']}[/] ({record['confidence']:.2f})")
            t.add_row("top-k", ", ".join(f"{d['class']} {d['conf']:.2f}" for d in record["topk"]))
            t.add_row("latency ms", f"grab {lat['grab']:.1f} / pre {lat['preprocess']:.1f} / infer {lat['infer']:.1f}")
        t.add_row("fps", f"{self.fps.fps:.1f}")
        t.add_row("backend", f"{record['backend']} ({record['precision']})")
        t.add_row("counts", ", ".join(f"{c}: {n}" for c, n in summary.class_counts.most_common(5)))
        t.add_row("refused", f"{summary.refused}" + (" (" + ", ".join(
            f"{r}: {n}" for r, n in summary.refused_reasons.most_common()) + ")" if summary.refused else ""))
        t.add_row("camera", f"lost {summary.camera_lost}, reconnected {summary.reconnected}, stalls {summary.stalls}")
        return t

    def update(self, record: dict, summary) -> None:
        self.fps.tick()
        self._live.update(self._render(record, summary))


class OverlayWindow:
    """cv2.imshow with class, confidence and FPS drawn on the frame. OpenCV builds without GUI
    support (opencv-python-headless) raise on the first imshow: then the window is switched off
    with one warning and the run goes on."""

    def __init__(self, name: str = "clca-edge"):
        self.name, self.enabled, self.fps = name, True, FpsMeter()

    def show(self, bgr: np.ndarray, record: dict) -> bool:
        """Draw and show; False if the user pressed q/Esc (a request to stop)."""
        if not self.enabled:
            return True
        import cv2

        self.fps.tick()
        img = bgr.copy()
        if record["type"] == "refused":
            text = f"refused: {record['reason']}  {self.fps.fps:.1f} fps"
            colour = (0, 0, 255)
        else:
            text = f"{record['class']} {record['confidence']:.2f}  {self.fps.fps:.1f} fps"
            colour = (0, 200, 255) if record["class"] == "uncertain" else (0, 220, 0)
        cv2.putText(img, text, (10, 30), cv2.FONT_HERSHEY_SIMPLEX, 0.8, (0, 0, 0), 4, cv2.LINE_AA)
        cv2.putText(img, text, (10, 30), cv2.FONT_HERSHEY_SIMPLEX, 0.8, colour, 2, cv2.LINE_AA)
        try:
            cv2.imshow(self.name, img)
            key = cv2.waitKey(1) & 0xFF
        except cv2.error as e:
            log.warning("--show: no display window available (%s); continuing headless", str(e).splitlines()[-1][:120])
            self.enabled = False
            return True
        return key not in (ord("q"), 27)

    def close(self) -> None:
        if self.enabled:
            try:
                import cv2

                cv2.destroyWindow(self.name)
            except Exception:
                pass


class DisplayObserver(FrameObserver):
    """The live panel and/or the overlay window as a capture run's observer; q/Esc in the window
    asks the run to stop."""

    def __init__(self, panel: Optional[LivePanel] = None, overlay: Optional[OverlayWindow] = None):
        self.panel, self.overlay = panel, overlay
        self._run = None

    def on_start(self, run) -> None:
        self._run = run

    def on_decision(self, frame, record) -> None:
        self._show(frame, record.to_dict())

    def on_refusal(self, frame, record) -> None:
        self._show(frame, record.to_dict())

    def _show(self, frame, record: dict) -> None:
        if self.panel is not None:
            self.panel.update(record, self._run.summary)
        if self.overlay is not None and self.overlay.show(frame.bgr, record) is False:
            self._run.stop.set("stop requested by the display")
