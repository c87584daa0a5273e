"""The bundle contract: what crosses from the deploy machine to the device. ``manifest`` defines the
typed, versioned manifest (its one writer and one reader); ``store`` loads and verifies a bundle
folder or ``.tar`` (every file's sha256) and reads/writes its manifest. Torch-free; imports only
``core``."""

from .manifest import *  # noqa: F401,F403
from .store import *  # noqa: F401,F403
from . import manifest as _manifest, store as _store

__all__ = sorted(set(_manifest.__all__) | set(_store.__all__))
