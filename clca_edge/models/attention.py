"""Self-attention over a timm ``Attention`` module's own weights, exposing what reducers need.

timm's fused kernel hides the attention map, yet reducers need only its CLS row (plus keys and
values), and ToMe and ATS need an additive bias on the keys. So the output always comes from the
fused kernel (with the bias as its mask) and the CLS row is recomputed from the CLS query alone:
(B, H, 1, N) instead of materialising (B, H, N, N). Only DynamicViT's training policy, which must
stay differentiable, takes the explicit path.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..core.errors import ConfigError


@dataclass
class AttentionInfo:
    cls_attn: Tensor  # (B, H, N) softmax probabilities of the CLS query over every key
    keys: Tensor  # (B, H, N, head_dim)
    values: Tensor  # (B, H, N, head_dim)


def check_attention_module(attn: nn.Module) -> None:
    for name in ("qkv", "q_norm", "k_norm", "proj", "num_heads", "head_dim", "scale"):
        if not hasattr(attn, name):
            raise ConfigError(
                f"unsupported attention module {type(attn).__name__} (no {name!r}); "
                "use a timm VisionTransformer with standard Attention blocks"
            )


def policy_softmax(logits: Tensor, policy: Tensor, eps: float = 1e-6) -> Tensor:
    """Softmax over keys that counts only kept keys (``policy`` (B, N) in [0, 1]) plus each
    query's own key, so a masked token never influences a kept one yet its own row stays defined.

    Multiplicative rather than an additive bias so that the gradient reaches the (straight-through
    Gumbel) policy; computed in float32 as in DynamicViT.
    """
    n = logits.shape[-1]
    keep = policy[:, None, None, :].float()
    eye = torch.eye(n, device=logits.device, dtype=torch.float32)
    weights = keep + (1.0 - keep) * eye
    lf = logits.float()
    e = (lf - lf.amax(dim=-1, keepdim=True)).exp() * weights
    return ((e + eps / n) / (e.sum(dim=-1, keepdim=True) + eps)).to(logits.dtype)


def attention_forward(
    attn: nn.Module,
    x: Tensor,
    bias: Optional[Tensor] = None,
    need_info: bool = False,
    policy: Optional[Tensor] = None,
) -> tuple[Tensor, Optional[AttentionInfo]]:
    """Run ``attn`` on ``x`` (B, N, C); ``bias`` (B, N) is added to every query's logits per key;
    ``policy`` (B, N), when given, masks keys multiplicatively (see ``policy_softmax``)."""
    B, N, _ = x.shape
    qkv = attn.qkv(x).reshape(B, N, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)
    q, k = attn.q_norm(q), attn.k_norm(k)
    info = None
    mask = None if bias is None else bias[:, None, None, :].to(q.dtype)
    if policy is None and getattr(attn, "fused_attn", False):
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask,
                                             dropout_p=attn.attn_drop.p if attn.training else 0.0)
        if need_info:
            cls_logits = (q[:, :, :1] * attn.scale) @ k.transpose(-2, -1)
            if mask is not None:
                cls_logits = cls_logits + mask
            info = AttentionInfo(cls_attn=cls_logits.softmax(dim=-1)[:, :, 0], keys=k, values=v)
    else:
        logits = (q * attn.scale) @ k.transpose(-2, -1)
        if mask is not None:
            logits = logits + mask
        probs = logits.softmax(dim=-1) if policy is None else policy_softmax(logits, policy)
        out = attn.attn_drop(probs) @ v
        if need_info:
            info = AttentionInfo(cls_attn=probs[:, :, 0], keys=k, values=v)
    out = out.transpose(1, 2).reshape(B, N, attn.num_heads * attn.head_dim)
    out = getattr(attn, "norm", nn.Identity())(out)
    gate = getattr(attn, "gate", None)
    if gate is not None:
        out = out * gate(x).sigmoid()
    return attn.proj_drop(attn.proj(out)), info
