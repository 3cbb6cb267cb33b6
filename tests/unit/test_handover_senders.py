"""A handover never overlaps a sender (issue 10 item 9, handover part): a
TUN thread that passed the unlocked ``installed`` check may still be inside a
send-counter floor write when the owner hands the session over. The release
waits for it (DataChannel.retire), so the next owner's first counter, read
from the store after the handover record, is above every counter the old
channel handed out, and the old channel hands out no more."""

from __future__ import annotations

import ipaddress
import threading

import pytest

from jvpn.events import EventLog
from jvpn.gate.userspace import UserspaceGate
from jvpn.gateway.follower import ClusterFollower
from jvpn.gateway.ownership import ClusterOwnership
from jvpn.gateway.table import SessionTable
from jvpn.keys import derive_session_keys
from jvpn.session import Event, Transport, apply, new_session
from jvpn.store.sqlite import SqliteStore
from jvpn.tunnel import CounterUnavailable

SID = 0x0A0B0C0D0E0F1011
KEYS = derive_session_keys(SID, b"\1" * 32, b"\2" * 32, b"\3" * 32)
INNER = ipaddress.IPv4Address("10.99.0.2")
LEASE_A, LEASE_B = 101, 202


class BlockingClusterStore(SqliteStore):
    """SQLite, plus what the cluster follower needs; ``set_floor`` can be
    held inside its write, and each ownership write records the send floor
    the next owner would read at that moment."""

    lease_id, lease_ttl_s = LEASE_A, 2

    def __init__(self, path):
        super().__init__(path)
        self.hold = threading.Event()
        self.inside = threading.Event()
        self.floor_at_handover: int | None = None

    def set_floor(self, session_id: int, floor: int) -> None:
        if self.hold.is_set():
            self.inside.set()
            assert self.release.wait(5)
        super().set_floor(session_id, floor)

    def cas(self, session_id, expected_version, new, alive=None, secrets=None) -> None:
        super().cas(session_id, expected_version, new, secrets=secrets)
        if new.owner == "gw-b" and self.floor_at_handover is None:
            self.floor_at_handover = self.get_floor(session_id)  # the adopter's first counter

    def gateway_lease(self, node_id: str):
        return {"gw-a": LEASE_A, "gw-b": LEASE_B}.get(node_id)

    def lease_valid(self, margin_s: float = 0.0) -> bool:
        return True


@pytest.fixture
def rig(tmp_path):
    store = BlockingClusterStore(tmp_path / "s.db")
    store.release = threading.Event()
    events = EventLog("gw-a")
    ownership = ClusterOwnership(store, "gw-a")
    table = SessionTable(store=store, gate=UserspaceGate(), events=events, ownership=ownership,
                         clock_ms=lambda: 1_000, send=lambda m, t: None)
    follower = ClusterFollower(store=store, table=table, gate=table.gate, ownership=ownership,
                               events=events, lock=threading.RLock(), retry=lambda m, s: None,
                               clock_ms=lambda: 1_000)
    rec, tr = apply(new_session(SID, 1_000, owner="gw-a"), Event.ATTACH_OK, 1_000,
                    binding=Transport("192.0.2.10", 5555))
    rec = rec.with_(owner_lease=LEASE_A, inner_addr=str(INNER))
    live = table.create(rec, KEYS, INNER.packed, tr)
    yield store, table, follower, live
    store.release.set()
    store.close()


def test_handover_waits_for_a_sender_inside_a_floor_write(rig):
    store, _table, follower, live = rig
    used: list[int] = []
    store.hold.set()
    sender = threading.Thread(target=lambda: used.append(live.channel.next_counter()))
    sender.start()  # a TUN thread: it passed `installed`, now inside the floor write
    assert store.inside.wait(5)
    asked = store.get(SID)[0]
    asked = asked.with_(version=asked.version + 1, handoff_to="gw-b", handoff_lease=LEASE_B)
    store.cas(SID, asked.version - 1, asked)
    release = threading.Thread(target=follower.on_store_record, args=(SID, asked))
    release.start()
    release.join(0.3)  # the old code hands over now, under the writer's feet
    store.release.set()
    sender.join(5)
    release.join(5)
    assert store.get(SID)[0].owner == "gw-b"
    assert used and store.floor_at_handover is not None
    assert max(store.floor_at_handover, 1) > max(used)
    with pytest.raises(CounterUnavailable):
        live.channel.next_counter()


def test_fence_retires_senders_and_serving_again_resumes_them(rig):
    store, table, _follower, live = rig
    assert live.channel.next_counter() == 1
    table.fence()
    with pytest.raises(CounterUnavailable):
        live.channel.next_counter()
    table.unfence()
    table.serve_again(live, store.get(SID)[0])
    assert live.channel.next_counter() == 2


def test_a_clustered_stop_retires_senders_and_settles_the_replay_ceiling(rig):
    store, _table, follower, live = rig
    assert live.channel.open(b"") is None  # nothing delivered yet
    follower.stop()
    with pytest.raises(CounterUnavailable):
        live.channel.next_counter()
    assert store.get_replay_ceiling(SID) == (0, True)  # exact: no client counter delivered


def test_a_session_awaiting_its_revocation_is_not_handed_over(rig):
    """Review R5: a revoked session whose end the store refused is
    quarantined and retried here; a handoff request must not move it to a
    gateway that may not have reloaded (the retry would stop there)."""
    store, table, follower, _live = rig
    table.quarantine(SID)
    asked = store.get(SID)[0]
    asked = asked.with_(version=asked.version + 1, handoff_to="gw-b", handoff_lease=LEASE_B)
    store.cas(SID, asked.version - 1, asked)
    follower.on_store_record(SID, asked)
    assert store.get(SID)[0].owner == "gw-a" and SID in table.sessions
