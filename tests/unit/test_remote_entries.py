"""Sessions another gateway owns are remote entries (issue 15, docs/cluster.md
"Remote sessions"): the gate's compact jvpn_remote map, not a sessions-map
element with a runtime slot. Written from the watch and the sweep, removed
when the record goes, replaced by our own element when a handoff makes the
session ours (written first, the entry removed after), and left by the old
owner's parked element once the handover is recorded."""

from __future__ import annotations

import pytest

from jvpn import wire
from jvpn.gate import abi
from jvpn.session import Event, State, apply, new_session
from kits.follower_kit import CLIENT, INNER, LEASE_A, LEASE_B, SID, Rig, keys_of, rig_in

rig = pytest.fixture(rig_in)


def test_a_session_another_gateway_owns_is_a_remote_entry_not_an_element(rig):
    rec = rig.stored(SID)
    rig.follower.on_store_record(SID, rec)
    assert rig.gate.remote_ids() == {SID} and rig.gate.ids() == set()
    assert rig.table.remote_owners() == {SID: "gw-b"}
    assert tuple(rig.gate.model.remote[SID].tag_key) == wire.key_words(keys_of(SID).hdr_c2s)
    assert rig.passes(SID, abi.MSG_REATTACH_REQ)
    assert not rig.passes(SID, abi.MSG_DATA, 6)


def test_the_sweep_writes_remote_entries_and_removes_those_whose_record_went(rig):
    for sid in (1, 2, 3):
        rig.stored(sid)
    rig.follower.sweep_if_due()
    assert rig.gate.remote_ids() == {1, 2, 3}
    rig.store.delete(2)
    rig.follower._next_sweep = 0  # the next sweep is due
    rig.follower.sweep_if_due()
    assert rig.gate.remote_ids() == {1, 3} and set(rig.table.standby) == {1, 3}


def test_a_terminated_record_removes_the_remote_entry(rig):
    rec = rig.stored(SID)
    rig.follower.on_store_record(SID, rec)
    assert rig.gate.remote_ids() == {SID}
    ended = rec.with_(state=State.TERMINATED, version=rec.version + 1)
    rig.follower.on_store_record(SID, ended)
    assert rig.gate.remote_ids() == set() and SID not in rig.table.standby


def test_more_remote_sessions_than_the_sessions_map_holds(tmp_path):
    """The cap this removes: four runtime slots, ten sessions of another
    gateway, all stood by; our own sessions still get their slots."""
    r = Rig(tmp_path, slots=4)
    try:
        for sid in range(1, 11):
            r.follower.on_store_record(sid, r.stored(sid))
        assert r.gate.remote_ids() == set(range(1, 11)) and r.gate.ids() == set()
        own = r.record(100, "gw-a")
        r.table.create(own, keys_of(100), INNER.packed,
                       apply(new_session(100, 1_000), Event.ATTACH_OK, 1_000,
                             binding=CLIENT)[1])
        assert r.gate.ids() == {100}
    finally:
        r.store.close()


def test_a_handoff_to_us_keeps_the_remote_entry_until_our_element_is_written(rig):
    """The new owner: adopted (no element yet), the remote entry still lets
    the client's PATH_RESPONSE through; our element is written, then the
    entry goes (the element wins in the gate in between)."""
    rec = rig.stored(SID)
    rig.follower.on_store_record(SID, rec)
    ours = rec.with_(owner="gw-a", owner_lease=LEASE_A, version=rec.version + 1)
    rig.store.cas(SID, rec.version, ours)
    live = rig.table.adopt(ours, rig.table.standby[SID][0])
    assert rig.gate.remote_ids() == {SID} and rig.gate.ids() == set()
    assert rig.passes(SID, abi.MSG_PATH_RESPONSE)
    rig.table.serve_again(live, ours)  # REATTACH_VALID: our element
    assert rig.gate.ids() == {SID} and rig.gate.remote_ids() == set()
    assert SID not in rig.table.standby


def test_the_old_owner_parks_its_element_then_leaves_a_remote_entry(rig):
    """The owner's half: its element becomes a standby (no data), the record
    moves, then the element goes and a remote entry stays: no element per
    session handed over is kept."""
    rec, tr = apply(new_session(SID, 1_000, owner="gw-a"), Event.ATTACH_OK, 1_000,
                    binding=CLIENT)
    rec = rec.with_(owner_lease=LEASE_A, inner_addr=str(INNER))
    rig.table.create(rec, keys_of(SID), INNER.packed, tr)
    asked = rig.store.get(SID)[0]
    asked = asked.with_(version=asked.version + 1, handoff_to="gw-b", handoff_lease=LEASE_B)
    rig.store.cas(SID, asked.version - 1, asked)
    rig.follower.on_store_record(SID, asked)
    assert rig.store.get(SID)[0].owner == "gw-b"
    assert rig.gate.ids() == set() and rig.gate.remote_ids() == {SID}
    assert rig.table.remote_owners() == {SID: "gw-b"}

