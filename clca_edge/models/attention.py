"""Self-attention over a timm ``Attention`` module's own weights, exposing what reducers need.

timm's fused path hides the attention map; reducers need the CLS row, keys and values, and ToMe
and ATS need an additive bias on the keys. Blocks that need none of that keep timm's fused path.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError


@dataclass
class AttentionInfo:
    probs: Tensor  # (B, H, N, N) softmax probabilities
    keys: Tensor  # (B, H, N, head_dim)
    values: Tensor  # (B, H, N, head_dim)


def check_attention_module(attn: nn.Module) -> None:
    for name in ("qkv", "q_norm", "k_norm", "proj", "num_heads", "head_dim", "scale"):
        if not hasattr(attn, name):
            raise ConfigError(
                f"unsupported attention module {type(attn).__name__} (no {name!r}); "
                "use a timm VisionTransformer with standard Attention blocks"
            )


def attention_forward(
    attn: nn.Module, x: Tensor, bias: Optional[Tensor] = None, need_info: bool = False
) -> tuple[Tensor, Optional[AttentionInfo]]:
    """Run ``attn`` on ``x`` (B, N, C); ``bias`` (B, N) is added to every query's logits per key."""
    B, N, _ = x.shape
    qkv = attn.qkv(x).reshape(B, N, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)
    q, k = attn.q_norm(q), attn.k_norm(k)
    info = None
    if not need_info and bias is None and getattr(attn, "fused_attn", False):
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=attn.attn_drop.p if attn.training else 0.0)
    else:
        logits = (q * attn.scale) @ k.transpose(-2, -1)
        if bias is not None:
            logits = logits + bias[:, None, None, :]
        probs = logits.softmax(dim=-1)
        out = attn.attn_drop(probs) @ v
        if need_info:
            info = AttentionInfo(probs=probs, keys=k, values=v)
    out = out.transpose(1, 2).reshape(B, N, attn.num_heads * attn.head_dim)
    out = getattr(attn, "norm", nn.Identity())(out)
    gate = getattr(attn, "gate", None)
    if gate is not None:
        out = out * gate(x).sigmoid()
    return attn.proj_drop(attn.proj(out)), info
