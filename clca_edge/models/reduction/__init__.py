"""Token reduction: pure functions (``functional``), one reducer module per method, a registry."""

from .registry import get_reducer_class, list_methods, register_reducer

__all__ = ["get_reducer_class", "list_methods", "register_reducer"]
