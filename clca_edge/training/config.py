"""Typed, validated training configuration, and recipes (YAML files of the same keys).

Precedence: built-in defaults < recipe values < options given on the command line.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional

from ..data.sources import DataConfig
from ..core.errors import ConfigError
from ..models.config import ModelConfig

# Keys a recipe may hold: the train command's option names (with underscores), plus notes.
RECIPE_KEYS = {
    "data", "val_split", "split_seed", "image_root", "train_csv", "val_csv", "test_csv",
    "model", "pretrained", "method", "keep_rate", "locations", "clca", "img_size", "model_kwargs", "drop_path",
    "epochs", "batch_size", "lr", "min_lr", "weight_decay", "warmup_epochs", "label_smoothing", "clip_grad",
    "amp", "seed", "workers", "crop_pct", "hflip", "device", "out",
}
# Recorded for people (the paper's settings), not used by the trainer.
RECIPE_NOTES = {"dataset", "description", "seeds", "augmentation", "optimizer", "paper", "scheduler"}

# Settings that may change between a run and its resume without changing what is trained.
RESUME_FREE = {"out", "resume", "workers", "device"}


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
    amp: bool = True
    device: str = "auto"
    resume: bool = False

    def __post_init__(self) -> None:
        if self.workers < 0:
            raise ConfigError(f"--workers {self.workers} must be >= 0")
        if not 0 < self.crop_pct <= 1:
            raise ConfigError(f"--crop-pct {self.crop_pct} is outside (0, 1]")
        if not 0 <= self.hflip <= 1:
            raise ConfigError(f"--hflip {self.hflip} is outside [0, 1]")
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


def load_recipe(path) -> dict[str, Any]:
    """A recipe's settings (option names with underscores); unknown keys are an error."""
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
    unknown = sorted(set(data) - RECIPE_KEYS - RECIPE_NOTES)
    if unknown:
        raise ConfigError(f"recipe {path} has unknown key(s) {unknown}; allowed: {sorted(RECIPE_KEYS)}")
    settings = {k: v for k, v in data.items() if k in RECIPE_KEYS}
    if "seed" not in settings and isinstance(data.get("seeds"), list) and data["seeds"]:
        settings["seed"] = int(data["seeds"][0])
    # Lists in YAML read naturally; the CLI takes comma-separated text.
    for key in ("keep_rate", "locations"):
        if isinstance(settings.get(key), (list, tuple)):
            settings[key] = ",".join(str(v) for v in settings[key])
    if isinstance(settings.get("model_kwargs"), dict):
        settings["model_kwargs"] = json.dumps(settings["model_kwargs"])
    return settings


def parse_model_kwargs(text: Optional[str]) -> dict[str, Any]:
    """'depth=4,embed_dim=64' or a JSON object -> timm keyword arguments."""
    if not text:
        return {}
    text = text.strip()
    if text.startswith("{"):
        try:
            value = json.loads(text)
        except json.JSONDecodeError as e:
            raise ConfigError(f"--model-kwargs {text!r} is not valid JSON ({e.msg})") from None
        if not isinstance(value, dict):
            raise ConfigError(f"--model-kwargs {text!r} must be a JSON object")
        return value
    out: dict[str, Any] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        if "=" not in part:
            raise ConfigError(f"--model-kwargs item {part!r} is not key=value")
        key, raw = (s.strip() for s in part.split("=", 1))
        try:
            out[key] = json.loads(raw)
        except json.JSONDecodeError:
            out[key] = raw
    return out


__all__ = ["OptimConfig", "TrainConfig", "config_differences", "load_recipe", "parse_model_kwargs",
           "RECIPE_KEYS"]
