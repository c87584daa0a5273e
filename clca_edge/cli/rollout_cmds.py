"""Bundle rollout commands: ``agent`` on the device; ``fleet publish``, ``fleet rollout status``,
``fleet promote`` and ``fleet halt`` at the centre. Thin: the work is in fleet/rollout_agent.py and
centre/rollout.py; paho is imported only when a command runs."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional

import click

from ._common import console, emit_json, main, reports_errors
from .fleet_cmds import broker_options, fleet
from .options import OptionGroup

if TYPE_CHECKING:
    from ..centre.rollout import Release
    from ..fleet.config import CentreLink

log = logging.getLogger(__name__)


def _centre(link, sign_key: Optional[str] = None):
    """The centre's broker link (``broker_options``, as for ``fleet collect``) and signing key."""
    from ..centre.rollout import Centre

    return Centre(link.broker, sign_key=Path(sign_key) if sign_key else None, topic_prefix=link.topic_prefix)


def _json_flag(fn: Callable) -> Callable:
    return click.option("--json", "as_json", is_flag=True, help="Machine-readable output on stdout.")(fn)


@main.command("agent")
@click.option("--fleet", "fleet_file", required=True, type=click.Path(exists=True, dir_okay=False),
              help="The fleet file, with rings = [...] and trusted_keys (see fleet/agent_config.py).")
@click.option("--bundles", required=True, type=click.Path(file_okay=False),
              help="The device's bundle folder: A/B slots, the 'current' pointer capture runs, the state.")
@reports_errors
def agent(fleet_file: str, bundles: str) -> None:
    """Follow the rollout rings: download, verify, self-check, switch, probation, roll back."""
    import signal
    import threading

    from ..fleet.rollout_agent import run_agent
    from ..fleet.agent_config import load_agent_config

    config = load_agent_config(fleet_file, bundles)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    a = run_agent(config, stop)
    click.echo(f"agent stopped: {a.state.state}, running v{a.state.installed_version}", err=True)


def _release(bundle, url, ring, version, rollback):
    from ..centre.rollout import Release

    return Release(bundle=Path(bundle), url=url, ring=ring, version=version, rollback=rollback)


# What to announce; --sign-key (listed among them, as it always was) is the centre's and passes to the command.
release_options = OptionGroup("release", [
    click.option("--bundle", "bundle", required=True, type=click.Path(exists=True, dir_okay=False),
                 help="The bundle .tar that deploy wrote."),
    click.option("--url", required=True, help="Where devices download it: https://, http:// or file://"),
    click.option("--ring", required=True, help="The ring to announce to (canary, farm-north, all...)."),
    click.option("--sign-key", required=True, type=click.Path(exists=True, dir_okay=False),
                 help="The clca-edge.key devices trust (clca-edge keygen)."),
    click.option("--version", "version", type=click.IntRange(min=1), default=None,
                 help="The version (default: the next after every ring's current one)."),
    click.option("--rollback", is_flag=True, help="A signed rollback: devices accept this older version."),
], _release, passes=("sign_key",))


@fleet.command("publish")
@reports_errors
@broker_options
@release_options
@click.option("--store", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="The collector's store: record the bundle's eval-set class mix there, which `fleet status` "
                   "compares the devices running it with.")
@_json_flag
def publish_cmd(link: CentreLink, release: Release, sign_key: str, store: Optional[Path], as_json: bool) -> None:
    """Announce a bundle to a ring (a retained, signed MQTT message; the bytes stay at --url)."""
    from ..centre.rollout import publish
    from .fleet_cmds import eval_mixes_of

    mixes = eval_mixes_of([release.bundle]) if store is not None else {}
    ann = publish(_centre(link, sign_key), release)
    if mixes:
        from ..centre.store import Store

        with Store(store) as db:
            for mix in mixes.values():
                db.add_eval_mix(mix)
    if as_json:
        emit_json(ann.to_dict())
    else:
        click.echo(f"announced {ann.bundle_id} v{ann.version} ({ann.size} bytes) to ring {ann.ring}")


@fleet.group("rollout")
def rollout() -> None:
    """Where the rollout stands."""


@rollout.command("status")
@click.option("--store", required=True, type=click.Path(file_okay=False), help="The collector's store folder.")
@_json_flag
@reports_errors
def rollout_status(store: str, as_json: bool) -> None:
    """Per ring and version, how many devices are in each state; every device's state."""
    from ..centre.rollout import status
    from ..centre.store import Store

    s = Store(Path(store), readonly=True)
    try:
        report = status(s)
    finally:
        s.close()
    if as_json:
        emit_json(report)
        return
    _print_status(report)


def _print_status(report: dict) -> None:
    from rich.table import Table

    out = console()
    rings = Table(title="rings")
    for col in ("ring", "devices", "version", "states"):
        rings.add_column(col)
    for r in report["rings"]:
        for v in r["versions"]:
            rings.add_row(r["ring"], str(r["devices"]), v["version"],
                          ", ".join(f"{n} {s}" for s, n in v["states"].items()))
    out.print(rings)
    devices = Table(title="devices")
    for col in ("device", "ring", "installed", "state", "version", "reason"):
        devices.add_column(col)
    for d in report["devices"]:
        devices.add_row(d["device"], d["ring"], d["installed_version"], d["state"], d["version"], d["reason"])
    out.print(devices)


@fleet.command("promote")
@reports_errors
@broker_options
@click.option("--store", required=True, type=click.Path(file_okay=False), help="The collector's store folder.")
@click.option("--version", "version", required=True, type=click.IntRange(min=1))
@click.option("--from", "src", required=True, help="The ring that ran it first (canary).")
@click.option("--to", "dst", required=True, help="The ring to announce it to next.")
@click.option("--min-success", type=click.FloatRange(0, 1), default=0.9, show_default=True,
              help="Share of --from's devices that must have passed probation.")
@click.option("--sign-key", required=True, type=click.Path(exists=True, dir_okay=False))
@_json_flag
def promote_cmd(link: Any, store: str, version: int, src: str, dst: str, min_success: float, sign_key: str,
                as_json: bool) -> None:
    """Announce a version to the next ring when enough devices of the first passed probation."""
    from ..centre.rollout import promote
    from ..centre.store import Store

    s = Store(Path(store), readonly=True)
    try:
        got = promote(_centre(link, sign_key), s, version, src, dst, min_success)
    finally:
        s.close()
    if as_json:
        emit_json(got)
    else:
        click.echo(f"v{version} passed on {got['passed']}/{got['devices']} of {src}: announced to {dst}")


@fleet.command("halt")
@reports_errors
@broker_options
@click.option("--ring", required=True)
@click.option("--version", "version", type=click.IntRange(min=1), default=None,
              help="Halt only if the ring is at this version.")
@click.option("--sign-key", required=True, type=click.Path(exists=True, dir_okay=False))
def halt_cmd(link: Any, ring: str, version: Optional[int], sign_key: str) -> None:
    """Stop a ring's rollout: devices that have not switched stay where they are."""
    from ..centre.rollout import halt

    ann = halt(_centre(link, sign_key), ring, version)
    click.echo(f"halted v{ann.version} on ring {ann.ring}")


__all__ = ["agent"]
