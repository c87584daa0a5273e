"""clca-edge: CLCA token-reduced Vision Transformers for ultra-fine-grained leaf recognition on Jetson."""

__version__ = "0.1.0"
