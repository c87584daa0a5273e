"""The bundle contract: what crosses from the deploy machine to the device. ``store`` loads and
verifies a bundle folder or ``.tar`` (every file's sha256) and writes its manifest. Torch-free;
imports only ``core``."""

from .store import *  # noqa: F401,F403
from .store import __all__  # noqa: F401
