"""Base for reducers whose parameters are sized by their output count k (SiT, PatchMerger)."""

from __future__ import annotations

from typing import Optional

from ....core.errors import ConfigError
from ..base import TokenReducer
from ..functional import keep_count


class BoundReducer(TokenReducer):
    """Outputs keep_count(n, r) tokens; creates its k-sized parameters in ``bind`` (called by
    ClcaVisionTransformer with the planned n), nothing when the location is inactive."""

    placement = "pre"

    def __init__(self, keep_rate: float, dim: int, num_heads: int, **kwargs) -> None:
        super().__init__(keep_rate, dim, num_heads, **kwargs)
        self.num_tokens: Optional[int] = None

    def num_out(self, n: int) -> int:
        return keep_count(n, self.keep_rate)

    def bind(self, n: int) -> None:
        if self.num_tokens is not None:
            if n != self.num_tokens:
                raise ConfigError(f"{self.method_name} reducer is already bound to {self.num_tokens} tokens, not {n}")
            return
        if self.active(n):
            self.num_tokens = n
            self.build(self.num_out(n))

    def build(self, k: int) -> None:
        raise NotImplementedError

    def check_input(self, n: int) -> None:
        if n != self.num_tokens:
            raise ConfigError(
                f"{self.method_name} reducer was built for {self.num_tokens} input tokens but got {n}; "
                "build it through ClcaVisionTransformer (build_model/create_model), which binds it to the token plan"
            )

    def extra_repr(self) -> str:
        k = self.num_out(self.num_tokens) if self.num_tokens else None
        return f"{super().extra_repr()}, tokens={self.num_tokens}->{k}"
