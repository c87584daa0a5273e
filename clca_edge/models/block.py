"""One block interface for every method: timm's Block weights, our attention, a pluggable reducer."""

from __future__ import annotations

from typing import Optional

from torch import Tensor, nn

from .attention import AttentionInfo, attention_forward
from .provenance import active_trace
from .reduction.base import ReduceInput, TokenReducer
from .tokens import TokenState


def _apply_reducer(
    reducer: TokenReducer, state: TokenState, num_prefix: int, info: Optional[AttentionInfo]
) -> tuple[TokenState, Optional[Tensor]]:
    prefix, rest = state.split(num_prefix)
    inp = ReduceInput(x=rest.x, prefix=prefix.x, size=rest.size, bias=rest.bias, policy=rest.policy)
    if info is not None:
        inp.cls_attn = info.cls_attn[:, :, num_prefix:]
        inp.keys = info.keys[:, :, num_prefix:]
        inp.values = info.values[:, :, num_prefix:]
    trace = active_trace()
    if trace is not None:
        trace.begin(rest.x)
    out = reducer(inp)
    reduced = TokenState(out.x, out.size, out.bias, out.policy)
    if trace is not None:
        trace.end(out.x, reduced.presence(reducer.masks_with_bias), reducer.method_name)
    return prefix.append(reduced), out.aux_loss


def run_block(
    block: nn.Module, state: TokenState, num_prefix: int, reducer: Optional[TokenReducer] = None
) -> tuple[TokenState, Optional[Tensor]]:
    """Run a timm ``Block`` with an optional reduction before it or between attention and MLP."""
    n = state.x.shape[1] - num_prefix
    active = reducer is not None and reducer.active(n)
    placement = reducer.placement if active else None
    aux = None
    if placement == "pre":
        state, aux = _apply_reducer(reducer, state, num_prefix, None)
    need_info = placement == "mid" and reducer.needs_attention
    out, info = attention_forward(block.attn, block.norm1(state.x), state.bias, need_info, state.policy)
    state = state.with_x(state.x + block.drop_path1(block.ls1(out)))
    if placement == "mid":
        state, aux = _apply_reducer(reducer, state, num_prefix, info)
    x = state.x
    state = state.with_x(x + block.drop_path2(block.ls2(block.mlp(block.norm2(x)))))
    return state, aux


__all__ = ["run_block"]
