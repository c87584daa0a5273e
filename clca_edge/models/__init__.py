"""CLCA models: config, factory, registry of reduction methods, cost accounting."""

from .config import ClcaConfig, ModelConfig, default_locations
from .factory import build_model, create_model, validate_config
from .reduction.registry import list_methods

__all__ = [
    "ClcaConfig",
    "ModelConfig",
    "build_model",
    "create_model",
    "default_locations",
    "list_methods",
    "validate_config",
]
