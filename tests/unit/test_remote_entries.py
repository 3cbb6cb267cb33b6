"""Sessions another gateway owns are remote entries (issue 15, docs/cluster.md
"Remote sessions"): the gate's compact jvpn_remote map, not a sessions-map
element with a runtime slot. Written from the watch and the sweep, removed
when the record goes, replaced by our own element when a handoff makes the
session ours (written first, the entry removed after), and left by the old
owner's parked element once the handover is recorded."""

from __future__ import annotations

import ipaddress
import threading

import pytest

from jvpn import wire
from jvpn.events import EventLog
from jvpn.gate import abi
from jvpn.gate.element import RuntimeSlots
from jvpn.gate.userspace import UserspaceGate
from jvpn.gateway.follower import ClusterFollower
from jvpn.gateway.ownership import ClusterOwnership
from jvpn.gateway.table import SessionTable
from jvpn.keys import derive_session_keys
from jvpn.session import Event, State, Transport, apply, new_session
from jvpn.store.sqlite import SqliteStore

SID = 0x0A0B0C0D0E0F1011
INNER = ipaddress.IPv4Address("10.99.0.2")
CLIENT = Transport("192.0.2.10", 5555)
LEASE_A, LEASE_B = 101, 202


def _keys(sid: int):
    return derive_session_keys(sid, b"\1" * 32, b"\2" * 32, b"\3" * 32)


class ClusterSqlite(SqliteStore):
    """SQLite plus what the cluster follower asks: two live gateways."""

    lease_id, lease_ttl_s = LEASE_A, 2

    def gateway_lease(self, node_id: str):
        return {"gw-a": LEASE_A, "gw-b": LEASE_B}.get(node_id)

    def lease_valid(self, margin_s: float = 0.0) -> bool:
        return True

    def cas(self, session_id, expected_version, new, alive=None, secrets=None) -> None:
        super().cas(session_id, expected_version, new, secrets=secrets)


class Rig:
    """Gateway gw-a's table and follower on a userspace gate whose sessions
    map (its runtime slots) holds ``slots`` sessions."""

    def __init__(self, tmp_path, slots: int = 65536):
        self.store = ClusterSqlite(tmp_path / "s.db")
        self.gate = UserspaceGate()
        self.gate.slots = RuntimeSlots(slots)
        events = EventLog("gw-a")
        self.ownership = ClusterOwnership(self.store, "gw-a")
        self.table = SessionTable(store=self.store, gate=self.gate, events=events,
                                  ownership=self.ownership, clock_ms=lambda: 1_000,
                                  send=lambda m, t: None)
        self.follower = ClusterFollower(store=self.store, table=self.table, gate=self.gate,
                                        ownership=self.ownership, events=events,
                                        lock=threading.RLock(), retry=lambda m, s: None,
                                        clock_ms=lambda: 1_000)

    def record(self, sid: int, owner: str):
        rec, _tr = apply(new_session(sid, 1_000, owner=owner), Event.ATTACH_OK, 1_000,
                         binding=CLIENT)
        lease = LEASE_A if owner == "gw-a" else LEASE_B
        return rec.with_(owner_lease=lease, inner_addr=str(INNER))

    def stored(self, sid: int, owner: str = "gw-b"):
        rec = self.record(sid, owner)
        self.store.create(rec, _keys(sid).pack())
        return self.store.get(sid)[0]

    def passes(self, sid: int, t: int, counter: int = 5) -> bool:
        msg = wire.message(wire.Header(type=t, session_id=sid, counter=counter),
                           _keys(sid).hdr_c2s, b"p" * 48)
        return self.gate.admit(msg, ("198.51.100.7", 4000))


@pytest.fixture
def rig(tmp_path):
    r = Rig(tmp_path)
    yield r
    r.store.close()


def test_a_session_another_gateway_owns_is_a_remote_entry_not_an_element(rig):
    rec = rig.stored(SID)
    rig.follower.on_store_record(SID, rec)
    assert rig.gate.remote_ids() == {SID} and rig.gate.ids() == set()
    assert rig.table.remote_owners() == {SID: "gw-b"}
    assert tuple(rig.gate.model.remote[SID].tag_key) == wire.key_words(_keys(SID).hdr_c2s)
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
        r.table.create(own, _keys(100), INNER.packed,
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
    rig.table.create(rec, _keys(SID), INNER.packed, tr)
    asked = rig.store.get(SID)[0]
    asked = asked.with_(version=asked.version + 1, handoff_to="gw-b", handoff_lease=LEASE_B)
    rig.store.cas(SID, asked.version - 1, asked)
    rig.follower.on_store_record(SID, asked)
    assert rig.store.get(SID)[0].owner == "gw-b"
    assert rig.gate.ids() == set() and rig.gate.remote_ids() == {SID}
    assert rig.table.remote_owners() == {SID: "gw-b"}


def test_a_session_made_here_while_the_sweep_reads_the_store_stays(rig):
    """The CI failure of test_cluster_scale_lab: a handshake committed while
    the sweep's list of 1,500 records was read was then dropped as deleted
    (OWNERSHIP_LOST, owner "") and its client orphaned."""
    listed = rig.store.list

    def list_then_a_handshake_commits():
        before = listed()
        own = rig.record(100, "gw-a")
        rig.table.create(own, _keys(100), INNER.packed,
                         apply(new_session(100, 1_000), Event.ATTACH_OK, 1_000,
                               binding=CLIENT)[1])
        return before

    rig.store.list = list_then_a_handshake_commits
    rig.follower.sweep_if_due()
    assert 100 in rig.table and rig.gate.ids() == {100}
    rig.store.list = listed
    rig.follower._next_sweep = 0  # the next sweep sees its record: it stays
    rig.follower.sweep_if_due()
    assert 100 in rig.table
