"""One training epoch as named steps: a ``Stepper`` (what one optimisation step needs: the model,
optimiser, schedule, grad scaler, the loss's settings) takes each batch through ``inputs`` ->
``loss`` -> ``update``; ``EpochSums`` keeps the epoch's sums on the device; ``train_epoch`` runs
the loader and returns typed ``EpochStats``.

Loss: cross-entropy of the clean images (label smoothing) plus the model's auxiliary loss; with
consistency views (``data.augment.ConsistencyViews``: batches of (N, V, 3, H, W), clean view
first; V = 3 with AugMix mixing) also ``config.consistency`` x the Jensen-Shannon divergence
between the views' predictions (training.losses), all views in one forward pass.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from typing import Callable, Iterator, Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..core.errors import TrainingError
from .config import TrainConfig
from .distributed import DistInfo, all_reduce_sum
from .losses import js_consistency

StepHook = Callable[[int, int], None]  # (epoch index, step within epoch) -> None; may raise
# Steps between checks for a non-finite loss (and progress-bar statistics): each check waits for
# the GPU, so not every step.
CHECK_EVERY = 25


@dataclass(frozen=True)
class EpochStats:
    loss: float
    acc: float  # percent, of the labelled (clean) views
    img_per_s: float
    images: int
    data_wait_s: float  # time blocked on the input pipeline
    model_s: float      # the rest: the model's steps (including waiting for the GPU)

    def timing_columns(self, val_s: float) -> dict:
        """Where the epoch's time went (metrics.csv columns): waiting for the input pipeline vs
        the model's steps, and the rate of each (empty: the pipeline never made the model wait)."""
        n, wait, model_s = self.images, self.data_wait_s, self.model_s
        return {"data_wait_s": round(wait, 3), "model_s": round(model_s, 3),
                "model_img_per_s": round(n / model_s, 2) if model_s > 0 else "",
                "data_img_per_s": round(n / wait, 2) if wait >= 1e-3 else "",
                "val_s": round(val_s, 3)}


@dataclass
class Stepper:
    """What one optimisation step needs. ``net`` is ``model`` as forward_with_aux, possibly
    wrapped in DDP (gradients are synchronised through its forward); ``views``: 1, or 2 or 3
    (AugMix mixing) for consistency views."""

    net: nn.Module
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    config: TrainConfig
    device: torch.device
    info: DistInfo
    views: int = 1
    total_steps: int = 1  # of the whole run: where the consistency ramp stands

    def consistency_weight(self) -> float:
        """config.consistency, ramped over the first config.consistency_ramp of the run's steps
        (the schedule's step count: restored on --resume, so a resumed run ramps identically)."""
        ramp = self.config.consistency_ramp * self.total_steps
        done = self.scheduler.last_epoch  # steps taken so far
        return self.config.consistency * (min(1.0, done / ramp) if ramp > 0 else 1.0)

    def inputs(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The batch as the model takes it, on the device: at least two samples (BatchNorm in the
        CLA head cannot train on one: a lone sample is repeated; an empty batch on a DDP rank
        becomes a zero-weight pair of zeros, since the other ranks wait in the all-reduce), and
        pairs flattened to (2N, 3, H, W), the clean views first."""
        if len(labels) == 0:
            size = self.config.model.img_size
            images = torch.zeros(2, *((self.views,) if self.views > 1 else ()), 3, size, size)
            labels = torch.zeros(2, dtype=torch.long)
        elif len(labels) == 1:
            images, labels = images.repeat(2, *[1] * (images.dim() - 1)), labels.repeat(2)
        images = images.to(self.device, non_blocking=True)
        labels = labels.to(self.device, non_blocking=True)
        if self.views > 1:
            images = images.transpose(0, 1).flatten(0, 1)
        return images, labels

    def loss(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss, logits of the labelled views)."""
        with torch.autocast(self.device.type, enabled=self.scaler.is_enabled()):
            logits, aux = self.net(images)
            loss = aux
            if self.views > 1:
                logits, *others = logits.chunk(self.views)
                loss = loss + self.consistency_weight() * js_consistency(logits, *others)
            loss = loss + F.cross_entropy(logits.float(), labels, label_smoothing=self.config.optim.label_smoothing)
        return loss, logits

    def update(self, loss: torch.Tensor) -> None:
        """Backward, clip, optimiser step, schedule step."""
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.config.optim.clip_grad > 0:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), self.config.optim.clip_grad)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        with warnings.catch_warnings():
            # GradScaler skips the optimizer step on overflow (by design); the schedule still advances.
            warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step()`")
            self.scheduler.step()


class EpochSums:
    """The epoch's loss and accuracy sums, on the device (reading them waits for the GPU, so only
    every CHECK_EVERY steps), and the first step whose loss was not finite."""

    def __init__(self, device: torch.device) -> None:
        self.loss = torch.zeros((), dtype=torch.float64, device=device)
        self.correct = torch.zeros((), dtype=torch.float64, device=device)
        self.bad_step = torch.full((), -1, dtype=torch.long, device=device)
        self.bad_loss = torch.zeros((), dtype=torch.float32, device=device)
        self.seen = 0

    def add(self, step: int, loss: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor, n: int) -> None:
        first_bad = (self.bad_step < 0) & ~torch.isfinite(loss)
        self.bad_step = torch.where(first_bad, step, self.bad_step)
        self.bad_loss = torch.where(first_bad, loss.float(), self.bad_loss)
        if n:
            self.loss += loss * n
            self.correct += (logits[:n].argmax(1) == labels[:n]).sum()
            self.seen += n

    def check_finite(self, epoch: int) -> None:
        step = int(self.bad_step)
        if step >= 0:
            raise TrainingError(f"loss became {float(self.bad_loss)} at epoch {epoch + 1}, step {step + 1}; "
                                "lower --lr or check the data")

    def text(self, world_size: int, seconds: float) -> str:
        seen = max(self.seen, 1)
        return (f"loss {float(self.loss) / seen:.4f}  acc {100 * float(self.correct) / seen:.1f}%  "
                f"{self.seen * world_size / seconds:.1f} img/s")

    def stats(self, info: DistInfo, elapsed: float, wait: float) -> EpochStats:
        """Summed over the ranks; the time split is this process's (rank 0's on the epoch line)."""
        s = all_reduce_sum(torch.stack([self.loss, self.correct, torch.tensor(
            float(self.seen), dtype=torch.float64, device=self.loss.device)]), info)
        total = max(float(s[2]), 1.0)
        return EpochStats(float(s[0]) / total, 100 * float(s[1]) / total, float(s[2]) / elapsed,
                          self.seen * info.world_size, wait, max(elapsed - wait, 0.0))


@dataclass
class EpochHooks:
    """Who hears about the epoch's steps: the test hook (may raise), the progress bar and its
    task, and the set the unreadable images' paths go into."""

    step_hook: Optional[StepHook]
    progress: object  # trainer._Progress: update(task, advance=..., stats=...)
    task: object
    skipped: set[str]


def _timed(it: Iterator, wait: list) -> Iterator:
    """Iterate ``it``, adding the time blocked on each batch to ``wait[0]``."""
    while True:
        t0 = time.perf_counter()
        try:
            batch = next(it)
        except StopIteration:
            return
        wait[0] += time.perf_counter() - t0
        yield batch


def train_epoch(stepper: Stepper, loader, epoch: int, hooks: EpochHooks,
                batches: Optional[Iterator] = None) -> EpochStats:
    """One epoch over ``loader`` (or ``batches``: its iterator, started ahead)."""
    stepper.net.train()
    samples = loader.dataset.samples
    sums = EpochSums(stepper.device)
    last_step = len(loader) - 1
    wait = [0.0]
    t0 = time.perf_counter()
    for step, batch in enumerate(_timed(batches if batches is not None else iter(loader), wait)):
        if hooks.step_hook is not None:
            hooks.step_hook(epoch, step)
        hooks.skipped.update(samples[i][0] for i in batch.skipped)
        n = len(batch.indices)
        if n == 0 and not stepper.info.enabled:
            continue
        images, labels = stepper.inputs(batch.images, batch.labels)
        loss, logits = stepper.loss(images, labels)
        if n == 0:
            loss = loss * 0.0
        sums.add(step, loss.detach(), logits, labels, n)
        stepper.update(loss)
        if (step + 1) % CHECK_EVERY and step != last_step:
            hooks.progress.update(hooks.task, advance=1)
            continue
        sums.check_finite(epoch)
        hooks.progress.update(hooks.task, advance=1, stats=sums.text(stepper.info.world_size,
                                                                    time.perf_counter() - t0))
    sums.check_finite(epoch)  # also after a loop left early (empty loader)
    return sums.stats(stepper.info, time.perf_counter() - t0, wait[0])


__all__ = ["CHECK_EVERY", "EpochHooks", "EpochStats", "EpochSums", "StepHook", "Stepper", "train_epoch"]
