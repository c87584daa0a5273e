"""Confidence that means something: temperature scaling of the logits (Guo et al., 2017) and the
expected calibration error (ECE) that says how far confidences are from accuracies.

``deploy`` fits one temperature T on the held-out eval images' fp32 logits (minimising the negative
log-likelihood of softmax(logits / T)) and records a ``ConfidenceCalibration`` in the bundle
manifest (``confidence``); ``predict`` and ``capture`` divide the logits by T before the softmax, so
a ``--min-conf 0.6`` keeps decisions that are right about 60% of the time.

The eval set is small, so the fit is guarded against overfitting T: T is held to
``TEMPERATURE_BOUNDS``, a weak prior (weight 1/N) keeps a few perfectly separated images from
driving T to its lower bound, and the ECE after scaling is also reported cross-validated (T fitted
on the other folds): the in-sample figure flatters.

numpy only (no torch, no scipy): a grid over log T, refined by golden-section search.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Optional

import numpy as np

from .errors import BundleError

TEMPERATURE_BOUNDS = (0.05, 20.0)
# Standard deviation of the weak log-normal prior on T (see fit_objective): T = 1 / e^2 .. e^2 at 2 sigma.
PRIOR_SIGMA = 1.0
ECE_BINS = 15
CV_FOLDS = 5


def log_softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = np.asarray(logits, np.float64) / float(temperature)
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def nll(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of ``labels`` under softmax(logits / T)."""
    lp = log_softmax(logits, temperature)
    return float(-lp[np.arange(len(labels)), np.asarray(labels)].mean())


def ece(probs: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> float:
    """Expected calibration error: over ``bins`` equal-width confidence bins, the image-weighted
    mean |accuracy - mean confidence| of the top-1 prediction (0..1)."""
    probs = np.asarray(probs, np.float64)
    conf = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == np.asarray(labels)).astype(np.float64)
    # Bin b holds confidences in (b/bins, (b+1)/bins]; a confidence of exactly 0 joins the first.
    idx = np.clip(np.ceil(conf * bins).astype(int) - 1, 0, bins - 1)
    total = 0.0
    for b in range(bins):
        sel = idx == b
        if sel.any():
            total += sel.sum() * abs(correct[sel].mean() - conf[sel].mean())
    return float(total / len(conf))


def _golden(f, a: float, b: float, tol: float) -> float:
    """The minimiser of a unimodal ``f`` on [a, b], to ``tol``."""
    g = (math.sqrt(5) - 1) / 2
    c, d = b - g * (b - a), a + g * (b - a)
    fc, fd = f(c), f(d)
    while b - a > tol:
        if fc <= fd:
            b, d, fd = d, c, fc
            c = b - g * (b - a)
            fc = f(c)
        else:
            a, c, fc = c, d, fd
            d = a + g * (b - a)
            fd = f(d)
    return (a + b) / 2


def fit_objective(logits: np.ndarray, labels: np.ndarray, prior_sigma: float = PRIOR_SIGMA):
    """What the fit minimises, as a function of log T: the mean NLL plus a weak log-normal prior on
    T centred on 1, weighted 1/N (a MAP estimate). Its weight vanishes as the eval set grows; on a
    few dozen images it keeps logits the eval set happens to separate perfectly (NLL -> 0 as T -> 0)
    from making every field prediction near-certain."""
    n = len(labels)

    def objective(log_t: float) -> float:
        prior = 0.0 if not prior_sigma else log_t ** 2 / (2.0 * prior_sigma ** 2 * n)
        return nll(logits, labels, math.exp(log_t)) + prior

    return objective


def fit_temperature(logits: np.ndarray, labels: np.ndarray, bounds: tuple = TEMPERATURE_BOUNDS,
                    prior_sigma: float = PRIOR_SIGMA, tol: float = 1e-5) -> float:
    """The T within ``bounds`` minimising ``fit_objective``: a coarse grid over log T (the
    objective need not be convex there), then a golden-section search between the best grid
    point's neighbours, to ``tol`` in log T."""
    logits = np.asarray(logits, np.float64)
    labels = np.asarray(labels)
    if logits.ndim != 2 or len(logits) != len(labels) or len(labels) == 0:
        raise ValueError(f"logits {logits.shape} and labels {labels.shape} must be (N, C) and (N,), N > 0")
    lo_t, hi_t = bounds
    if not 0 < lo_t < hi_t:
        raise ValueError(f"temperature bounds {bounds} must satisfy 0 < low < high")
    f = fit_objective(logits, labels, prior_sigma)
    grid = np.linspace(math.log(lo_t), math.log(hi_t), 121)
    i = int(np.argmin([f(g) for g in grid]))
    log_t = _golden(f, grid[max(i - 1, 0)], grid[min(i + 1, len(grid) - 1)], tol)
    return float(min(max(math.exp(log_t), lo_t), hi_t))


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    return np.exp(log_softmax(logits, temperature))


@dataclass(frozen=True)
class ConfidenceCalibration:
    """The manifest's ``confidence``: the fitted temperature and the calibration it gives."""

    temperature: float = 1.0
    images: int = 0
    ece_before: Optional[float] = None
    ece_after: Optional[float] = None
    ece_after_cv: Optional[float] = None     # T fitted on the other folds of the eval set
    nll_before: Optional[float] = None
    nll_after: Optional[float] = None
    bins: int = ECE_BINS
    bounds: tuple = TEMPERATURE_BOUNDS
    prior_sigma: float = PRIOR_SIGMA
    at_bound: bool = False                   # T hit a bound: the eval set wanted it further out
    fitted_on: str = ""

    def to_dict(self) -> dict:
        r = lambda v: None if v is None else round(float(v), 6)  # noqa: E731
        return {"temperature": r(self.temperature), "images": self.images, "ece_before": r(self.ece_before),
                "ece_after": r(self.ece_after), "ece_after_cv": r(self.ece_after_cv),
                "nll_before": r(self.nll_before), "nll_after": r(self.nll_after), "bins": self.bins,
                "bounds": list(self.bounds), "prior_sigma": self.prior_sigma, "at_bound": self.at_bound,
                "fitted_on": self.fitted_on}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ConfidenceCalibration":
        try:
            t = float(d["temperature"])
            if not (math.isfinite(t) and t > 0):
                raise ValueError(f"temperature {t}")
            opt = lambda k: None if d.get(k) is None else float(d[k])  # noqa: E731
            return cls(temperature=t, images=int(d.get("images", 0)), ece_before=opt("ece_before"),
                       ece_after=opt("ece_after"), ece_after_cv=opt("ece_after_cv"), nll_before=opt("nll_before"),
                       nll_after=opt("nll_after"), bins=int(d.get("bins", ECE_BINS)),
                       bounds=tuple(float(v) for v in d.get("bounds", TEMPERATURE_BOUNDS)),
                       prior_sigma=float(d.get("prior_sigma", PRIOR_SIGMA)),
                       at_bound=bool(d.get("at_bound", False)), fitted_on=str(d.get("fitted_on", "")))
        except (KeyError, TypeError, ValueError) as e:
            raise BundleError(f"the bundle's confidence calibration is malformed ({e}); "
                              "re-run clca-edge deploy") from None


def _cv_ece(logits: np.ndarray, labels: np.ndarray, bounds: tuple, prior_sigma: float, folds: int, bins: int
            ) -> Optional[float]:
    """ECE of probabilities each scaled by a T fitted without its fold (folds by index mod k)."""
    n = len(labels)
    if n < 2 * folds:
        return None
    probs = np.empty_like(logits, dtype=np.float64)
    fold = np.arange(n) % folds
    for k in range(folds):
        t = fit_temperature(logits[fold != k], labels[fold != k], bounds, prior_sigma)
        probs[fold == k] = softmax(logits[fold == k], t)
    return ece(probs, labels, bins)


def calibrate(logits: np.ndarray, labels: np.ndarray, bounds: tuple = TEMPERATURE_BOUNDS, bins: int = ECE_BINS,
              fitted_on: str = "", prior_sigma: float = PRIOR_SIGMA) -> ConfidenceCalibration:
    """Fit T on (logits, labels) and report ECE/NLL before and after (and cross-validated)."""
    logits = np.asarray(logits, np.float64)
    labels = np.asarray(labels, np.int64)
    t = fit_temperature(logits, labels, bounds, prior_sigma)
    # Within 10% of a bound: the data wanted T further out (separable logits: T -> 0) than allowed.
    at_bound = bool(t <= bounds[0] * 1.1 or t >= bounds[1] / 1.1)
    return ConfidenceCalibration(
        temperature=t, images=len(labels), ece_before=ece(softmax(logits), labels, bins),
        ece_after=ece(softmax(logits, t), labels, bins),
        ece_after_cv=_cv_ece(logits, labels, bounds, prior_sigma, CV_FOLDS, bins),
        nll_before=nll(logits, labels), nll_after=nll(logits, labels, t), bins=bins, bounds=tuple(bounds),
        prior_sigma=prior_sigma,
        at_bound=at_bound, fitted_on=fitted_on)
