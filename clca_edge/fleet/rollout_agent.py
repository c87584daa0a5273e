"""The device agent (``clca-edge agent``): follows its rings' announcements and moves the device
to a new bundle only when every check passes, reporting each step to the centre.

    announced -> downloading -> verified -> installed -> probation_passed
                          \\-> failed: reason (stays on the bundle it runs)
                                            installed -> rolled_back (back to the previous bundle)

An announcement must be signed by a trusted key and name the ring it came on; an older version
than the one installed is refused unless it is a signed rollback; a version this device refused
(its self-check failed, or it was rolled back) is never tried again. The download runs on its own
thread (resumable, rate-limited: ``fleet.download``) while the agent keeps reading messages, so a
``fleet halt`` stops it. The switch is ``fleet.slots``' atomic pointer; the probation's evidence is
capture's field log (``fleet.probation``). Every state change is an ``Event`` on the device's
events topic (QoS 1), numbered per device, so the centre stores each once; it is made durable in the
device's events outbox first (``fleet.event_outbox``), so one not yet acknowledged survives a restart.
Torch-free.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import logging
import os
import queue
import shutil
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

from ..bundle.signature import TrustedKeys
from ..core.errors import ClcaEdgeError
from .agent_config import AgentConfig
from .announce import Announcement, AnnouncementError, utc_now, verified_announcement
from .download import DownloadCancelled, DownloadError, DownloadResult, download
from .event_outbox import EventOutbox, EventSender
from .evidence import LogTail
from .install import InstallError, stage
from .messages import Event, MessageError, Resend, decode
from .probation import PASS, ROLLBACK, Evidence, Tally, judge
from .slots import (ANNOUNCED, DOWNLOADING, FAILED, HALTED, INSTALLED, PROBATION_PASSED, ROLLED_BACK, VERIFIED,
                    InstalledBundle, Slots)
from .topics import Topics

log = logging.getLogger(__name__)

MAX_REASON = 2000   # characters of a reason an event carries (an event is bounded in size)


@dataclass
class Job:
    """One announcement being downloaded on its own thread."""

    announcement: Announcement
    dest: Path
    stop: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)
    result: Optional[DownloadResult] = None
    error: Optional[DownloadError] = None
    thread: Optional[threading.Thread] = None


def _flat(figures: Dict[str, Any], prefix: str = "") -> Dict[str, float]:
    """Nested probation figures as the flat name -> number map an Event carries."""
    out: Dict[str, float] = {}
    for k, v in figures.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}_"))
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            out[f"{prefix}{k}"] = float(v)
    return out


class RolloutAgent:
    """One device's agent."""

    def __init__(self, config: AgentConfig, trusted: TrustedKeys):
        self.config = config
        self.trusted = trusted
        self.slots = Slots(config.bundles)
        self.state = self.slots.load_state()
        self.slots.ensure_pointer(self.state)
        self.events = EventOutbox(config.bundles)
        # Killed between the event's append and the state's save: number on after the event.
        self.state.event_seq = max(self.state.event_seq, self.events.last_seq())
        self.sender: Optional[EventSender] = None
        self.topics = Topics(config.fleet.topic_prefix)
        self.inbox: "queue.Queue[Tuple[str, bytes]]" = queue.Queue()
        self.job: Optional[Job] = None
        self.ignored = 0                      # announcements refused unread or unverified
        self._said_older: set = set()
        self.tail = LogTail(config.field_log) if config.field_log is not None else None
        self.tally = Tally(low_confidence=config.probation.low_confidence)
        self.link = None

    # ------------------------------------------------------------------------------ the link
    def connect(self) -> None:
        from .mqtt import MqttLink

        self.link = MqttLink(self.config.fleet.broker, f"{self.config.fleet.device}-agent", clean_session=False)
        self.link.on_connect(self._subscribe)
        self.link.client.on_message = lambda client, userdata, msg: self.inbox.put((msg.topic, msg.payload))
        self.sender = EventSender(self.events, self.link, self.topics).start()
        self.link.start()

    def _subscribe(self, client) -> None:
        for ring in self.config.rings:
            client.subscribe(self.topics.ring_announce(ring), qos=1)
        client.subscribe(self.topics.resend_events(self.config.fleet.device), qos=1)
        self.inbox.put(("", b"hello"))   # the main loop says where it stands (one thread changes state)

    def close(self, drain_s: float = 2.0) -> None:
        """Stop; events the broker has not acknowledged within ``drain_s`` stay in the outbox."""
        if self.job is not None:
            self.job.stop.set()
            if self.job.thread is not None:
                self.job.thread.join(10)
        if self.sender is not None:
            if self.link is not None and self.link.connected.is_set():
                self.sender.drain(drain_s)
            self.sender.stop()
        if self.link is not None:
            self.link.stop()

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                self.step()
            except (ClcaEdgeError, OSError) as e:   # a full disk writing the state: try again, say it once a step
                log.error("rollout agent: %s; going on", e)
            stop.wait(self.config.poll_s)

    def step(self) -> None:
        """Handle what came in, a finished download, and the probation."""
        while True:
            try:
                topic, payload = self.inbox.get_nowait()
            except queue.Empty:
                break
            if not topic:
                self.report(self.state.state, self.state.version, self.state.reason, ring=self.state.ring)
            else:
                self.handle_message(topic, payload)
        if self.job is not None and self.job.done.is_set():
            self._finish_job(self.job)
        self._check_probation()

    # ------------------------------------------------------------------------------ events
    def report(self, state: str, version: int, reason: str = "", figures: Optional[Dict[str, Any]] = None,
               ring: str = "") -> Event:
        """Report a state change, which becomes the device's state (kept across restarts): the event
        is durable in the outbox before the state file moves on, and sent by the events thread."""
        st = self.state
        st.event_seq += 1
        st.state, st.version, st.reason, st.ring = state, version, reason, ring or st.ring
        event = Event(device=self.config.fleet.device, seq=st.event_seq, state=state,
                      version=str(version) if version else None, reason=reason[:MAX_REASON] or None,
                      figures=_flat(figures or {}), time=utc_now(), ring=ring or st.ring or None,
                      installed_version=str(st.installed_version), rings=tuple(self.config.rings))
        self.events.append(event)
        self.slots.save_state(st)
        level = logging.WARNING if state in (FAILED, ROLLED_BACK) else logging.INFO
        log.log(level, "v%s: %s%s", version, state, f": {reason}" if reason else "")
        if self.sender is not None:
            self.sender.notify()
        return event

    # ------------------------------------------------------------------------------ announcements
    def _ring_of(self, topic: str) -> Optional[str]:
        head, tail = f"{self.topics.prefix}/rings/", "/announce"
        if topic.startswith(head) and topic.endswith(tail):
            return topic[len(head):-len(tail)]
        return None

    def handle_message(self, topic: str, payload: bytes) -> None:
        if topic == self.topics.resend_events(self.config.fleet.device):
            self._resend_events(payload)
            return
        ring = self._ring_of(topic)
        if ring is None or ring not in self.config.rings or not payload:
            return   # not ours, or a cleared retained announcement
        try:
            ann = verified_announcement(payload, self.trusted)
        except AnnouncementError as e:
            self.ignored += 1
            log.warning("ignored an announcement on %s: %s", topic, e)
            return
        if ann.ring != ring:
            self.ignored += 1
            log.warning("ignored an announcement for ring %s that came on %s (replayed onto another ring)",
                        ann.ring, topic)
            return
        self.consider(ann)

    def _resend_events(self, payload: bytes) -> None:
        """The centre misses some of this device's events (a retained request; empty once cleared)."""
        if not payload or self.sender is None:
            return
        try:
            request = decode(Resend.KIND, payload)
        except MessageError as e:
            log.warning("ignored a malformed resend request: %s", e)
            return
        if request.device == self.config.fleet.device:
            self.sender.request_rewind(request)

    def consider(self, ann: Announcement) -> None:
        st, job = self.state, self.job
        if ann.halted:
            self._halt(ann)
            return
        if ann.version == st.installed_version or (job is not None and job.announcement.version == ann.version):
            return   # running it, or on its way (a second ring announcing the same version)
        if st.is_refused(ann.version):
            log.info("v%d was refused on this device before (%s); not tried again", ann.version,
                     st.refused[str(ann.version)])
            return
        if ann.version < st.installed_version and not ann.rollback:
            if ann.version not in self._said_older:   # said once: a retained message comes on every reconnect
                self._said_older.add(ann.version)
                log.warning("refused v%d for ring %s: older than the installed v%d and not a signed rollback",
                            ann.version, ann.ring, st.installed_version)
            return
        if ann.rollback and not self._rollback_acceptable(ann):
            return
        if job is not None and job.announcement.version > ann.version and not ann.rollback:
            return   # a newer one is on its way
        self._start_job(ann)

    def _rollback_acceptable(self, ann: Announcement) -> bool:
        """A rollback replaces the version this device runs and is newer than every announcement it
        installed; anything else is an old rollback replayed (to force a downgrade): refused."""
        st = self.state
        if ann.from_version != st.installed_version:
            why = f"it replaces v{ann.from_version}, this device runs v{st.installed_version}"
        elif ann.seq <= st.announce_seq:
            why = f"its seq {ann.seq} is not newer than the installed announcement's {st.announce_seq} (a replay)"
        else:
            return True
        if (ann.version, ann.seq) not in self._said_older:   # said once: retained messages come again
            self._said_older.add((ann.version, ann.seq))
            log.warning("refused the rollback to v%d for ring %s: %s", ann.version, ann.ring, why)
        return False

    def _halt(self, ann: Announcement) -> None:
        job = self.job
        if job is not None and job.announcement.version == ann.version:
            job.stop.set()
            self.job = None
            self.report(HALTED, ann.version, "rollout halted by the centre; stays on the bundle it runs",
                        ring=ann.ring)

    # ------------------------------------------------------------------------------ download
    def _start_job(self, ann: Announcement) -> None:
        if self.job is not None:
            self.job.stop.set()
        dest = self.slots.staging / f"{ann.bundle_id}-v{ann.version}.tar"
        job = Job(ann, dest)
        self.report(ANNOUNCED, ann.version, ring=ann.ring)
        self.report(DOWNLOADING, ann.version, ring=ann.ring,
                    figures={"size": ann.size, "resume_from": self._part_size(dest)})
        job.thread = threading.Thread(target=self._download, args=(job,), name=f"download-v{ann.version}", daemon=True)
        self.job = job
        job.thread.start()

    @staticmethod
    def _part_size(dest: Path) -> int:
        part = dest.with_name(dest.name + ".part")
        return part.stat().st_size if part.is_file() else 0

    def _download(self, job: Job) -> None:
        first, longest = self.config.retry_s
        delay = first
        ann = job.announcement
        while not job.stop.is_set():
            try:
                job.result = download(ann.url, job.dest, ann.size, ann.sha256, self.config.download, stop=job.stop)
                break
            except DownloadCancelled:
                break
            except DownloadError as e:
                if not e.transient:
                    job.error = e
                    break
                log.warning("v%d: %s; trying again in %.0f s", ann.version, e, delay)
                job.stop.wait(delay)
                delay = min(delay * 2, longest)
        job.done.set()

    def _finish_job(self, job: Job) -> None:
        self.job = None
        ann = job.announcement
        if job.error is not None or job.result is None:
            if job.error is not None:
                self.report(FAILED, ann.version, f"download: {job.error}", ring=ann.ring)
            return
        staged = None
        try:
            staged = stage(self.slots, job.dest, f"v{ann.version}", self.trusted)
            self.report(VERIFIED, ann.version, ring=ann.ring, figures={"bytes": job.result.fetched,
                                                                        "resumed_from": job.result.resumed_from,
                                                                        "download_s": job.result.seconds})
            self._switch(ann, staged)
        except InstallError as e:
            if e.refuse:
                self.state.refused[str(ann.version)] = str(e)
            self.report(FAILED, ann.version, str(e), ring=ann.ring)
        except Exception as e:  # noqa: BLE001 - a full disk, a failed rename: never stuck in "downloading"
            # Not the bundle's fault (not refused: a retained announcement tries again later); the
            # device stays on the bundle it runs.
            log.exception("v%d: the install failed", ann.version)
            if staged is not None:
                shutil.rmtree(staged.folder, ignore_errors=True)
            self.report(FAILED, ann.version, f"install: {type(e).__name__}: {e}", ring=ann.ring)
        finally:
            job.dest.unlink(missing_ok=True)   # installed, refused or failed: give the space back

    def _switch(self, ann: Announcement, staged) -> None:
        st = self.state
        slot = self.slots.free_slot(st)
        inner = staged.root.relative_to(staged.folder)
        if st.previous is not None and st.previous.slot == slot:
            st.previous = None   # its slot is about to be replaced: never roll back into it, even if this fails
        dest = self.slots.fill_slot(slot, staged.folder)
        root = os.path.relpath(dest / inner, self.slots.root)
        new = InstalledBundle(ann.bundle_id, ann.version, ann.sha256, staged.manifest_sha, slot, root, ann.ring,
                              utc_now())
        # The state file says installed before the pointer moves (a restart re-points); this agent's
        # state (read by other threads) changes once the pointer has moved. Should either fail, the
        # FAILED report writes the state of the bundle still in use again.
        after = dataclasses.replace(st, probation_since=utc_now(), state=INSTALLED, version=ann.version, reason="",
                                    ring=ann.ring, announce_seq=max(st.announce_seq, ann.seq))
        self.slots.switch(after, new)
        self.state = after
        self.report(INSTALLED, ann.version, ring=ann.ring)

    # ------------------------------------------------------------------------------ probation
    def _evidence(self, elapsed: float) -> Optional[Evidence]:
        if self.tail is None:
            return None
        self.tally.add_all(self.tail.read_new())
        st = self.state
        new_sha = st.installed.manifest_sha
        old = self.tally.of(st.previous.manifest_sha) if st.previous is not None else None
        failed_check = self.tally.selfcheck_failed.get(new_sha, "")
        return Evidence(not failed_check, failed_check, self.tally.crashes.get(new_sha, 0),
                        self.tally.of(new_sha), old, elapsed)

    def _check_probation(self) -> None:
        st = self.state
        if st.state != INSTALLED or not st.probation_since or st.installed is None:
            return
        since = _dt.datetime.fromisoformat(st.probation_since)
        elapsed = (_dt.datetime.now(_dt.timezone.utc) - since).total_seconds()
        ev = self._evidence(elapsed)
        if ev is None:   # no field log to judge by: the time alone
            if elapsed >= self.config.probation.duration_s:
                st.probation_since = ""
                self.report(PROBATION_PASSED, st.installed.version, "no field log configured: time only")
            return
        verdict = judge(ev, self.config.probation)
        if verdict.decision == PASS:
            st.probation_since = ""
            self.report(PROBATION_PASSED, st.installed.version, figures=verdict.figures)
        elif verdict.decision == ROLLBACK:
            self._roll_back(verdict.reason, verdict.figures)

    def _roll_back(self, reason: str, figures: Dict[str, Any]) -> None:
        st = self.state
        bad = st.installed
        st.refused[str(bad.version)] = reason
        st.probation_since = ""
        if st.previous is None:
            self.report(FAILED, bad.version, f"{reason}; no previous bundle to return to, stays on it",
                        figures=figures)
            return
        after = dataclasses.replace(st, state=ROLLED_BACK, version=bad.version, reason=reason)
        self.slots.roll_back(after)
        self.state = after
        self.report(ROLLED_BACK, bad.version, reason, figures=figures, ring=bad.ring)


def run_agent(config: AgentConfig, stop: threading.Event) -> RolloutAgent:
    """Load the trusted keys, connect, and run until ``stop``; returns the agent (closed)."""
    from ..bundle.signature import TrustedKeys as _Keys

    agent = RolloutAgent(config, _Keys.load(config.trusted_keys))
    agent.connect()
    try:
        agent.run(stop)
    finally:
        agent.close()
    return agent


__all__ = ["Job", "RolloutAgent", "run_agent"]
