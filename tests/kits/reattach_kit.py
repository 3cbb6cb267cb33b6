"""The reattach harness: the validator and the control path that carries out
its decisions, over a session table with one session (a single gateway,
the userspace gate), with an injected clock."""

from __future__ import annotations

import ipaddress
import itertools
import os
import threading

from jvpn import wire
from jvpn.events import EventLog
from jvpn.gate import abi
from jvpn.gate.userspace import UserspaceGate
from jvpn.gateway.control import ControlPath
from jvpn.gateway.follower import NullFollower
from jvpn.gateway.ownership import LocalOwnership
from jvpn.gateway.reattach import ReattachServer
from jvpn.gateway.table import SessionTable
from jvpn.keys import derive_session_keys
from jvpn.policy import default_policy
from jvpn.session import Event, Transport, apply, new_session
from jvpn.store.sqlite import SqliteStore

SID = 0xA1B2C3D4E5F60718
OLD, NEW, NAT, EVIL = (Transport("192.0.2.10", 5555), Transport("198.51.100.7", 6000),
                       Transport("192.0.2.10", 40001), Transport("203.0.113.66", 6666))
KEYS = derive_session_keys(SID, b"\1" * 32, b"\2" * 32, b"\3" * 32)


class Clock:
    def __init__(self):
        self.ms = 1_700_000_000_000

    def __call__(self):
        return self.ms


class RecordingGate(UserspaceGate):
    """The userspace gate, remembering every record projected into it."""

    def __init__(self):
        super().__init__()
        self.projected = []

    def put(self, rec, keys, fence=0, first=False, c2s_floor=0, was_remote=False):
        self.projected.append(rec)
        super().put(rec, keys, fence, first, c2s_floor, was_remote)


class Harness:
    """The validator and the control path that carries out its decisions,
    over a session table with one session (a single gateway)."""

    def __init__(self, tmp_path, store=None, **policy):
        self.clock = Clock()
        self.store = store or SqliteStore(tmp_path / "s.db")
        self.events = EventLog("gw-test", clock_ms=self.clock)
        self.gate = RecordingGate()
        self.sent = []
        self.c2s = itertools.count(100)
        self.seq = itertools.count(1)
        pol = default_policy()
        self.policy = pol.__class__(**{**pol.as_dict(), **policy})
        send = lambda msg, to: self.sent.append((msg, to))  # noqa: E731
        ownership = LocalOwnership("gw-test")
        self.table = SessionTable(store=self.store, gate=self.gate, events=self.events,
                                  ownership=ownership, clock_ms=self.clock, send=send)
        self.table.timer_ms = self.clock  # one clock: last_rx_ms is the timer clock's
        self.server = ReattachServer(self.store, self.policy, clock_ms=self.clock,
                                     rand=lambda n: os.urandom(n))
        follower = NullFollower(store=self.store, table=self.table, gate=self.gate,
                                ownership=ownership, events=self.events, lock=threading.RLock(),
                                retry=lambda msg, src: None, clock_ms=self.clock)
        self.control = ControlPath(table=self.table, admission=None, reattach=self.server,
                                   follower=follower, events=self.events, send=send,
                                   clock_ms=self.clock, randbits=lambda n: 1)
        rec, _ = apply(new_session(SID, self.clock.ms), Event.ATTACH_OK, self.clock.ms,
                       binding=OLD)
        self.store.create(rec, KEYS.pack())
        self.table.install(rec, KEYS, ipaddress.IPv4Address("10.99.0.2").packed)

    @property
    def projected(self):
        return self.gate.projected

    def handle(self, msg: bytes, src: Transport):
        """As the gateway does for one control message: the replies to send."""
        return self.control.reattach_message(msg, src)

    def record(self):
        return self.store.get(SID)[0]

    def request(self, *, seq=None, ts=None, epoch=None, keys=KEYS, sid=SID, nonce=None):
        seq = next(self.seq) if seq is None else seq
        return wire.seal_control(
            wire.Header(type=abi.MSG_REATTACH_REQ, session_id=sid, counter=next(self.c2s)),
            keys.hdr_c2s, keys.reattach, seq, self.clock.ms if ts is None else ts,
            nonce or os.urandom(16), self.record().epoch if epoch is None else epoch)

    def answer(self, challenge: bytes, keys=KEYS) -> bytes:
        hdr, (server_nonce, client_nonce) = wire.open_control(challenge, keys.reattach)
        assert hdr.tag_valid(keys.hdr_s2c)
        return wire.seal_control(
            wire.Header(type=abi.MSG_PATH_RESPONSE, session_id=SID, counter=next(self.c2s)),
            keys.hdr_c2s, keys.reattach, server_nonce, client_nonce)

    def reattach(self, src: Transport):
        [(challenge, to)] = self.handle(self.request(), src)
        assert to == src
        return self.handle(self.answer(challenge), src)

    def reasons(self):
        return [e["reason_code"] for e in self.events.recent if e["event_type"] == "ReattachResult"]
