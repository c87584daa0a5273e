"""One module per reduction method; importing this package registers them all."""

from . import evit, topk  # noqa: F401
