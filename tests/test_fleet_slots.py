"""A/B bundle slots: the pointer switches atomically, the previous bundle stays as the fallback,
and the device state survives a restart."""

from __future__ import annotations

import os

from clca_edge.fleet.slots import INSTALLED, DeviceState, InstalledBundle, Slots


def _stage(slots: Slots, text: str):
    d = slots.new_staging_dir("t-")
    (d / "leafnet").mkdir()
    (d / "leafnet" / "manifest.json").write_text(text)
    return d


def _install(slots: Slots, state: DeviceState, version: int) -> InstalledBundle:
    slot = slots.free_slot(state)
    dest = slots.fill_slot(slot, _stage(slots, f"v{version}"))
    new = InstalledBundle("leafnet", version, "0" * 64, f"m{version}", slot,
                          os.path.relpath(dest / "leafnet", slots.root), ring="canary")
    state.state = INSTALLED
    slots.switch(state, new)
    return new


def test_ab_switch_keeps_the_previous_and_rolls_back(tmp_path):
    slots = Slots(tmp_path / "bundles")
    state = slots.load_state()
    assert state.installed_version == 0 and slots.current() is None
    _install(slots, state, 1)
    assert (slots.current() / "manifest.json").read_text() == "v1"
    _install(slots, state, 2)
    assert (slots.current() / "manifest.json").read_text() == "v2"
    assert state.previous.version == 1 and state.installed.slot != state.previous.slot
    _install(slots, state, 3)   # replaces v1's slot; v2 is now the fallback
    assert (slots.current() / "manifest.json").read_text() == "v3"
    assert (slots.resolve(state.previous) / "manifest.json").read_text() == "v2"
    state.refused["3"] = "probation: refused frames"
    bad = slots.roll_back(state)
    assert bad.version == 3 and state.installed.version == 2 and state.previous is None
    assert (slots.current() / "manifest.json").read_text() == "v2"
    # A restart reads the same state; a pointer left behind by a power cut is re-pointed.
    again = Slots(tmp_path / "bundles").load_state()
    assert again.installed == state.installed and again.is_refused(3) and not again.is_refused(2)
    slots.point_to(InstalledBundle("leafnet", 3, "0" * 64, "m3", "x", bad.root))
    slots.ensure_pointer(again)
    assert (slots.current() / "manifest.json").read_text() == "v2"
    assert not list(slots.staging.iterdir())   # no leftovers
