"""The training loop: fine-tune (or train from scratch) a CLCA model, validate every epoch, keep
``last`` and ``best`` checkpoints and a resume file, log metrics; single process or torchrun/DDP.

Only rank 0 writes files. Every epoch reseeds the model's randomness from (seed, epoch, rank), and
each sample's augmentation is drawn from a seed of (seed, epoch, sample index) wherever it is
transformed (data.dataset), so DataLoader workers persist across epochs and a resumed run still
replays exactly what an uninterrupted one would have done. Images are read through a decoded-image
cache (``--cache``, data.cache) filled by the data check's single decode pass.

End of an epoch, in this order: the weights go to ``last.pending.safetensors``, then ``best``, then
``train_state.pt``, then the pending file replaces ``last.safetensors``. A crash between any two
steps leaves a run that ``--resume`` continues exactly: before the state is written the epoch is
trained again from the same start; after it, the pending weights are moved into place.

Should ``last.safetensors`` and ``train_state.pt`` still disagree on the epoch (a run written by
an older version, which had a crash window between them, or files copied by hand), ``--resume``
says so (a logged warning and a line in the CLI output) and continues after the epoch of the
weights: the epoch counter, learning-rate schedule, best score and metrics.csv are set to that
epoch, so no epoch is trained twice or skipped; only the optimizer moments come from the other
epoch, so the run will not match an uninterrupted one bit for bit.
"""

from __future__ import annotations

import logging
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Optional, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler

from ..data.cache import RUN_CACHE_DIR, RunCache, cached_spec, fill, open_run_cache
from ..data.dataset import EpochSampler, LeafImages, collate_skipping
from ..data.sources import DataError, DataSplits, load_splits, write_split_files
from ..data.augment import AugmentPreset, ConsistencyViews, build_train_transform, get_preset
from ..core.errors import ConfigError, OutputError
from ..core.output_paths import check_writable_dir, holds, is_empty_dir, make_dirs
from ..data.check import DataCheck, check_training_data
from ..core.image_cache import CACHE_FILE, cache_settings
from ..core.preprocess import INTERPOLATIONS, PreprocessSpec
from .checkpoint import CheckpointError, CheckpointMeta, read_checkpoint_meta, save_checkpoint
from .config import TrainConfig, config_differences
from .distributed import DistInfo, barrier, gather_objects, init_distributed, shutdown
from .epoch import EpochHooks, StepHook, Stepper, train_epoch
from .evaluate import eval_loader, evaluate_model, resolve_device
from .metrics import MetricsLog, write_confusion_csv, write_per_class_csv
from .optim import build_optimizer, build_scheduler
from .state import STATE_FILE, TrainingState, load_training_state, save_training_state

log = logging.getLogger(__name__)

LAST, PENDING = "last.safetensors", "last.pending.safetensors"
RUN_MARKER = ".clca-edge-run"  # written first into a new run folder: a crash before epoch 1 still left "ours"


@dataclass
class TrainResult:
    out: Path
    epochs: int
    best_top1: float
    best_epoch: int
    last_top1: float
    class_names: list[str]
    skipped: list[str] = field(default_factory=list)
    history: list[dict] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)  # things the user must hear about (e.g. resume repairs)


class _WithAux(nn.Module):
    """DDP synchronises gradients only through ``forward``; route forward_with_aux through it."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model.forward_with_aux(x)


def preprocess_spec(model, config: TrainConfig, cfg: Optional[dict] = None) -> PreprocessSpec:
    """Mean/std (and interpolation) of the backbone's pretrained config, the run's crop. ``cfg``:
    that pretrained config when there is no model yet (models.factory.backbone_pretrained_cfg)."""
    if cfg is None:
        cfg = getattr(model.backbone, "pretrained_cfg", None) or {}
    kwargs = {"img_size": config.model.img_size, "crop_pct": config.crop_pct,
              "colour_constancy": config.colour_constancy, "framing": config.framing}
    if cfg.get("mean") and cfg.get("std"):
        kwargs.update(mean=tuple(cfg["mean"]), std=tuple(cfg["std"]))
    if cfg.get("interpolation") in INTERPOLATIONS:
        kwargs["interpolation"] = cfg["interpolation"]
    return PreprocessSpec(**kwargs)


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _epoch_seed(seed: int, epoch: int, rank: int) -> int:
    return seed * 1_000_003 + epoch * 1009 + rank


class _Progress:
    """rich progress bar with loss / acc / img/s on rank 0; nothing elsewhere."""

    def __init__(self, enabled: bool, console=None) -> None:
        self.p = None
        if enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.p = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                              TextColumn("{task.fields[stats]}"), TimeRemainingColumn(), console=console,
                              transient=False)

    def __enter__(self):
        if self.p:
            self.p.start()
        return self

    def __exit__(self, *exc):
        if self.p:
            self.p.stop()

    def task(self, desc: str, total: int):
        return self.p.add_task(desc, total=total, stats="") if self.p else None

    def update(self, task, **kw) -> None:
        if self.p and task is not None:
            self.p.update(task, **kw)

    def print(self, text: str) -> None:
        if self.p:
            self.p.console.print(text)


def _finish_interrupted_save(out: Path, finished: int) -> None:
    """Complete or undo an end-of-epoch save that a crash interrupted (see the module docstring)."""
    pending = out / PENDING
    if not pending.is_file():
        return
    try:
        epoch = read_checkpoint_meta(pending).epoch
    except CheckpointError:
        epoch = None
    if epoch == finished:
        _commit_last(out)
        log.warning("--resume: completed the interrupted save of epoch %d in %s", finished, out)
    else:
        pending.unlink()
        log.warning("--resume: dropped the unfinished save of epoch %s in %s; epoch %d is trained again",
                    epoch, out, finished + 1)


def _commit_last(out: Path) -> None:
    os.replace(out / PENDING, out / LAST)


def _check_out_dir(out: Path, resume: bool, info: DistInfo) -> Optional[TrainingState]:
    state_path = out / STATE_FILE
    if resume:
        if state_path.is_file():
            state = load_training_state(state_path)
            if info.is_main:
                _finish_interrupted_save(out, state.epoch)
            barrier(info)
            if (out / LAST).is_file():
                return state
        log.warning("--resume: %s holds no run to resume; starting a new run there", out)
        return None
    if (out / "last.safetensors").is_file() or state_path.is_file():
        raise OutputError(f"{out} already holds a training run; pass --resume to continue it or choose another --out")
    return None


def _class_trees(config: TrainConfig) -> list[Path]:
    """The class-folder trees the data layout scans (none for split files, which list their images)."""
    root = Path(config.data.root)
    if config.data.train_csv or config.data.val_csv:
        return []
    if config.data.val_split > 0:
        return [root / "train"] if (root / "train").is_dir() else [root]
    if (root / "train.csv").is_file():
        return []
    return [root / s for s in ("train", "val", "test")]


def _run_preset(config: TrainConfig, last_meta: Optional[CheckpointMeta]) -> AugmentPreset:
    """The augmentation preset's strengths for this run: today's preset of that name, or, on
    --resume (``last_meta``: the run's last checkpoint), the strengths the run was started with
    (the checkpoint records them), so a resumed run continues exactly as it began even when a
    later version retuned the preset."""
    preset = get_preset(config.augment)
    recorded = (last_meta.extra or {}).get("augment") if last_meta is not None else None
    if not recorded:
        return preset
    started = AugmentPreset.from_dict(recorded)
    then, now = started.strengths(), preset.strengths()
    if then == now:
        return preset
    log.warning("--resume: %s continues with the %r preset's strengths it started with (this version's "
                "preset differs in %s)", config.out, started.name, ", ".join(k for k in now if then.get(k) != now[k]))
    return started


def _train_transform(config: TrainConfig, preset: AugmentPreset, spec: PreprocessSpec):
    """The training transform: the preset's, or with --consistency the (clean, field) view pairs."""
    if config.consistency > 0 and not preset.only_crop_and_flip:
        return ConsistencyViews(spec, preset, config.hflip, config.consistency_mix)
    return build_train_transform(preset, spec, config.hflip)


def _check_out_path(out: Path, config: TrainConfig) -> None:
    """--out is a folder of its own: not a file, not inside a class-folder tree of the data (it would
    become a class, its confusion PNGs training images), and, if it exists with content, a run
    folder this trainer made (never someone's folder, a data set included, filled with run files)."""
    if out.exists() and not out.is_dir():
        raise OutputError(f"--out {out} exists and is a file; give a folder for the run")
    for tree in _class_trees(config):
        if holds(tree, out):
            raise OutputError(f"--out {out} lies inside the class folders {tree}: the run folder would be read as "
                              "a class, its images as training images; put runs outside the data")
    if config.cache_dir:
        for tree in _class_trees(config):
            if holds(tree, config.cache_dir):
                raise OutputError(f"--cache-dir {config.cache_dir} lies inside the class folders {tree}: it would "
                                  "be read as a class; put the cache outside the data")
    if out.is_dir() and not is_empty_dir(out) and \
            not any((out / n).is_file() for n in (RUN_MARKER, STATE_FILE, LAST, f"{RUN_CACHE_DIR}/{CACHE_FILE}")):
        raise OutputError(f"--out {out} exists and is not a clca-edge training run; give a new or empty folder")


def _print_header(console, config: TrainConfig, splits: DataSplits, check: DataCheck, model, device,
                  info: DistInfo, out: Path, extra: Sequence[str] = ()) -> None:
    """What the run is about to do, before the first step: the data found (and what cannot be read),
    the device, the token plan and where the run goes."""
    say = console.print if console is not None else log.info
    bad = check.unreadable_per_class()
    say(f"data: {config.data.root} ({splits.layout}): {splits.num_classes} classes, {len(splits.train)} train / "
        f"{len(splits.val)} val images")
    if bad:
        say(f"[yellow]skipped {sum(bad.values())} unreadable image(s)[/]: "
            + ", ".join(f"{c} {n}" for c, n in sorted(bad.items())))
    for line in extra:  # the decoded-image cache
        say(line)
    procs = f", {info.world_size} processes" if info.enabled else ""
    say(f"device: {device}{procs}; AMP {'on' if config.amp and device.type == 'cuda' else 'off'}")
    plan = model.plan
    say(f"model: {config.model.backbone} {config.model.method} keep {', '.join(f'{r:g}' for r in plan.keep_rates)} "
        f"at blocks {list(plan.locations)}{' + CLCA' if config.model.clca.enabled else ''}; tokens per block "
        f"{', '.join(map(str, model.tokens_per_block))}")
    say(f"output: {out}")


def _open_cache(config: TrainConfig, out: Path, splits: DataSplits, builder: bool) -> RunCache:
    """The run's decoded-image cache (data.cache), for the preprocessing the model will have: read
    from the backbone's pretrained config before any weights exist, since the data check fills it."""
    if config.cache == "none":
        return open_run_cache("none", None, expected=0, run_dir=out)
    from ..models.factory import backbone_pretrained_cfg

    spec = cached_spec(preprocess_spec(None, config, backbone_pretrained_cfg(config.model)), config.augment)
    share = int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1)  # DDP ranks on this machine each hold a RAM cache
    return open_run_cache(config.cache, spec, expected=len(splits.train) + len(splits.val), run_dir=out,
                          cache_dir=config.cache_dir, budget_gb=config.cache_budget, share=share, builder=builder)


# Bytes of input batches the DataLoader keeps in flight (prefetched by its workers, pinned on CUDA).
PREFETCH_BYTES = 256 * 2**20


def prefetch_factor(batch_size: int, workers: int, img_size: int) -> int:
    """Batches each worker prepares ahead: 2-4 small batches (enough that the model never waits on
    a worker that is between batches), fewer for large batches of large images (so prefetching
    does not hold gigabytes: 256 MiB of float32 input in flight at most, and at least one batch)."""
    batch_bytes = batch_size * 3 * img_size * img_size * 4
    return max(1, min(4, PREFETCH_BYTES // max(1, workers * batch_bytes)))


def _timing_text(row: dict) -> str:
    total = row["data_wait_s"] + row["model_s"]
    share = 100 * row["data_wait_s"] / total if total > 0 else 0.0
    rate = f" ({row['model_img_per_s']:.0f} img/s)" if row["model_img_per_s"] != "" else ""
    return f"model {row['model_s']:.1f} s{rate}, data wait {row['data_wait_s']:.1f} s ({share:.0f}%)"


def _build(config: TrainConfig, splits: DataSplits, resumed: Optional[TrainingState], out: Path):
    from ..models.factory import build_model

    model_config = config.model.replace(num_classes=splits.num_classes)
    if resumed is not None:
        from safetensors.torch import load_file

        model = build_model(model_config, pretrained=None)
        state = load_file(str(out / "last.safetensors"))
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise CheckpointError(f"{out / 'last.safetensors'} does not match the model config "
                                  f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    else:
        model = build_model(model_config, pretrained=config.pretrained)
    return model, model_config


def train(config: TrainConfig, *, step_hook: Optional[StepHook] = None, console=None) -> TrainResult:
    """Run (or resume) training as described by ``config``; returns the run's summary (all ranks)."""
    device = resolve_device(config.device)
    info = init_distributed(device.type)
    try:
        run = TrainingRun(config, device, info, step_hook, console)
        run.prepare()
        return run.run()
    finally:
        shutdown(info)


def _check_resume_config(config: TrainConfig, out: Path, resumed: TrainingState) -> None:
    """--resume continues only the run ``config`` describes (the RESUME_FREE settings aside)."""
    old_config = dict(resumed.config)
    # Runs from before --augment existed were trained with the paper's weak augmentation.
    old_config.setdefault("augment", "weak")
    # ... and before --colour-constancy, with the plain normalisation.
    old_config.setdefault("colour_constancy", "none")
    # ... and before --framing, unframed.
    old_config.setdefault("framing", "none")
    # ... and before --consistency, with the augmented images fitted as labelled ones.
    old_config.setdefault("consistency", 0.0)
    old_config.setdefault("consistency_ramp", 0.0)
    old_config.setdefault("consistency_mix", 0)
    diffs = config_differences(old_config, config.to_dict())
    if diffs:
        raise ConfigError(f"--resume: {out} was trained with a different config: " + "; ".join(diffs)
                          + ". Use the original settings, or a new --out")


@dataclass
class _Data:
    """The checked splits, the data check's findings, the decoded-image cache and its notes."""

    splits: DataSplits
    check: DataCheck
    cache: RunCache
    notes: list[str]


def _prepare_data(config: TrainConfig, out: Path, info: DistInfo, resuming: bool) -> _Data:
    """Nothing is written before the data passed its checks (rank 0 decodes every image once, into
    the image cache; a disk cache this made is removed again if the check refuses the data); then
    rank 0 makes the run folder and writes a new val split, and the other ranks take its result."""
    split_dir = out / "split"
    checked = None
    notes: list[str] = []
    out_existed = out.exists()
    if info.is_main:
        check_writable_dir(out, "--out")
        drawn = load_splits(config.data, split_dir=split_dir if resuming else None)
        if not drawn.val:
            raise DataError(f"{config.data.root}: no validation images; add val/ or pass --val-split")
        run_cache = _open_cache(config, out, drawn, builder=True)
        try:
            # The check's one decode of every image fills the cache.
            checked = check_training_data(drawn, str(config.data.root), readable=run_cache.readable)
        except BaseException:
            run_cache.undo()
            if not out_existed and out.is_dir() and is_empty_dir(out):
                out.rmdir()
            raise
        notes = run_cache.notes + [run_cache.finish()]
        make_dirs(out, "--out")
        if not (out / RUN_MARKER).is_file():
            (out / RUN_MARKER).write_text("written by clca-edge train\n")
        if not resuming and drawn.layout == "split":
            write_split_files(split_dir, drawn)
    if info.enabled:
        checked = gather_objects(checked, info)[0]
    splits, data_check = checked
    if not info.is_main:  # rank 0 built the cache while checking; a RAM cache is per process
        run_cache = _open_cache(config, out, splits, builder=False)
        if run_cache.cache is not None and run_cache.cache.kind == "ram":
            fill(run_cache.cache, [p for p, _ in splits.train + splits.val])
        run_cache.finish()
    return _Data(splits, data_check, run_cache, notes)


@dataclass
class _Loaders:
    train: DataLoader
    val: DataLoader
    sampler: EpochSampler


def _make_loaders(config: TrainConfig, splits: DataSplits, transform, spec: PreprocessSpec, images,
                  info: DistInfo, device: torch.device) -> _Loaders:
    train_ds = LeafImages(splits.train, transform, images=images, seed=config.seed)
    b = config.optim.batch_size
    # (epoch, index) pairs: the epoch reaches persistent workers with every index.
    sampler = EpochSampler(DistributedSampler(train_ds, num_replicas=info.world_size, rank=info.rank, shuffle=True,
                                              seed=config.seed))
    per_rank = len(sampler)
    if per_rank < 2:
        raise DataError(f"{len(train_ds)} training images over {info.world_size} process(es) is too few")
    pin = device.type == "cuda"
    extra = {}
    if config.workers:
        extra = {"persistent_workers": True,
                 "prefetch_factor": prefetch_factor(b, config.workers, config.model.img_size)}
    # Augmentation seeds come from (seed, epoch, index) (data.dataset), so workers persist; the
    # loader's own generator keeps its base-seed draw off the global one the model draws from.
    train = DataLoader(train_ds, batch_size=b, sampler=sampler, num_workers=config.workers,
                       collate_fn=collate_skipping, drop_last=per_rank >= b, pin_memory=pin,
                       generator=torch.Generator().manual_seed(config.seed), **extra)
    val = eval_loader(splits.val, spec, b, config.workers, info, images=images, pin_memory=pin, persistent=True)
    return _Loaders(train, val, sampler)


@dataclass
class _Standing:
    """Where the run stands: epochs finished, the best val top-1 so far and its epoch, the last
    epoch's, the unreadable images met, and notices for the user."""

    epoch: int = 0
    best_top1: float = -1.0
    best_epoch: int = 0
    last_top1: float = float("nan")
    skipped: set[str] = field(default_factory=set)
    notices: list[str] = field(default_factory=list)


class TrainingRun:
    """One run, as named steps: ``prepare`` (resume checks, data, model, loaders, optimiser, the
    resumed state), then ``run`` (per epoch: ``_epoch`` trains and validates, ``_save`` writes the
    checkpoints in the crash-safe order of the module docstring)."""

    def __init__(self, config: TrainConfig, device: torch.device, info: DistInfo, step_hook: Optional[StepHook],
                 console) -> None:
        if info.enabled and device.type == "cuda":
            device = torch.device("cuda", info.local_rank)
        self.config, self.device, self.info, self.step_hook, self.console = config, device, info, step_hook, console
        self.out = Path(config.out)
        self.use_amp = config.amp and device.type == "cuda"
        self.standing = _Standing()

    def prepare(self) -> None:
        config, out, info = self.config, self.out, self.info
        _check_out_path(out, config)
        resumed = _check_out_dir(out, config.resume, info)
        if resumed is not None:
            _check_resume_config(config, out, resumed)
        self.data = data = _prepare_data(config, out, info, resumed is not None)
        _seed_everything(config.seed)
        self.model, self.model_config = _build(config, data.splits, resumed, out)
        self.model.to(self.device)
        self.spec = preprocess_spec(self.model, config)
        # The run's last checkpoint, read once: its preset strengths here, its epoch and metrics below.
        self.last_meta = read_checkpoint_meta(out / LAST) if resumed is not None else None
        self.preset = _run_preset(config, self.last_meta)
        transform = _train_transform(config, self.preset, self.spec)
        self.loaders = _make_loaders(config, data.splits, transform, self.spec, self._cache_images(), info,
                                     self.device)
        optimizer = build_optimizer(self.model, config.optim)
        scheduler = build_scheduler(optimizer, config.optim, len(self.loaders.train))
        scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp)
        self.standing.skipped = set(data.check.unreadable_paths)
        if resumed is not None:
            self._restore(resumed, optimizer, scheduler, scaler)
        self._header(resumed is not None)
        self.stepper = Stepper(self._net(), self.model, optimizer, scheduler, scaler, config, self.device, info,
                               views=transform.views if isinstance(transform, ConsistencyViews) else 1,
                               total_steps=config.optim.epochs * len(self.loaders.train))

    def _cache_images(self):
        images = self.data.cache.cache
        if images is not None and cache_settings(images.spec) != cache_settings(
                cached_spec(self.spec, self.config.augment)):
            # Not expected (the same timm config, read before the weights): never train on other pixels.
            log.warning("the model's preprocessing %s differs from the one the image cache was built for; not using "
                        "the cache", self.spec)
            return None
        return images

    def _restore(self, resumed: TrainingState, optimizer, scheduler, scaler) -> None:
        optimizer.load_state_dict(resumed.optimizer)
        scheduler.load_state_dict(resumed.scheduler)
        if resumed.scaler:
            scaler.load_state_dict(resumed.scaler)
        s = self.standing
        s.epoch, s.best_top1, s.best_epoch = resumed.epoch, resumed.best_top1, resumed.best_epoch
        if self.last_meta.epoch != resumed.epoch:
            s.epoch, s.best_top1, s.best_epoch, note = _adopt_weights_epoch(
                self.out, self.last_meta, resumed, scheduler, len(self.loaders.train))
            log.warning(note)
            s.notices.append(note)
        s.last_top1 = float(self.last_meta.metrics.get("val_top1", s.best_top1))
        s.skipped |= set(resumed.skipped)

    def _header(self, resuming: bool) -> None:
        if not self.info.is_main:
            return
        d, s, epochs = self.data, self.standing, self.config.optim.epochs
        _print_header(self.console, self.config, d.splits, d.check, self.model, self.device, self.info, self.out,
                      d.notes)
        if resuming:
            left = f"resuming from epoch {s.epoch + 1} of {epochs}" if s.epoch < epochs else f"all {epochs} epochs are done"
            (self.console.print if self.console is not None else log.info)(
                f"{left} (best val top-1 {s.best_top1:.2f}% at epoch {s.best_epoch})")

    def _net(self) -> nn.Module:
        net = _WithAux(self.model)
        if self.info.enabled:
            # With the CLA head the backbone's final norm is unused, and some reducers leave
            # parameters idle in some modes: let DDP find them rather than hang.
            net = nn.parallel.DistributedDataParallel(
                net, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=True)
        return net

    def run(self) -> TrainResult:
        config, s = self.config, self.standing
        metrics = self._metrics_log()
        history: list[dict] = []
        with _Progress(self.info.is_main, self.console) as progress:
            ahead = None  # the next epoch's batches, already being prepared by the workers
            for epoch in range(s.epoch, config.optim.epochs):
                row, ahead = self._epoch(epoch, progress, ahead)
                history.append(row)
                if metrics is not None:
                    metrics.append(row)
                barrier(self.info)
        if metrics is not None:
            metrics.close()
        skipped = set().union(*gather_objects(s.skipped, self.info))
        if skipped:
            log.warning("skipped %d unreadable image(s), e.g. %s", len(skipped), sorted(skipped)[0])
        return TrainResult(self.out, config.optim.epochs, s.best_top1, s.best_epoch, s.last_top1,
                           self.data.splits.class_names, sorted(skipped), history, s.notices)

    def _metrics_log(self) -> Optional[MetricsLog]:
        if not self.info.is_main:
            return None
        s = self.standing
        metrics = MetricsLog(self.out / "metrics.csv", keep_until_epoch=s.epoch)
        if self.last_meta is not None and s.epoch and not any(int(r["epoch"]) == s.epoch for r in metrics.rows):
            # The row of the epoch whose weights we continue from was never logged (crash before it):
            # the checkpoint holds the same numbers.
            metrics.append({"epoch": s.epoch, **self.last_meta.metrics})
        return metrics

    def _epoch(self, epoch: int, progress: _Progress, ahead: Optional[Iterator]) -> tuple[dict, Optional[Iterator]]:
        """Train and validate one epoch, save it; returns its metrics row and the next epoch's
        batches if the workers were started on them."""
        config, loaders, s = self.config, self.loaders, self.standing
        _seed_everything(_epoch_seed(config.seed, epoch, self.info.rank))
        if ahead is None:
            loaders.sampler.set_epoch(epoch)
        t0 = time.perf_counter()
        task = progress.task(f"epoch {epoch + 1}/{config.optim.epochs}", len(loaders.train))
        stats = train_epoch(self.stepper, loaders.train, epoch, EpochHooks(self.step_hook, progress, task, s.skipped),
                            batches=ahead)
        t_val = time.perf_counter()
        report = evaluate_model(self.model, loaders.val, self.data.splits.class_names, self.device, self.info,
                                amp=self.use_amp)
        val_s = time.perf_counter() - t_val
        ahead = None
        if config.workers and epoch + 1 < config.optim.epochs:
            # Persistent workers start on the next epoch's first batches now, while this one
            # saves its checkpoints: what they prepare then is not done beside the model's
            # steps. Not before the validation: on 2 cores that slowed it by 0.3 s per epoch
            # (the saves, partly serialisation on this thread, take about that much longer
            # instead). The order and augmentation depend only on (seed, epoch, index), so
            # starting early changes nothing that is drawn.
            loaders.sampler.set_epoch(epoch + 1)
            ahead = iter(loaders.train)
        s.skipped |= set(report.skipped)
        s.last_top1 = report.top1
        row = {"epoch": epoch + 1, "train_loss": round(stats.loss, 6), "train_acc": round(stats.acc, 4),
               "val_loss": round(report.loss, 6), "val_top1": round(report.top1, 4), "val_top5": round(report.top5, 4),
               "lr": self.stepper.optimizer.param_groups[0]["lr"], "img_per_s": round(stats.img_per_s, 2),
               "epoch_s": round(time.perf_counter() - t0, 2), **stats.timing_columns(val_s)}
        improved = report.top1 > s.best_top1
        if improved:
            s.best_top1, s.best_epoch = report.top1, epoch + 1
        if self.info.is_main:
            self._save(epoch, row, report, improved)
            progress.print(f"epoch {epoch + 1}: loss {row['train_loss']:.3f} acc {row['train_acc']:.1f}% | "
                           f"val top-1 {report.top1:.2f}% top-5 {report.top5:.2f}%" + (" *" if improved else "")
                           + " | " + _timing_text(row))
        return row, ahead

    def _save(self, epoch: int, row: dict, report, improved: bool) -> None:
        """Weights to the pending file, then best, then the resume state, then pending -> last."""
        out, s, st = self.out, self.standing, self.stepper
        # The preset's strengths, not only its name: deploy copies them into the bundle manifest.
        # The config as given (its num_classes is the CLI placeholder): --resume compares like with
        # like; the checkpoint's model config holds the resolved one (num_classes from the data).
        extra = {"train_config": self.config.to_dict(), "augment": self.preset.to_dict(),
                 "data_layout": self.data.splits.layout, "num_train": len(self.data.splits.train),
                 "num_val": len(self.data.splits.val)}
        meta = CheckpointMeta(self.model_config, self.data.splits.class_names, self.spec, epoch + 1,
                              {k: v for k, v in row.items() if k != "epoch"}, extra)
        save_checkpoint(out / PENDING, self.model, meta)
        if improved:
            save_checkpoint(out / "best.safetensors", self.model, meta)
            write_confusion_csv(out / "best_confusion.csv", report)
            write_per_class_csv(out / "best_per_class.csv", report)
        save_training_state(out / STATE_FILE, TrainingState(
            epoch + 1, s.best_top1, s.best_epoch, self.config.to_dict(), st.optimizer.state_dict(),
            st.scheduler.state_dict(), st.scaler.state_dict() if self.use_amp else None, tuple(sorted(s.skipped))))
        _commit_last(out)


def _adopt_weights_epoch(out: Path, last_meta: CheckpointMeta, state: TrainingState, scheduler,
                         steps_per_epoch: int) -> tuple[int, float, int, str]:
    """``last.safetensors`` and the resume file disagree on the epoch: continue after the weights'
    epoch (never train an epoch twice on top of itself, never skip one). Returns the start epoch,
    best top-1 and best epoch, and the message for the user."""
    epoch = last_meta.epoch
    step = epoch * steps_per_epoch
    scheduler.last_epoch = step
    lrs = [base * fn(step) for base, fn in zip(scheduler.base_lrs, scheduler.lr_lambdas)]
    for group, lr in zip(scheduler.optimizer.param_groups, lrs):
        group["lr"] = lr
    scheduler._last_lr = lrs
    best_top1, best_epoch = state.best_top1, state.best_epoch
    best_path = out / "best.safetensors"
    if best_path.is_file():
        best = read_checkpoint_meta(best_path)
        if best_epoch < best.epoch <= epoch and "val_top1" in best.metrics:
            best_top1, best_epoch = float(best.metrics["val_top1"]), best.epoch
    if best_epoch > epoch:  # the best epoch lies beyond the weights we continue from: it is retrained
        best_top1, best_epoch = -1.0, 0
    note = (f"--resume: {out / LAST} holds epoch {epoch} but {out / STATE_FILE} was saved after epoch "
            f"{state.epoch} (a save interrupted by a crash, or files from different runs). Continuing after "
            f"epoch {epoch}, the weights' epoch, with the learning-rate schedule set to it; the optimizer "
            f"moments are those of epoch {state.epoch}, so this run will not match an uninterrupted one "
            "exactly. Start a new --out to be sure.")
    return epoch, best_top1, best_epoch, note


__all__ = ["TrainResult", "TrainingRun", "preprocess_spec", "train"]
