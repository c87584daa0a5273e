"""Registry of token reduction methods: name -> reducer class (``none`` has no reducer).

The one list of methods there is: the built-in ones register themselves with ``register_reducer``
when ``clca_edge.models.reduction`` loads them, and so does a method defined anywhere else.
This module holds the table only (no torch, imports nothing); listing and lookup, which load the
built-in methods first, are in ``clca_edge.models.reduction``.
"""

from __future__ import annotations

from typing import Callable, TypeVar

NONE = "none"  # the plain ViT: no reducer, a method name like the others
_REDUCERS: dict[str, type] = {}

T = TypeVar("T", bound=type)


def register_reducer(name: str) -> Callable[[T], T]:
    """Class decorator: ``@register_reducer("mine")`` on a ``TokenReducer`` subclass makes
    ``method="mine"`` work everywhere a built-in method does (configs, create_model, ONNX export,
    cost counting, the CLI)."""
    if not isinstance(name, str) or not name or name != name.strip() or "," in name or name == NONE:
        raise ValueError(f"reduction method name {name!r}: a non-empty name without commas, not {NONE!r}")

    def deco(cls: T) -> T:
        if name in _REDUCERS and _REDUCERS[name] is not cls:
            raise ValueError(f"reduction method {name!r} registered twice "
                             f"({_REDUCERS[name].__qualname__} and {cls.__qualname__})")
        cls.method_name = name
        _REDUCERS[name] = cls
        return cls

    return deco


def registered() -> dict[str, type]:
    """A copy of the table as it stands (built-in methods only once they are loaded)."""
    return dict(_REDUCERS)
