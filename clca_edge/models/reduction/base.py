"""The one interface every token reduction method implements.

A reducer sees only the reducible tokens (everything after the prefix: CLS, register and CLR
tokens are never reduced) and returns a fixed number of tokens, ``num_out(n)``, that depends on
``n`` and the configuration only. That keeps every shape static for ONNX and TensorRT.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal, Optional

from torch import Tensor, nn

from ...core.errors import ConfigError
from .functional import gather_tokens

Placement = Literal["pre", "mid"]


@dataclass
class ReduceInput:
    """What a reducer may look at, for the reducible tokens only (n of them).

    ``cls_attn`` (B, H, n): attention of the CLS query to each token, per head.
    ``keys`` / ``values`` (B, H, n, head_dim). All three are ``None`` for ``pre`` reducers.
    ``size`` (B, n, 1): how many original tokens each token stands for (``None`` unless tracked).
    ``bias`` (B, n): additive attention-logit bias on keys (``None`` when unused).
    ``prefix`` (B, P, C): the CLS/CLR/register tokens, for methods that use global context.
    ``policy`` (B, n): multiplicative keep mask from an earlier location (``None``: all kept).
    """

    x: Tensor
    prefix: Tensor
    cls_attn: Optional[Tensor] = None
    keys: Optional[Tensor] = None
    values: Optional[Tensor] = None
    size: Optional[Tensor] = None
    bias: Optional[Tensor] = None
    policy: Optional[Tensor] = None


@dataclass
class ReduceOutput:
    x: Tensor
    size: Optional[Tensor] = None
    bias: Optional[Tensor] = None
    aux_loss: Optional[Tensor] = None
    policy: Optional[Tensor] = None


class TokenReducer(nn.Module):
    """Base class: subclasses set ``placement`` and implement ``num_out`` and ``reduce``.

    placement: ``pre`` runs before the block's attention, ``mid`` between attention and MLP
    (the attention of this block is available).
    """

    method_name: ClassVar[str] = ""
    label: ClassVar[str] = ""  # how pictures and reports name the method (its paper's spelling); "": method_name
    placement: ClassVar[Placement] = "mid"
    needs_attention: ClassVar[bool] = False
    tracks_size: ClassVar[bool] = False  # carry token sizes (B, N, 1) from the first block
    # Tokens whose bias is MASKED_BIAS are placeholders (kept for static shapes): leave them out of
    # pooled summaries such as the CLC cache's average.
    masks_with_bias: ClassVar[bool] = False

    def __init__(self, keep_rate: float, dim: int, num_heads: int, **kwargs) -> None:
        super().__init__()
        if kwargs:
            raise ConfigError(f"method {self.method_name!r} has no options {sorted(kwargs)} (method_kwargs)")
        self.keep_rate = float(keep_rate)
        self.dim = dim
        self.num_heads = num_heads

    def num_out(self, n: int) -> int:
        raise NotImplementedError

    def active(self, n: int) -> bool:
        """Whether this location changes anything for ``n`` input tokens (else it is skipped)."""
        return self.num_out(n) != n

    def reduce(self, inp: ReduceInput) -> ReduceOutput:
        raise NotImplementedError

    def bind(self, n: int) -> None:
        """Told once by the model: ``n`` reducible tokens reach this location at inference (the
        token plan). Methods with parameters sized by the token count create them here."""

    def bind_unreduced(self, n_unreduced: int, num_locations: int) -> None:
        """Told once by the model, after ``bind``: ``n_unreduced`` reducible tokens reach this
        location when no earlier location removes any (a training pass that masks instead of
        dropping), and the model has ``num_locations`` locations."""

    def forward(self, inp: ReduceInput) -> ReduceOutput:
        return self.reduce(inp)

    def extra_repr(self) -> str:
        return f"keep_rate={self.keep_rate}, placement={self.placement}"


def gather_optional(t: Optional[Tensor], idx: Tensor) -> Optional[Tensor]:
    """Gather per-token side data (size or bias) with the same indices as the tokens."""
    if t is None:
        return None
    if t.dim() == 2:
        return gather_tokens(t.unsqueeze(-1), idx).squeeze(-1)
    return gather_tokens(t, idx)


__all__ = ["Placement", "ReduceInput", "ReduceOutput", "TokenReducer", "gather_optional"]
