"""Build CLCA models from a config: validate everything cheaply first, then create and load."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Optional, Sequence, Union

from ..core.errors import ConfigError, PretrainedWeightsError
from .config import ClcaConfig, ModelConfig

log = logging.getLogger(__name__)

Pretrained = Union[str, os.PathLike, bool, None]


def _timm_kwargs(config: ModelConfig) -> dict[str, Any]:
    kwargs = dict(config.backbone_kwargs)
    kwargs.setdefault("img_size", config.img_size)
    kwargs["num_classes"] = 0 if config.clca.cla_head else config.num_classes
    if config.drop_path_rate:
        kwargs["drop_path_rate"] = config.drop_path_rate
    return kwargs


def _create_backbone(config: ModelConfig, **extra: Any):
    import timm

    try:
        return timm.create_model(config.backbone, **_timm_kwargs(config), **extra)
    except RuntimeError as e:
        if "Unknown model" in str(e):
            raise ConfigError(f"backbone {config.backbone!r} is not a timm model ({e})") from None
        raise
    except TypeError as e:
        raise ConfigError(
            f"backbone {config.backbone!r} rejected its options ({e}); is it a timm VisionTransformer?"
        ) from None
    except (AssertionError, ValueError) as e:  # timm asserts e.g. embed_dim % num_heads == 0
        raise ConfigError(f"backbone {config.backbone!r} rejected its options {dict(config.backbone_kwargs)}: "
                          f"{e or 'invalid combination'}") from None


def validate_config(config: ModelConfig) -> None:
    """Every check that needs the backbone's shape, on the meta device (no memory, no weights)."""
    import torch

    from .reduction import get_reducer_class
    from .vit import check_backbone

    try:
        get_reducer_class(config.method)
    except KeyError as e:
        raise ConfigError(str(e.args[0])) from None
    with torch.device("meta"):
        backbone = _create_backbone(config)
        check_backbone(backbone, config.img_size)
        plan = config.resolve(len(backbone.blocks))
        reducer_cls = get_reducer_class(config.method)
        if reducer_cls is not None:  # unknown method_kwargs fail here, before any weights exist
            reducer_cls(keep_rate=plan.keep_rates[0], dim=backbone.embed_dim,
                        num_heads=backbone.blocks[0].attn.num_heads, **config.method_kwargs)


def backbone_pretrained_cfg(config: ModelConfig) -> dict[str, Any]:
    """The backbone's timm pretrained config (mean/std, interpolation, ...), read from a meta-device
    copy: no memory, no weights, no download (the trainer needs the preprocessing before them)."""
    import torch

    with torch.device("meta"):
        return dict(getattr(_create_backbone(config), "pretrained_cfg", None) or {})


def _pretrained_args(config: ModelConfig, pretrained: Pretrained) -> dict[str, Any]:
    if pretrained in (None, False, "none", ""):
        return {"pretrained": False}
    if pretrained in (True, "hub"):
        return {"pretrained": True}
    path = Path(pretrained)
    if not path.is_file():
        raise PretrainedWeightsError(
            f"pretrained weights file {str(path)!r} does not exist; pass an existing .safetensors/.pth/.npz "
            "file, 'hub' to download, or 'none'"
        )
    return {"pretrained": True, "pretrained_cfg_overlay": {"file": str(path)}}


def build_model(config: ModelConfig, pretrained: Pretrained = None):
    """A ``ClcaVisionTransformer`` for ``config``; ``pretrained`` is 'none', 'hub' or a weights file."""
    from .vit import ClcaVisionTransformer

    validate_config(config)
    args = _pretrained_args(config, pretrained)
    try:
        backbone = _create_backbone(config, **args)
    except (ConfigError, PretrainedWeightsError):
        raise
    except Exception as e:  # hub/network/file-format failures surface as many exception types
        if not args["pretrained"]:
            raise
        where = args.get("pretrained_cfg_overlay", {}).get("file") or "the Hugging Face hub"
        raise PretrainedWeightsError(
            f"could not load pretrained weights for {config.backbone!r} from {where} "
            f"({type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else 'no detail'}). "
            "Offline? Pass a local weights file (--pretrained PATH) or --pretrained none"
        ) from None
    return ClcaVisionTransformer(backbone, config)


def create_model(
    backbone: str = "vit_base_patch16_224",
    *,
    method: str = "evit",
    keep_rate: Union[float, Sequence[float]] = 0.1,
    locations: Optional[Sequence[int]] = None,
    clca: Union[bool, ClcaConfig] = True,
    num_classes: int = 200,
    img_size: int = 224,
    pretrained: Pretrained = None,
    drop_path_rate: float = 0.0,
    method_kwargs: Optional[dict[str, Any]] = None,
    **backbone_kwargs: Any,
):
    """Convenience wrapper: keyword knobs -> ``ModelConfig`` -> ``build_model``."""
    if isinstance(clca, bool):
        clca = ClcaConfig() if clca else ClcaConfig.off()
    config = ModelConfig(
        backbone=backbone,
        method=method,
        keep_rate=keep_rate if isinstance(keep_rate, (int, float)) else tuple(keep_rate),
        locations=None if locations is None else tuple(locations),
        clca=clca,
        num_classes=num_classes,
        img_size=img_size,
        backbone_kwargs=backbone_kwargs,
        drop_path_rate=drop_path_rate,
        method_kwargs=method_kwargs or {},
    )
    return build_model(config, pretrained=pretrained)
