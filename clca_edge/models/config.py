"""Typed, validated model configuration; everything a model is built from, and nothing else.

The config is JSON-serialisable (``to_dict`` / ``from_dict``) because it travels with every
checkpoint and bundle: the device must be able to rebuild token counts without torch.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Mapping, Sequence

from ..core.errors import ConfigError

# Fractions of depth where the paper reduces tokens: blocks 3, 6, 9 of a 12-block ViT.
DEFAULT_LOCATION_FRACTIONS = (3 / 12, 6 / 12, 9 / 12)


@dataclass(frozen=True)
class ClcaConfig:
    """Cross-layer aggregation head (CLA) and cross-layer cache (CLC) switches."""

    cla_head: bool = True
    clc_cache: bool = True
    num_clr: int = 1
    gap_carriers: bool = True
    recover_before_last: bool = True

    def __post_init__(self) -> None:
        if self.num_clr < 0:
            raise ConfigError(f"num_clr={self.num_clr} must be >= 0")
        if self.clc_cache and self.num_clr == 0 and not self.gap_carriers:
            raise ConfigError("clc_cache needs carriers: set num_clr >= 1 or gap_carriers=True")

    @classmethod
    def off(cls) -> "ClcaConfig":
        return cls(cla_head=False, clc_cache=False, num_clr=0, gap_carriers=False)

    @property
    def enabled(self) -> bool:
        return self.cla_head or self.clc_cache

    @property
    def carriers_per_block(self) -> int:
        """Tokens put in the cache after each caching block."""
        if not self.clc_cache:
            return 0
        return self.num_clr + int(self.gap_carriers)

    @property
    def active_clr(self) -> int:
        """CLR tokens exist only to feed the cache."""
        return self.num_clr if self.clc_cache else 0


@dataclass(frozen=True)
class ModelConfig:
    """What a CLCA model is: backbone, token reduction and CLCA options, task.

    ``keep_rate`` holds one value for every location or one per location.
    ``locations`` of ``None`` means the paper's fractions of the backbone's depth.
    ``backbone_kwargs`` are passed to ``timm.create_model`` (e.g. ``depth=4, embed_dim=64``).
    """

    backbone: str = "vit_base_patch16_224"
    method: str = "evit"
    keep_rate: tuple[float, ...] = (0.1,)
    locations: tuple[int, ...] | None = None
    clca: ClcaConfig = field(default_factory=ClcaConfig)
    num_classes: int = 200
    img_size: int = 224
    backbone_kwargs: Mapping[str, Any] = field(default_factory=dict)
    drop_path_rate: float = 0.0
    method_kwargs: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Normalise sequences so that equal configs compare equal and hash.
        try:
            object.__setattr__(self, "keep_rate", parse_keep_rates(self.keep_rate))
            if self.locations is not None:
                object.__setattr__(self, "locations", tuple(int(i) for i in self.locations))
            object.__setattr__(self, "num_classes", int(self.num_classes))
            object.__setattr__(self, "img_size", int(self.img_size))
        except (TypeError, ValueError) as e:
            raise ConfigError(f"model config has a value of the wrong type ({e})") from None
        object.__setattr__(self, "backbone_kwargs", dict(self.backbone_kwargs))
        object.__setattr__(self, "method_kwargs", dict(self.method_kwargs))
        self._validate_static()

    def _validate_static(self) -> None:
        from .reduction import is_method, list_methods

        if not is_method(self.method):
            raise ConfigError(f"method={self.method!r} is unknown; choose one of {', '.join(list_methods())}")
        if not self.keep_rate:
            raise ConfigError("keep_rate is empty; give one value in (0, 1] or one per location")
        for r in self.keep_rate:
            if not (0.0 < r <= 1.0) or math.isnan(r):
                raise ConfigError(f"keep_rate={r} is outside (0, 1]")
        if self.num_classes < 1:
            raise ConfigError(f"num_classes={self.num_classes} must be >= 1")
        if self.img_size < 1:
            raise ConfigError(f"img_size={self.img_size} must be a positive number of pixels")
        if not 0.0 <= self.drop_path_rate < 1.0:
            raise ConfigError(f"drop_path_rate={self.drop_path_rate} is outside [0, 1)")
        if self.locations is not None:
            locs = self.locations
            if not locs:
                raise ConfigError("locations is empty; give at least one block index")
            if any(b <= a for a, b in zip(locs, locs[1:])):
                raise ConfigError(f"locations={list(locs)} must be strictly increasing")
            if locs[0] < 0:
                raise ConfigError(f"locations={list(locs)} has a negative block index")
            if len(self.keep_rate) not in (1, len(locs)):
                raise ConfigError(
                    f"keep_rate has {len(self.keep_rate)} values for {len(locs)} locations; "
                    "give one value or one per location"
                )

    def resolve(self, depth: int) -> "ResolvedPlan":
        """Bind the config to a backbone depth: locations, per-location keep rates, recovery layers."""
        locs = self.locations if self.locations is not None else default_locations(depth)
        if locs[-1] >= depth:
            raise ConfigError(
                f"locations={list(locs)} out of range for a {depth}-block backbone; allowed 0..{depth - 1}"
            )
        if len(self.keep_rate) not in (1, len(locs)):
            raise ConfigError(
                f"keep_rate has {len(self.keep_rate)} values for {len(locs)} locations; "
                "give one value or one per location"
            )
        rates = self.keep_rate * len(locs) if len(self.keep_rate) == 1 else self.keep_rate
        recovery: tuple[int, ...] = ()
        if self.clca.clc_cache:
            # Recovering after the last block would feed nothing, so such a location is not one.
            rec = {loc for loc in locs if loc < depth - 1}
            if self.clca.recover_before_last and depth >= 2:
                rec.add(depth - 2)
            recovery = tuple(sorted(rec))
        return ResolvedPlan(depth=depth, locations=tuple(locs), keep_rates=tuple(rates), recovery=recovery)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["keep_rate"] = list(self.keep_rate)
        d["locations"] = None if self.locations is None else list(self.locations)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ModelConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ConfigError(f"unknown model config keys: {sorted(unknown)}")
        d = dict(d)
        if "clca" in d and isinstance(d["clca"], Mapping):
            d["clca"] = ClcaConfig(**d["clca"])
        return cls(**d)

    def replace(self, **changes: Any) -> "ModelConfig":
        return replace(self, **changes)

    @classmethod
    def from_options(cls, model: str = "vit_base_patch16_224", method: str = "evit", keep_rate: Any = "0.1",
                     locations: Any = None, img_size: int = 224, num_classes: int = 200, clca: bool = True,
                     model_kwargs: Any = None, **fields_: Any) -> "ModelConfig":
        """The config the model options describe (``--model --method --keep-rate --locations
        --img-size --num-classes --clca --model-kwargs``, text as typed); ``fields_`` are further
        fields (e.g. drop_path_rate). Raises ConfigError naming a bad value."""
        kwargs = model_kwargs if isinstance(model_kwargs, Mapping) else parse_model_kwargs(model_kwargs)
        return cls(backbone=model, method=method, keep_rate=parse_keep_rates(keep_rate),
                   locations=parse_locations(locations), clca=ClcaConfig() if clca else ClcaConfig.off(),
                   num_classes=num_classes, img_size=img_size, backbone_kwargs=kwargs, **fields_)


@dataclass(frozen=True)
class ResolvedPlan:
    depth: int
    locations: tuple[int, ...]
    keep_rates: tuple[float, ...]
    recovery: tuple[int, ...]

    @property
    def cache_until(self) -> int:
        """Blocks with index below this put carriers in the cache."""
        return self.recovery[-1] if self.recovery else 0


def default_locations(depth: int) -> tuple[int, ...]:
    """The paper's [3, 6, 9] for 12 blocks, scaled to other depths."""
    if depth < 1:
        raise ConfigError(f"depth={depth} must be >= 1")
    locs = sorted({min(depth - 1, int(depth * f)) for f in DEFAULT_LOCATION_FRACTIONS})
    return tuple(locs)


def parse_keep_rates(text: str | Sequence[float] | float) -> tuple[float, ...]:
    """'0.1', '0.5,0.25,0.1', 0.1 or [0.5, 0.25] -> a tuple of floats; raises ConfigError naming
    the bad value."""
    if isinstance(text, (int, float)):
        return (float(text),)
    if not isinstance(text, str):
        return tuple(v for part in text for v in parse_keep_rates(part))
    out = []
    for part in text.split(","):
        try:
            out.append(float(part))
        except ValueError:
            raise ConfigError(f"keep rate {part!r} is not a number") from None
    return tuple(out)


def parse_locations(text: Any) -> tuple[int, ...] | None:
    """'3,6,9' (or [3, 6, 9]) -> (3, 6, 9); empty/None -> None (the model's default placement)."""
    if text is None or (isinstance(text, str) and text.strip() == ""):
        return None
    parts = text.split(",") if isinstance(text, str) else text
    try:
        return tuple(int(v) for v in parts)
    except (TypeError, ValueError):
        raise ConfigError(f"--locations {text!r} must be comma-separated block indices") from None


def parse_model_kwargs(text: str | None) -> dict[str, Any]:
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
