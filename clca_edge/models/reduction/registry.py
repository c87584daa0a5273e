"""Registry of token reduction methods: name -> reducer class (``none`` has no reducer).

Kept free of torch so that configs can be validated without importing it.
"""

from __future__ import annotations

from typing import Callable, TypeVar

# Methods whose implementation lives in this package; importing it fills the registry.
_BUILTIN = ("none", "topk", "evit", "dynamicvit", "ats", "sit", "patchmerger", "dpcknn", "tome")
_REDUCERS: dict[str, type] = {}

T = TypeVar("T", bound=type)


def register_reducer(name: str) -> Callable[[T], T]:
    def deco(cls: T) -> T:
        if name in _REDUCERS:
            raise ValueError(f"reduction method {name!r} registered twice")
        cls.method_name = name
        _REDUCERS[name] = cls
        return cls

    return deco


def _load_builtin() -> None:
    from . import methods  # noqa: F401  (registers every built-in reducer)


def get_reducer_class(name: str) -> type | None:
    """The reducer class of a method; ``None`` for ``none``."""
    if name == "none":
        return None
    _load_builtin()
    try:
        return _REDUCERS[name]
    except KeyError:
        raise KeyError(f"reduction method {name!r} is not implemented") from None


def list_methods(implemented_only: bool = False) -> list[str]:
    """Method names in a stable order. ``implemented_only`` imports torch to check."""
    if not implemented_only:
        return list(_BUILTIN)
    _load_builtin()
    return ["none"] + [m for m in _BUILTIN if m in _REDUCERS]
