"""Capture follows the agent's pointer: when ``bundles/current`` names another bundle folder (the
agent switched, or rolled back), the new bundle is opened, verified and self-checked on this
switch's own thread, the backend and variant chosen as at start, and handed to the capture loop,
which classifies the next frame with it (``capture.hooks.BundleSwitch``): no restart, no frame
lost, a ``bundle_switch`` record in the field log and every record naming its bundle (its
manifest sha, and ``bundle``: id and version from the agent's state). Torch-free (device side).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
from pathlib import Path
from typing import Optional

from ..capture.bundle_runtime import BundleRuntime
from ..capture.hooks import BundleSwitch
from ..capture.quality import QualityConfig
from ..core.errors import ClcaEdgeError
from ..runtime.open import RuntimeConfig, open_runtime
from .slots import POINTER_NAME, STATE_NAME

log = logging.getLogger(__name__)


def agent_pointer(bundle: Path) -> bool:
    """Is ``bundle`` the pointer an agent keeps (``DIR/current`` beside ``DIR/state.json``)?"""
    bundle = Path(bundle)
    return bundle.name == POINTER_NAME and bundle.is_symlink() and (bundle.parent / STATE_NAME).is_file()


def resolve_pointer(runtime: RuntimeConfig) -> "tuple[RuntimeConfig, Optional[Path]]":
    """(the config opening the bundle the pointer names now, the pointer) for an agent's pointer;
    (``runtime``, None) for any other bundle path."""
    if not agent_pointer(Path(runtime.bundle)):
        return runtime, None
    return dataclasses.replace(runtime, bundle=str(Path(runtime.bundle).resolve())), Path(runtime.bundle)


def bundle_label(pointer: Path, target: Path) -> str:
    """"ID vN" of the bundle folder ``target`` from the agent's state ("" when it does not say)."""
    try:
        state = json.loads((Path(pointer).parent / STATE_NAME).read_text())
    except (OSError, ValueError):
        return ""
    for key in ("installed", "previous"):
        b = state.get(key) if isinstance(state, dict) else None
        if isinstance(b, dict) and (Path(pointer).parent / str(b.get("root", ""))).resolve() == Path(target).resolve():
            return f"{b.get('bundle_id')} v{b.get('version')}"
    return ""


class PointerSwitch(BundleSwitch):
    """Polls the pointer every ``poll_s`` on its own thread; ``maybe_switch`` only takes what is ready."""

    def __init__(self, pointer: Path, runtime: RuntimeConfig, quality: QualityConfig, poll_s: float = 0.5):
        self.pointer, self.runtime, self.quality, self.poll_s = Path(pointer), runtime, quality, poll_s
        self.target = Path(runtime.bundle).resolve()   # what capture opened at start
        self._ready: Optional[BundleRuntime] = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="bundle-switch", daemon=True)
        self.failures = 0

    def _read(self) -> Optional[Path]:
        try:
            return self.pointer.resolve(strict=True)
        except OSError:
            return None

    def start(self) -> "PointerSwitch":
        self._thread.start()
        return self

    def _watch(self) -> None:
        while not self._stop.wait(self.poll_s):
            target = self._read()
            if target is None or target == self.target:
                continue
            self.target = target   # tried once per change: a bundle that fails to open is not retried
            try:
                model, sel = open_runtime(dataclasses.replace(self.runtime, bundle=str(target)))
            except ClcaEdgeError as e:
                self.failures += 1
                log.error("the agent switched to %s, which capture cannot open (%s); staying on the bundle it runs",
                          target, e)
                continue
            rt = BundleRuntime.create(model, sel, self.quality, label=self.label(target))
            try:
                rt.warm_up()   # here, not on the capture loop's thread: its first frame is not a cold run
            except Exception as e:  # a runtime that cannot run one inference is not switched to
                self.failures += 1
                log.error("the new bundle %s failed its first inference (%s); staying on the bundle it runs", target, e)
                rt.close()
                continue
            with self._lock:
                stale, self._ready = self._ready, rt
            if stale is not None:
                stale.close()

    def label(self, target: Path) -> str:
        return bundle_label(self.pointer, target)

    def maybe_switch(self) -> Optional[BundleRuntime]:
        with self._lock:
            rt, self._ready = self._ready, None
        return rt

    def close(self) -> None:
        self._stop.set()
        self._thread.join(30)
        rt = self.maybe_switch()
        if rt is not None:
            rt.close()


__all__ = ["PointerSwitch", "agent_pointer", "bundle_label", "resolve_pointer"]
