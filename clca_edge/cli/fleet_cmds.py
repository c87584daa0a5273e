"""``clca-edge fleet ...``: the fleet link over MQTT. ``sync`` runs on a device; ``collect``,
``status``, ``report`` and ``harvest`` at the centre. paho is imported only when a command runs."""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path

import click

from ._common import console, emit_json, main, reports_errors
from .options import OptionGroup

log = logging.getLogger(__name__)


def fleet_option(fn):
    """``--fleet FILE`` of capture: send the field log, heartbeats and uncertain frames over MQTT."""
    return click.option(
        "--fleet", "fleet", type=click.Path(dir_okay=False, path_type=Path), default=None,
        help="Fleet file (TOML: broker, device, credentials, sampling policy): send the field log, heartbeats and "
             "uncertain frames to the centre over MQTT, store-and-forward (the capture never waits on the network; "
             "what is not sent stays pending in the log for the next run or `fleet sync`).")(fn)


def load_fleet_option(path):
    """The fleet file, read and checked before anything starts (None without --fleet)."""
    if path is None:
        return None
    from ..fleet.config import load_fleet

    return load_fleet(path)


def start_fleet_agent(config, log_file):
    if config is None:
        return None
    from ..fleet.agent import FleetAgent

    agent = FleetAgent(config, log_file).start()
    console(stderr=True).print(f"fleet: {config.device} -> {config.broker.url} (store and forward from {log_file})",
                               highlight=False)
    return agent


def log_predictions(results, model, classifier, log_path, fleet_cfg) -> None:
    """predict's decisions as field-log records (``--log``), sent over the fleet link with ``--fleet``
    (the images the sampling policy picks are read again and sent too)."""
    from ..capture.fieldlog import open_log

    if log_path is None:
        return
    tag = {"source": "predict", "backend": classifier.backend, "precision": classifier.precision,
           "bundle_sha": model.sha}
    with open_log(log_path) as flog:
        agent = start_fleet_agent(fleet_cfg, log_path)
        try:
            flog.write({"type": "start", **tag, "classes": len(model.class_names)})
            for i, r in enumerate(results):
                if r.topk is None:
                    continue
                record = {"type": "decision", "frame": i, **tag, **r.to_dict()}
                record["file"] = record.pop("path")
                flog.write(record)
                if agent is not None:
                    agent.on_record(record, lambda path=r.path: _read_bgr(path))
        finally:
            stop_fleet_agent(agent, grace_s=10.0)


def _read_bgr(path):
    import cv2

    return cv2.imread(str(path), cv2.IMREAD_COLOR)


def fleet_observers(agent) -> tuple:
    """The capture run's observer that feeds the agent (none without --fleet)."""
    if agent is None:
        return ()
    from ..fleet.observer import FleetObserver

    return (FleetObserver(agent),)


def stop_fleet_agent(agent, grace_s: float = 2.0) -> None:
    """A moment to send what the last frames wrote, then stop and say what is still pending."""
    if agent is None:
        return
    agent.uploader.drain(grace_s)
    agent.stop()
    records, frames = agent.uploader.pending()
    con = console(stderr=True)
    con.print(f"fleet: sent {agent.uploader.records_sent} record(s) and {agent.uploader.frames_sent} frame(s); "
              f"pending {records} record(s), {frames} frame(s)"
              + (" (sent on the next run, or now with `clca-edge fleet sync`)" if records or frames else ""),
              highlight=False)


@main.group()
def fleet() -> None:
    """Many devices, one place: send field logs and uncertain frames over MQTT, collect and view them."""


def _centre_link(broker, username, password_file, ca, cert, key, topic_prefix):
    from ..fleet.config import BrokerConfig, CentreLink, read_password

    password = read_password(password_file) if password_file is not None else None
    return CentreLink(BrokerConfig(url=broker, username=username, password=password, ca=ca, cert=cert, key=key),
                      topic_prefix)


# The broker and credentials, as a device's fleet file gives them (the centre's side): the command
# receives one ``fleet.config.CentreLink`` as ``link`` (collect, publish, promote, halt).
broker_options = OptionGroup("link", [
    click.option("--broker", required=True, help="mqtt://HOST[:PORT] or mqtts://HOST[:PORT]."),
    click.option("--username", default=None, help="MQTT username (the shipped ACL's reader is 'collector')."),
    click.option("--password-file", type=click.Path(dir_okay=False, path_type=Path), default=None,
                 help="File whose first line is the MQTT password."),
    click.option("--ca", type=click.Path(dir_okay=False, path_type=Path), default=None,
                 help="CA certificate for mqtts:// (default: the system's)."),
    click.option("--cert", type=click.Path(dir_okay=False, path_type=Path), default=None,
                 help="Client certificate (mqtts://), with --key."),
    click.option("--key", type=click.Path(dir_okay=False, path_type=Path), default=None,
                 help="Client certificate's private key."),
    click.option("--topic-prefix", default="clca", show_default=True, help="The fleet's topic prefix."),
], _centre_link)


@fleet.command()
@click.option("--fleet", "fleet_file", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="The device's fleet file (TOML: broker, device, credentials, limits).")
@click.option("--log", "log_path", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="The field log to send (what the broker has acknowledged before is skipped).")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=60.0, show_default=True,
              help="Give up after this many seconds, saying how much is left (exit 1).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output on stdout.")
@reports_errors
def sync(fleet_file, log_path, timeout, as_json):
    """Send what a field log (and its chosen frames) still holds, then exit."""
    from ..core.errors import FleetLinkError
    from ..fleet.config import load_fleet
    from ..fleet.sync import sync_log

    config = load_fleet(fleet_file)
    result = sync_log(config, log_path, timeout)
    if as_json:
        emit_json(result.to_dict())
    else:
        console().print(f"sent {result.records_sent} record(s) and {result.frames_sent} frame(s) in "
                        f"{result.seconds:.1f} s; left: {result.records_left} record(s) ({result.bytes_left} bytes), "
                        f"{result.frames_left} frame(s)", highlight=False)
    if not result.done:
        why = "" if result.connected else f" (never reached {config.broker.url})"
        raise FleetLinkError(f"--timeout {timeout:g} s reached with {result.records_left} record(s) and "
                             f"{result.frames_left} frame(s) left{why}; run `fleet sync` again")


@fleet.command()
@reports_errors
@broker_options
@click.option("--store", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Store folder (SQLite fleet.db + frames/); created if missing, resumed if not.")
@click.option("--client-id", default=None, help="MQTT client id (default: clca-collector-HOSTNAME); keep it "
                                                "stable so the broker queues messages while this collector is away.")
@click.option("--group", default="clca-collectors", show_default=True,
              help="Shared-subscription group: collectors of one group share the messages.")
def collect(link, store, client_id, group):
    """Collect every device's records, heartbeats, frames and events into a store, until SIGINT/SIGTERM."""
    from ..centre.collector import Collector
    from ..centre.store import Store

    stop = threading.Event()
    old = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        with Store(store) as db:
            collector = Collector(link.broker, db, link.topic_prefix, client_id=client_id, group=group).start()
            console(stderr=True).print(f"collecting from {link.broker.url} into {store} (SIGINT/SIGTERM stops)", highlight=False)
            try:
                while not stop.wait(60.0):
                    log.info("collected so far: %s", dict(collector.counts))
            finally:
                collector.stop()
            counts = dict(collector.counts)
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    console(stderr=True).print("stopped; this run: " + (", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
                                                         or "nothing received"), highlight=False)


@fleet.command()
@click.option("--store", required=True, type=click.Path(file_okay=False, path_type=Path), help="The collector's store.")
@click.option("--low-confidence", type=click.FloatRange(0, 1), default=0.5, show_default=True,
              help="A decision below this confidence counts as low-confidence.")
@click.option("--stale", "stale_s", type=click.FloatRange(min=0), default=600.0, show_default=True,
              help="Seconds of silence after which a device is not shown online.")
@click.option("--bundle", "bundles", multiple=True, type=click.Path(exists=True, path_type=Path),
              help="A bundle (folder or .tar) whose eval-set class mix devices running it are compared with, "
                   "besides those `fleet publish --store` recorded (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output on stdout.")
@reports_errors
def status(store, low_confidence, stale_s, bundles, as_json):
    """One row per device: online, last seen, bundle, backend, decisions and refusals, confidence, classes
    (and their distance to the bundle's eval-set class mix)."""
    from ..centre.status import device_statuses
    from ..centre.store import Store

    mixes = eval_mixes_of(bundles)
    with Store(store, readonly=True) as db:
        rows = device_statuses(db, low_confidence, stale_s, eval_mixes=mixes)
        drops = db.drops()
    if as_json:
        emit_json({"devices": [r.to_dict() for r in rows], "dropped": drops}, indent=2)
        return
    from rich.table import Table

    t = Table(title=f"fleet: {len(rows)} device(s)")
    for col in ("device", "online", "last seen", "bundle", "backend", "fps", "decisions (today)",
                "refused (today)", "low conf", "classes", "vs eval mix", "self-check", "pending"):
        t.add_column(col)
    for r in rows:
        top = ", ".join(f"{c} {n}" for c, n in sorted(r.classes.items(), key=lambda kv: -kv[1])[:3])
        t.add_row(r.device, "[green]yes[/]" if r.online else f"[red]no[/] ({r.state or '?'})", r.last_seen or "-",
                  (r.bundle_version or (r.bundle or "-")[:12]), f"{r.backend or '-'} {r.precision or ''}",
                  f"{r.fps:.1f}" if r.fps is not None else "-", f"{r.decisions} ({r.decisions_today})",
                  f"{r.refused} ({r.refused_today})",
                  f"{r.low_confidence_share:.1%}" if r.low_confidence_share is not None else "-", top or "-",
                  f"TVD {r.eval_mix.tvd:.2f}" if r.eval_mix is not None else "-", r.selfcheck or "-", str(r.pending) if r.pending is not None else "-")
    console().print(t)
    if drops:
        console().print("dropped messages: " + ", ".join(f"{k} {v}" for k, v in sorted(drops.items())),
                        highlight=False)


def eval_mixes_of(bundles) -> dict:
    """The eval-set class mixes of bundles given on the command line, by manifest sha256 (a bundle
    from before they were recorded is named and left out)."""
    from ..centre.eval_mix import read_eval_mix

    mixes = {}
    for path in bundles:
        mix = read_eval_mix(path)
        if mix is None:
            log.warning("bundle %s records no eval-set class counts (deployed before them): not compared", path)
        else:
            mixes[mix.manifest_sha] = mix
    return mixes


@fleet.command()
@click.option("--store", required=True, type=click.Path(file_okay=False, path_type=Path), help="The collector's store.")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder for index.html (a static page: open it from disk).")
@reports_errors
def report(store, out):
    """A static HTML page with plots: decisions per hour, refusal and low-confidence rates, confidence, class mix."""
    import datetime as dt

    from ..centre.report import write_report
    from ..centre.store import Store
    from ..core.output_paths import make_dirs

    with Store(store, readonly=True) as db:
        make_dirs(out, "--out")
        path, plots = write_report(db, out, dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"))
    console().print(f"report with {plots} plots: {path}", highlight=False)


@fleet.command()
@click.option("--store", required=True, type=click.Path(file_okay=False, path_type=Path), help="The collector's store.")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Labelling folder: unlabelled/SUGGESTED_CLASS/*.jpg, labelled/, frames.csv, label-studio.json.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output on stdout.")
@reports_errors
def harvest(store, out, as_json):
    """The collected uncertain frames as a folder to label by moving files into labelled/CLASS/.

    Then: clca-edge train --data ORIGINAL --extra-data OUT/labelled (the train split only)."""
    from ..centre.harvest import harvest as run_harvest
    from ..centre.store import Store
    from ..core.output_paths import make_dirs

    with Store(store, readonly=True) as db:
        make_dirs(out, "--out")
        result = run_harvest(db, out)
    if as_json:
        emit_json({"added": result.added, "already": result.already, "missing": result.missing, "out": str(out)})
        return
    console().print(f"{result.added} new frame(s) in {out}/unlabelled ({result.already} already harvested); label "
                    f"them by moving each into {out}/labelled/CLASS/, then train --extra-data {out}/labelled",
                    highlight=False)
