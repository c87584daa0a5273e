"""From logits to a decision: softmax (with the bundle's temperature), top-k, smoothing over a
window, abstention."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from ..core.errors import ConfigError

UNCERTAIN = "uncertain"


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Probabilities of softmax(logits / temperature): the bundle's fitted temperature
    (``RuntimeModel.temperature``, 1.0 for bundles without one) makes confidences calibrated."""
    z = np.asarray(logits, dtype=np.float64)
    if temperature != 1.0:
        z = z / temperature
    z = np.exp(z - z.max())
    return (z / z.sum()).astype(np.float32)


def top_k(probs: np.ndarray, class_names: Sequence[str], k: int) -> list[tuple[str, float]]:
    """The ``k`` most probable classes, best first, ties broken by class index."""
    k = min(k, len(probs))
    idx = np.argsort(-probs, kind="stable")[:k]
    return [(class_names[i], float(probs[i])) for i in idx]


@dataclass(frozen=True)
class Decision:
    label: str          # smoothed class, or UNCERTAIN
    confidence: float   # smoothed probability of the smoothed top class
    raw_label: str      # this frame's own top-1
    uncertain: bool


class Smoother:
    """Mean of the last ``window`` probability vectors; below ``min_conf`` the decision abstains."""

    def __init__(self, class_names: Sequence[str], window: int = 1, min_conf: float = 0.0):
        if window < 1:
            raise ConfigError(f"--smooth {window} must be >= 1 frame")
        if not 0.0 <= min_conf <= 1.0:
            raise ConfigError(f"--min-conf {min_conf} is outside [0, 1]")
        self.class_names = list(class_names)
        self.min_conf = min_conf
        self._window: deque[np.ndarray] = deque(maxlen=window)
        self._sum: Optional[np.ndarray] = None   # of the window, kept as frames come and go (float64)

    def update(self, probs: np.ndarray) -> Decision:
        p = np.asarray(probs, dtype=np.float64)
        if self._sum is None:
            self._sum = p.copy()
        else:
            if len(self._window) == self._window.maxlen:
                self._sum -= self._window[0]
            self._sum += p
        self._window.append(p)
        mean = self._sum / len(self._window)
        best = int(np.argmax(mean))
        conf = float(mean[best])
        uncertain = conf < self.min_conf
        return Decision(UNCERTAIN if uncertain else self.class_names[best], conf,
                        self.class_names[int(np.argmax(probs))], uncertain)

    def reset(self) -> None:
        self._window.clear()
        self._sum = None
