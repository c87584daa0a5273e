"""Tiny timm backbones (real architectures, toy sizes) for tests."""

from __future__ import annotations

TINY = dict(depth=4, embed_dim=64, num_heads=2)
TINY_IMG = 64

# One of each family the wrapper must handle: plain ViT (cls pos-embed), DeiT-III (no pos-embed
# on the class token, LayerScale), CLIP (pre-norm).
TINY_BACKBONES = ["vit_tiny_patch16_224", "deit3_small_patch16_224", "vit_base_patch16_clip_224"]


def tiny_model(method="evit", keep_rate=0.25, clca=True, backbone="vit_tiny_patch16_224", num_classes=5, **kw):
    from clca_edge.models import create_model

    opts = dict(TINY)
    opts.update(kw)
    return create_model(backbone, method=method, keep_rate=keep_rate, clca=clca, img_size=opts.pop("img_size", TINY_IMG),
                        num_classes=num_classes, **opts)
