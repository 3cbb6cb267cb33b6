"""Recorded handshake initiations are never fresh again (issue 10 item 7).

(a) the last accepted initiation timestamp per peer is in the store, claimed
    with compare-and-swap before anything changes: a restart (or another
    gateway) does not forget it, and a store that cannot answer refuses;
(b) an initiation not newer than the peer's live session is refused;
(c) a new session is unconfirmed until the initiator's first authenticated
    message arrives from its address: the old session, its binding and the
    downstream stay untouched, and the new address gets the handshake
    response only."""

from __future__ import annotations

import ipaddress
import threading

import pytest

from jvpn import keys
from jvpn.codes import Reason
from jvpn.config import UNCONFIRMED_TTL_MS
from jvpn.events import EventLog
from jvpn.gate import abi
from jvpn.gate.userspace import UserspaceGate
from jvpn.gateway.admission import Admission
from jvpn.gateway.control import ControlPath
from jvpn.gateway.datapath import DataPath
from jvpn.gateway.follower import NullFollower
from jvpn.gateway.ownership import LocalOwnership
from jvpn.gateway.reattach import ReattachServer
from jvpn.gateway.supervise import Incidents
from jvpn.gateway.table import SessionTable
from jvpn.handshake import Initiator
from jvpn.policy import default_policy
from jvpn.session import State, Transport
from jvpn.store import StoreError
from jvpn.store.sqlite import SqliteStore
from jvpn.tunnel import DataChannel
from kits.daemon_kit import Clock

GW, CL = keys.generate_private(), keys.generate_private()
GW_PUB, CL_PUB = keys.public_from_private(GW), keys.public_from_private(CL)
INNER = ipaddress.IPv4Address("10.99.0.2")
ADDRESS = ipaddress.IPv4Interface("10.99.0.1/24")
CLIENT = ("192.0.2.10", 5555)
ATTACKER = ("198.51.100.66", 4444)



class Initiations:
    """The client's initiations, each with a strictly newer timestamp."""

    def __init__(self):
        self.ns = 1_700_000_000_000_000_000

    def next(self) -> tuple[Initiator, bytes]:
        self.ns += 1_000_000
        init = Initiator(CL, GW_PUB, clock_ns=lambda: self.ns)
        return init, init.initiation()


class Sock:
    """The data path's socket: what it sends joins the gateway's list."""

    def __init__(self, sent: list):
        self.sent = sent

    def sendto(self, msg: bytes, *args) -> int:
        """``sendto(msg, dst)`` or ``sendto(msg, flags, dst)``, as a socket's."""
        self.sent.append((msg, Transport(*args[-1])))
        return len(msg)

    def send_buffer_use(self) -> tuple[int, int]:
        return 0, 212_992


class Gateway:
    """A gateway's control and data path in process, over one SQLite file
    (a second Gateway on the same file is the same gateway after a restart)."""

    def __init__(self, path, clock: Clock, store=None):
        self.clock, self.sent = clock, []
        self.store = store or SqliteStore(path)
        self.gate = UserspaceGate()
        self.events = EventLog("gw-test", clock_ms=clock)
        self.ownership = LocalOwnership("gw-test")
        send = lambda msg, to: self.sent.append((msg, to))  # noqa: E731
        self.table = SessionTable(store=self.store, gate=self.gate, events=self.events,
                                  ownership=self.ownership, clock_ms=clock, send=send)
        self.table.timer_ms = clock  # attempts made here age by it too (indexes.py)
        ids = iter(range(0x11, 0x1000, 0x11))
        lock = threading.RLock()
        self.control = ControlPath(
            table=self.table, admission=Admission(GW, {CL_PUB: INNER}, ADDRESS, 50),
            reattach=ReattachServer(self.store, default_policy(), clock_ms=clock),
            follower=NullFollower(store=self.store, table=self.table, gate=self.gate,
                                  ownership=self.ownership, events=self.events, lock=lock,
                                  retry=lambda m, s: None, clock_ms=clock),
            events=self.events, send=send, clock_ms=clock, randbits=lambda _b: next(ids))
        self.data = DataPath(sock=Sock(self.sent), tun=None, gate=self.gate, table=self.table,
                             events=self.events, lock=lock, stop=threading.Event(),
                             clock_ms=clock, on_handshake=self.control.handshake,
                             on_control=lambda m, s: None, on_confirm=self.control.confirm,
                             incidents=Incidents(self.events, clock))

    def restore(self) -> None:
        """What reconcile does on start: every stored session served again."""
        for rec in self.store.list():
            _rec, raw = self.store.get(rec.session_id)
            self.table.install(rec, keys.SessionKeys.unpack(raw),
                               ipaddress.IPv4Address(rec.inner_addr).packed)

    def receive(self, msg: bytes, src) -> None:
        """One datagram as the UDP loop handles it."""
        if self.gate.admit(msg, src):
            self.data.dispatch(msg, src)

    def handshake(self, init: Initiator, msg: bytes, src=CLIENT) -> DataChannel:
        """A complete handshake: initiation, response, first keepalive."""
        self.sent.clear()
        self.receive(msg, src)
        [resp] = [m for m, _to in self.sent if m[0] == abi.MSG_HANDSHAKE_RESP]
        _assignment, session_keys = init.response(resp)
        channel = DataChannel(session_keys, "client")
        self.receive(channel.seal(b"", abi.MSG_KEEPALIVE), src)
        return channel

    def rejections(self) -> list[str]:
        return [e["reason_code"] for e in self.events.recent
                if e["event_type"] == "HandshakeRejected"]

    def routed(self):
        return self.table.for_inner(INNER.packed)


@pytest.fixture
def clock():
    return Clock()


def test_a_recorded_initiation_is_refused_after_a_restart(tmp_path, clock):
    inits = Initiations()
    gw = Gateway(tmp_path / "s.db", clock)
    init, recorded = inits.next()
    gw.handshake(init, recorded)
    [live] = gw.table.sessions.values()
    sid = live.record.session_id
    gw.store.close()

    restarted = Gateway(tmp_path / "s.db", clock)  # memory gone, store kept
    restarted.restore()
    restarted.sent.clear()
    restarted.receive(recorded, ATTACKER)
    assert [r.session_id for r in restarted.store.list()] == [sid]
    assert restarted.routed().record.session_id == sid
    assert restarted.routed().record.binding == Transport(*CLIENT)
    assert restarted.sent == [] and restarted.rejections() == [Reason.REPLAY_DETECTED]
    restarted.store.close()


def test_a_store_that_cannot_answer_refuses_the_initiation(tmp_path, clock):
    class Down(SqliteStore):
        def claim_initiation(self, peer: bytes, timestamp_ns: int) -> bool:
            raise StoreError("etcd at 127.0.0.1:2379 failed: unreachable")

    gw = Gateway(None, clock, store=Down(tmp_path / "s.db"))
    _init, msg = Initiations().next()
    gw.receive(msg, CLIENT)
    assert gw.table.sessions == {} and gw.store.list() == [] and gw.sent == []
    assert gw.rejections() == [Reason.HANDSHAKE_FAIL]
    gw.store.close()


def test_an_initiation_older_than_the_live_session_is_refused(tmp_path, clock):
    """Even where the stored timestamp is missing (a store from before
    timestamps were kept): the live session remembers its initiation's."""
    inits = Initiations()
    _old, older = inits.next()
    init, newer = inits.next()
    gw = Gateway(tmp_path / "s.db", clock)
    gw.handshake(init, newer)
    live = gw.routed()
    gw.store.close()
    restarted = Gateway(tmp_path / "s.db", clock)
    restarted.restore()
    restarted.store._db.execute("DELETE FROM initiations")  # the stored timestamp lost
    restarted.sent.clear()
    restarted.receive(older, ATTACKER)
    assert restarted.sent == [] and restarted.rejections() == [Reason.REPLAY_DETECTED]
    assert [r.session_id for r in restarted.store.list()] == [live.record.session_id]
    restarted.store.close()


def test_a_fresh_initiation_from_another_address_changes_nothing_until_proven(tmp_path, clock):
    """An on-path attacker withholds the client's new initiation and hands
    it to the gateway from its own address: the live session and its
    binding stay, downstream still goes to the client, the attacker's
    address gets the handshake response and nothing else, and the
    unconfirmed session ends quietly."""
    inits = Initiations()
    gw = Gateway(tmp_path / "s.db", clock)
    gw.handshake(*inits.next())
    live = gw.routed()
    before = live.record
    gw.sent.clear()
    _init, intercepted = inits.next()
    gw.receive(intercepted, ATTACKER)
    assert gw.routed() is live and live.record == before
    assert gw.store.get(before.session_id)[0] == before
    assert gw.gate.model.sessions[before.session_id].state == abi.STATE_ATTACHED
    to_attacker = [m for m, to in gw.sent if to == Transport(*ATTACKER)]
    assert [m[0] for m in to_attacker] == [abi.MSG_HANDSHAKE_RESP]
    assert len(to_attacker[0]) <= len(intercepted)
    clock.ms += UNCONFIRMED_TTL_MS + 1
    gw.sent.clear()
    gw.control.expire_unconfirmed()
    assert set(gw.table.sessions) == {before.session_id} and gw.sent == []
    assert [r.session_id for r in gw.store.list()] == [before.session_id]
    gw.store.close()


def test_the_initiators_first_message_confirms_and_replaces_the_old_session(tmp_path, clock):
    inits = Initiations()
    gw = Gateway(tmp_path / "s.db", clock)
    gw.handshake(*inits.next())
    old = gw.routed()
    new_addr = ("192.0.2.10", 6000)
    gw.handshake(*inits.next(), src=new_addr)
    new = gw.routed()
    assert new is not old and new.record.binding == Transport(*new_addr)
    assert new.record.state is State.ATTACHED and old.record.state is State.TERMINATED
    assert [r.session_id for r in gw.store.list()] == [new.record.session_id]
    gw.store.close()


def test_the_timestamp_claim_is_compare_and_swap(tmp_path):
    store = SqliteStore(tmp_path / "s.db")
    assert store.last_initiation(CL_PUB) == 0
    assert store.claim_initiation(CL_PUB, 10) is True
    assert store.claim_initiation(CL_PUB, 10) is False  # the same initiation twice
    assert store.claim_initiation(CL_PUB, 9) is False
    assert store.claim_initiation(CL_PUB, 11) is True and store.last_initiation(CL_PUB) == 11
    store.close()
