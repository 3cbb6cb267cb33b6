"""Gateway gw-a's session table and cluster follower over SQLite standing in
for the cluster's store (two live gateways, gw-a and gw-b), on a userspace
gate: the unit tests of remote entries and of the follower's sweep."""

from __future__ import annotations

import ipaddress
import threading

from jvpn import wire
from jvpn.events import EventLog
from jvpn.gate.element import RuntimeSlots
from jvpn.gate.userspace import UserspaceGate
from jvpn.gateway.follower import ClusterFollower
from jvpn.gateway.ownership import ClusterOwnership
from jvpn.gateway.table import SessionTable
from jvpn.keys import derive_session_keys
from jvpn.session import Event, Transport, apply, new_session
from jvpn.store.sqlite import SqliteStore

SID = 0x0A0B0C0D0E0F1011
INNER = ipaddress.IPv4Address("10.99.0.2")
CLIENT = Transport("192.0.2.10", 5555)
LEASE_A, LEASE_B = 101, 202


def keys_of(sid: int):
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
        self.store.create(rec, keys_of(sid).pack())
        return self.store.get(sid)[0]

    def passes(self, sid: int, t: int, counter: int = 5) -> bool:
        msg = wire.message(wire.Header(type=t, session_id=sid, counter=counter),
                           keys_of(sid).hdr_c2s, b"p" * 48)
        return self.gate.admit(msg, ("198.51.100.7", 4000))


def rig_in(tmp_path):
    """The tests' ``rig`` fixture: a Rig, its store closed after."""
    r = Rig(tmp_path)
    yield r
    r.store.close()
