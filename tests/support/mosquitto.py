"""A real Eclipse Mosquitto for tests (``clca_edge/centre/local_broker.py``) in a temp folder, on a
free 127.0.0.1 port, with the shipped deploy/fleet/acl itself (its path, not a copy of its
content), so the tests prove the file a farm installs.

    with Mosquitto(tmp_path, users={"dev-a": "pw"}) as broker:
        broker.url        # mqtt://127.0.0.1:PORT
        broker.restart()  # same port, same persistence
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Optional

import pytest

from clca_edge.centre.local_broker import BrokerTls, LocalBroker, free_port, have_mosquitto  # noqa: F401

REPO = Path(__file__).resolve().parents[2]
SHIPPED_ACL = REPO / "deploy" / "fleet" / "acl"

needs_mosquitto = pytest.mark.skipif(not have_mosquitto(), reason="mosquitto is not installed "
                                     "(scripts/setup_env.sh installs it: apt-get install mosquitto)")


class Mosquitto(LocalBroker):
    """``acl``: enforce the shipped ACL (with users only)."""

    def __init__(self, folder: Path, users: Optional[Dict[str, str]] = None, acl: bool = True,
                 port: Optional[int] = None, max_queued: int = 1_000_000, tls: Optional[BrokerTls] = None):
        super().__init__(folder, users, SHIPPED_ACL if acl else None, port, max_queued, tls)
