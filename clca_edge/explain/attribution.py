"""How much each collected CLS token moved the CLA head towards a class.

The CLA head is linear except for one GELU: BN -> depthwise conv over the g CLS tokens -> BN -> GELU
-> pointwise conv. Up to the GELU every pre-activation is a sum of one term per CLS token plus a
constant, so it splits exactly; the GELU's change is shared among the terms in proportion to them
(the rescale rule), which keeps the split exact:

    logit[c] = reference[c] + sum_j contribution[j]

``reference`` is the logit with every CLS token at the training average (BatchNorm's running mean),
so a contribution reads "how far this depth's summary pushed the score, compared with an average
leaf". Computed from the head's own weights on the CLS tokens the classifying pass produced.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def _bn_affine(bn: nn.BatchNorm1d) -> tuple[Tensor, Tensor]:
    """Eval-mode BatchNorm as y = scale * x + shift, per channel."""
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    return scale, bn.bias - bn.running_mean * scale


@torch.no_grad()
def cla_contributions(head, cls_tokens: list[Tensor], target: Tensor) -> tuple[Tensor, Tensor]:
    """(B, g) contribution of each CLS token to the logit of class ``target`` (B,), and the (B,)
    reference logit; ``reference + contributions.sum(-1)`` equals the head's logit (eval mode)."""
    x = torch.stack(cls_tokens, dim=-1).float()  # (B, D, g)
    s_in, t_in = _bn_affine(head.norm_in)
    xn = x * s_in[:, None] + t_in[:, None]
    xn_ref = head.norm_in.bias[:, None]  # BN output of the running mean: its shift
    w = head.aggregate.weight[:, 0, :]  # (2D, g): output channel c reads input channel c // 2
    src = torch.arange(w.shape[0], device=w.device) // (w.shape[0] // x.shape[1])
    s_mid, t_mid = _bn_affine(head.norm_mid)
    terms = s_mid[:, None] * w * (xn[:, src, :] - xn_ref[src])  # (B, 2D, g)
    m_ref = s_mid * (head.aggregate.bias + (w * xn_ref[src]).sum(-1)) + t_mid  # (2D,)
    m = m_ref + terms.sum(-1)  # (B, 2D)
    act = head.act
    delta = m - m_ref
    small = delta.abs() < 1e-4
    slope_here = (act(m + 1e-3) - act(m - 1e-3)) / 2e-3
    ratio = torch.where(small, slope_here, (act(m) - act(m_ref)) / torch.where(small, torch.ones_like(delta), delta))
    v = head.classify.weight[:, :, 0][target]  # (B, 2D)
    contributions = ((v * ratio).unsqueeze(-1) * terms).sum(dim=1)  # (B, g)
    reference = (v * act(m_ref)).sum(-1) + head.classify.bias[target]
    return contributions, reference


__all__ = ["cla_contributions"]
