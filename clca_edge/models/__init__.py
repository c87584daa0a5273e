"""CLCA models: config, factory, registry of reduction methods, cost accounting.

A reduction method of your own: subclass ``TokenReducer`` and decorate it with
``@register_reducer("name")``; ``method="name"`` then works with ``create_model``, ONNX export and
``cost_report`` like a built-in one. Importing this package does not import torch: the reducer
interface (``TokenReducer``, ``ReduceInput``, ``ReduceOutput``) loads it on first access.
"""

from .config import ClcaConfig, ModelConfig, default_locations
from .factory import build_model, create_model, validate_config
from .reduction import get_reducer_class, list_methods, register_reducer

_TORCH_SIDE = {"TokenReducer", "ReduceInput", "ReduceOutput"}


def __getattr__(name: str):
    if name in _TORCH_SIDE:
        from .reduction import base

        return getattr(base, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "ClcaConfig",
    "ModelConfig",
    "ReduceInput",
    "ReduceOutput",
    "TokenReducer",
    "build_model",
    "create_model",
    "default_locations",
    "get_reducer_class",
    "list_methods",
    "register_reducer",
    "validate_config",
]
