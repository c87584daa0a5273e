"""Token reduction: pure functions (``functional``), the reducer interface (``base``), one module
per built-in method (``methods``), and the registry every method, built-in or not, is listed in.

``list_methods`` and ``get_reducer_class`` load the built-in methods (and so torch) on first use.
"""

from __future__ import annotations

from .registry import NONE, register_reducer, registered

_loaded = False


def _load_builtin() -> None:
    global _loaded
    if not _loaded:
        from . import methods  # noqa: F401  (each module registers its reducer)

        _loaded = True


def list_methods() -> list[str]:
    """Every method name: ``none`` first, then the registered reducers in registration order (the
    built-in ones in the paper's order, then methods registered elsewhere)."""
    _load_builtin()
    table = registered()
    builtin = [n for n, cls in table.items() if cls.__module__.startswith(f"{__name__}.methods.")]
    return [NONE, *builtin, *(n for n in table if n not in builtin)]


def get_reducer_class(name: str) -> type | None:
    """The reducer class of a method; ``None`` for ``none``; KeyError naming the known ones."""
    if name == NONE:
        return None
    _load_builtin()
    table = registered()
    if name not in table:
        raise KeyError(f"reduction method {name!r} is not registered; known: {', '.join(list_methods())}")
    return table[name]


NONE_LABEL = "plain ViT"


def method_label(name: str) -> str:
    """How pictures and reports name a method: its reducer's ``label`` (the paper's spelling), else
    its registry name; an unknown name is shown as it is."""
    if name == NONE:
        return NONE_LABEL
    try:
        cls = get_reducer_class(name)
    except KeyError:
        return name
    return cls.__dict__.get("label", "") or name   # its own, not a parent method's


def is_method(name: str) -> bool:
    """Whether ``name`` is ``none`` or a registered method (loads the built-in ones only when needed)."""
    if name == NONE or name in registered():
        return True
    _load_builtin()
    return name in registered()


__all__ = ["get_reducer_class", "is_method", "list_methods", "method_label", "register_reducer"]
