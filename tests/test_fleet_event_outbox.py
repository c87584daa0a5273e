"""The rollout agent's events outbox: append-only, a line torn by a crash never swallows the next
event, the agent numbers on from the last event written, and a rewind never moves forward."""

from __future__ import annotations

from clca_edge.fleet.event_outbox import EVENTS_LOG, EventOutbox
from clca_edge.fleet.messages import Event


def _event(seq: int) -> Event:
    return Event(device="d1", seq=seq, state="installed", version="1")


def test_a_torn_line_is_skipped_and_the_next_event_kept(tmp_path):
    box = EventOutbox(tmp_path)
    box.append(_event(1))
    with open(box.path, "ab") as f:
        f.write(b'{"v":1,"kind":"events","device":"d1","se')     # power cut mid-write
    box.append(_event(2))
    assert box.last_seq() == 2                                     # the torn line is no event
    sent = []
    while (item := box.next()) is not None:
        batch, event = item
        if event is not None:
            sent.append(event.seq)
        box.commit(batch)
    assert sent == [1, 2] and box.pending() == 0
    assert EventOutbox(tmp_path).next() is None                    # the cursor persisted


def test_rewind_goes_back_to_an_events_line_never_forward(tmp_path):
    box = EventOutbox(tmp_path)
    for seq in (1, 2, 3):
        box.append(_event(seq))
    batch, _ = box.next()
    box.commit(batch)                                              # 1 acknowledged
    assert not box.rewind(2)                                       # 2 is still pending: nothing to do
    while (item := box.next()) is not None:
        box.commit(item[0])
    assert box.rewind(2) and [box.next()[1].seq] == [2]
    assert EVENTS_LOG == "events"
