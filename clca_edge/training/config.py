"""Typed, validated training configuration, and recipes (YAML files of the same keys).

Precedence: built-in defaults < recipe values < options given on the command line.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Collection, Mapping, Optional

from ..data.augment import DEFAULT_AUGMENT
from ..data.sources import DataConfig
from ..core.errors import ConfigError
from ..core.preprocess import DEFAULT_COLOUR_CONSTANCY, DEFAULT_FRAMING
from .defaults import DEFAULT_CONSISTENCY, DEFAULT_CONSISTENCY_MIX, DEFAULT_CONSISTENCY_RAMP  # noqa: F401  (re-exported)
from ..models.config import ModelConfig, parse_model_kwargs  # noqa: F401  (re-exported)

# Recorded for people (the paper's settings), not used by the trainer.
RECIPE_NOTES = {"dataset", "description", "seeds", "augmentation", "optimizer", "paper", "scheduler"}


# Settings that may change between a run and its resume without changing what is trained.
# The decoded-image cache is among them: a cached image is bit for bit the decoded one (data.cache).
RESUME_FREE = {"out", "resume", "workers", "device", "cache", "cache_dir", "cache_budget"}


@dataclass(frozen=True)
class OptimConfig:
    epochs: int = 50
    batch_size: int = 32
    lr: float = 1e-4
    min_lr: float = 1e-6
    weight_decay: float = 0.05
    warmup_epochs: float = 1.0
    label_smoothing: float = 0.1
    clip_grad: float = 1.0

    def __post_init__(self) -> None:
        checks = [
            (self.epochs >= 1, f"--epochs {self.epochs} must be >= 1"),
            (self.batch_size >= 2, f"--batch-size {self.batch_size} must be >= 2 (BatchNorm in the CLA head)"),
            (self.lr > 0, f"--lr {self.lr} must be > 0"),
            (0 <= self.min_lr <= self.lr, f"--min-lr {self.min_lr} must be in [0, lr={self.lr}]"),
            (self.weight_decay >= 0, f"--weight-decay {self.weight_decay} must be >= 0"),
            (self.warmup_epochs >= 0, f"--warmup-epochs {self.warmup_epochs} must be >= 0"),
            (0 <= self.label_smoothing < 1, f"--label-smoothing {self.label_smoothing} is outside [0, 1)"),
            (self.clip_grad >= 0, f"--clip-grad {self.clip_grad} must be >= 0 (0 turns clipping off)"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ConfigError(msg)


@dataclass(frozen=True)
class TrainConfig:
    data: DataConfig
    model: ModelConfig
    out: str
    optim: OptimConfig = field(default_factory=OptimConfig)
    pretrained: str = "hub"
    seed: int = 0
    workers: int = 2
    crop_pct: float = 0.875
    hflip: float = 0.5
    augment: str = DEFAULT_AUGMENT  # data.augment preset: field (default), weak (the paper's), none
    # core.preprocess colour constancy, recorded in the model's PreprocessSpec (so deploy and the
    # device apply it too): none or grey_world
    colour_constancy: str = DEFAULT_COLOUR_CONSTANCY
    # core.preprocess framing, recorded likewise: none or leaf (centre and zoom on the leaf)
    framing: str = DEFAULT_FRAMING
    # Weight of the Jensen-Shannon consistency between each image's clean view and its field view
    # (training.losses): the augmentation is learned as "predict the same" instead of as hard
    # labels on the perturbed images; 0: the preset's images are fitted as labelled images.
    # Ignored by presets that only crop and flip.
    consistency: float = DEFAULT_CONSISTENCY
    # The consistency weight ramps linearly from 0 to ``consistency`` over this share of the run's
    # steps (0: the full weight from the first step): the model first learns the labelled views.
    consistency_ramp: float = DEFAULT_CONSISTENCY_RAMP
    # AugMix mixing of the perturbed views (data.augment.ConsistencyViews): 0, one perturbed view,
    # the field chain itself; k > 0, two perturbed views, each the clean crop mixed with k chains.
    consistency_mix: int = DEFAULT_CONSISTENCY_MIX
    amp: bool = True
    device: str = "auto"
    resume: bool = False
    cache: str = "auto"  # decoded-image cache (data.cache): auto, ram, disk, none
    cache_dir: Optional[str] = None  # --cache disk: where (default RUN/cache)
    cache_budget: Optional[float] = None  # GB of RAM for the cache (default: half the available memory)

    def __post_init__(self) -> None:
        if self.workers < 0:
            raise ConfigError(f"--workers {self.workers} must be >= 0")
        from ..data.cache import CACHE_MODES

        if self.cache not in CACHE_MODES:
            raise ConfigError(f"--cache {self.cache!r}; choose one of {', '.join(CACHE_MODES)}")
        if self.cache_budget is not None and not self.cache_budget > 0:
            raise ConfigError(f"--cache-budget {self.cache_budget} must be > 0 (GB)")
        if self.cache_dir is not None and self.cache == "auto":
            object.__setattr__(self, "cache", "disk")  # a cache folder given: the disk cache is meant
        if self.cache_dir is not None and self.cache != "disk":
            raise ConfigError(f"--cache-dir {self.cache_dir} is for --cache disk (not --cache {self.cache})")
        if not 0 < self.crop_pct <= 1:
            raise ConfigError(f"--crop-pct {self.crop_pct} is outside (0, 1]")
        if not 0 <= self.hflip <= 1:
            raise ConfigError(f"--hflip {self.hflip} is outside [0, 1]")
        from ..data.augment import AUGMENT_CHOICES

        if self.augment not in AUGMENT_CHOICES:
            raise ConfigError(f"--augment {self.augment!r}; choose one of {', '.join(AUGMENT_CHOICES)}")
        from ..core.preprocess import COLOUR_CONSTANCY, FRAMING

        if self.colour_constancy not in COLOUR_CONSTANCY:
            raise ConfigError(f"--colour-constancy {self.colour_constancy!r}; choose one of "
                              f"{', '.join(COLOUR_CONSTANCY)}")
        if self.framing not in FRAMING:
            raise ConfigError(f"--framing {self.framing!r}; choose one of {', '.join(FRAMING)}")
        if not self.consistency >= 0:
            raise ConfigError(f"--consistency {self.consistency} must be >= 0 (0: off)")
        if not 0 <= self.consistency_ramp <= 1:
            raise ConfigError(f"--consistency-ramp {self.consistency_ramp} is outside [0, 1] (share of the run)")
        if not 0 <= self.consistency_mix <= 8:
            raise ConfigError(f"--consistency-mix {self.consistency_mix} is outside [0, 8] (chains per mixed view)")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ConfigError(f"--device {self.device!r}; choose auto, cpu or cuda")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["model"] = self.model.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "TrainConfig":
        d = dict(d)
        d["data"] = DataConfig(**d["data"])
        d["model"] = ModelConfig.from_dict(d["model"])
        d["optim"] = OptimConfig(**d["optim"])
        return cls(**d)


def config_differences(old: Mapping[str, Any], new: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Human-readable 'key: old -> new' lines for settings that matter to a resume."""
    out = []
    for key in sorted(set(old) | set(new)):
        if not prefix and key in RESUME_FREE:
            continue
        a, b = old.get(key), new.get(key)
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            out += config_differences(a, b, f"{prefix}{key}.")
        elif json.dumps(a, sort_keys=True, default=str) != json.dumps(b, sort_keys=True, default=str):
            out.append(f"{prefix}{key}: {a!r} -> {b!r}")
    return out


def load_recipe(path, keys: Collection[str]) -> dict[str, Any]:
    """A recipe's settings. ``keys``: what a recipe may set, the option names of the command
    (with underscores) that reads it; ``clca-edge train`` passes its own (cli.train_cmds.recipe_keys),
    so a recipe takes exactly the train options. Other keys, except RECIPE_NOTES, are an error."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"recipe {str(path)!r} does not exist")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"recipe {path} is not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"recipe {path} must be a mapping of option: value")
    data = {str(k).replace("-", "_"): v for k, v in data.items()}
    keys = set(keys)
    unknown = sorted(set(data) - keys - RECIPE_NOTES)
    if unknown:
        raise ConfigError(f"recipe {path} has unknown key(s) {unknown}; allowed: {sorted(keys)}")
    settings = {k: v for k, v in data.items() if k in keys}
    if "seed" not in settings and isinstance(data.get("seeds"), list) and data["seeds"]:
        settings["seed"] = int(data["seeds"][0])
    # Lists in YAML read naturally; the CLI takes comma-separated text.
    for key in ("keep_rate", "locations"):
        if isinstance(settings.get(key), (list, tuple)):
            settings[key] = ",".join(str(v) for v in settings[key])
    if isinstance(settings.get("model_kwargs"), dict):
        settings["model_kwargs"] = json.dumps(settings["model_kwargs"])
    return settings


__all__ = ["OptimConfig", "RECIPE_NOTES", "TrainConfig", "config_differences", "load_recipe", "parse_model_kwargs"]
