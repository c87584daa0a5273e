"""Checkpoints: one ``.safetensors`` file holding the weights, with the model config, class
names, preprocessing and training metadata as JSON in the safetensors metadata.

Written atomically (temp file in the same folder + ``os.replace``) so a crash never leaves a
half-written checkpoint. Nothing is ever unpickled from a checkpoint.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core.errors import CheckpointError, ClcaEdgeError
from ..core.atomic_io import atomic_write_bytes  # re-exported: metrics/state import it from here
from ..models.config import ModelConfig
from ..core.preprocess import PreprocessSpec

META_KEY = "clca_edge"
FORMAT_VERSION = 1


@dataclass
class CheckpointMeta:
    model: ModelConfig
    class_names: list[str]
    preprocess: PreprocessSpec
    epoch: int = 0
    metrics: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps({
            "format": FORMAT_VERSION,
            "model": self.model.to_dict(),
            "class_names": list(self.class_names),
            "preprocess": self.preprocess.to_dict(),
            "epoch": self.epoch,
            "metrics": self.metrics,
            "extra": self.extra,
        })

    @classmethod
    def from_json(cls, text: str) -> "CheckpointMeta":
        d = json.loads(text)
        if d.get("format") != FORMAT_VERSION:
            raise CheckpointError(f"checkpoint format {d.get('format')!r} is not {FORMAT_VERSION}")
        return cls(
            model=ModelConfig.from_dict(d["model"]),
            class_names=list(d["class_names"]),
            preprocess=PreprocessSpec.from_dict(d["preprocess"]),
            epoch=int(d.get("epoch", 0)),
            metrics=dict(d.get("metrics", {})),
            extra=dict(d.get("extra", {})),
        )


def save_checkpoint(path, model, meta: CheckpointMeta) -> Path:
    """Write ``model``'s weights and ``meta`` to ``path`` (a .safetensors file), atomically."""
    from safetensors.torch import save

    if len(meta.class_names) != meta.model.num_classes:
        raise CheckpointError(f"{len(meta.class_names)} class names for {meta.model.num_classes} classes")
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    atomic_write_bytes(Path(path), save(state, metadata={META_KEY: meta.to_json()}))
    return Path(path)


def read_checkpoint_meta(path) -> CheckpointMeta:
    """The metadata of a checkpoint, without loading its tensors."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = (f.metadata() or {}).get(META_KEY)
    except Exception as e:
        raise CheckpointError(f"{path} is not a readable safetensors checkpoint ({e})") from None
    if meta is None:
        raise CheckpointError(f"{path} has no clca-edge metadata; was it written by clca-edge train?")
    return CheckpointMeta.from_json(meta)


def load_checkpoint(path, map_location: str = "cpu") -> tuple[Any, CheckpointMeta]:
    """Rebuild the model described by a checkpoint and load its weights (strictly)."""
    from safetensors.torch import load_file

    from ..models.factory import build_model

    meta = read_checkpoint_meta(path)
    model = build_model(meta.model, pretrained=None)
    state = load_file(str(path), device=map_location)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise CheckpointError(f"{path}: weights do not match the config (missing {missing[:3]}, unexpected {unexpected[:3]})")
    return model.eval(), meta


def find_checkpoint(path) -> Path:
    """Accept a checkpoint file or a run folder (then its ``best.safetensors``)."""
    p = Path(path)
    if p.is_dir():
        for name in ("best.safetensors", "last.safetensors"):
            if (p / name).is_file():
                return p / name
        raise CheckpointError(f"{p} holds no best.safetensors or last.safetensors")
    return p


__all__ = ["CheckpointError", "CheckpointMeta", "atomic_write_bytes", "find_checkpoint", "load_checkpoint",
           "read_checkpoint_meta", "save_checkpoint"]
