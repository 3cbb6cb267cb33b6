"""Issue 10 item 5: a header-only copy cannot delete chosen packets.

The 24 tagged header bytes do not cover the body. An attacker who saw a
message sends its header with a garbage body and gets it to the gateway
first. Old code: the gate consumed the counter on the copy, the daemon
refused the body, and the genuine message then died as a replay: a client
could be kept from ever reattaching, and its keepalives dropped until the
session went VOLATILE.

Each test runs the gateway's own pieces in process (the userspace gate, the
data path's UDP loop, the control path, the reattach validator, the session
table over SQLite): the copy is delivered first, then the genuine message,
which must pass the gate and be accepted by the daemon. The daemon keeps its
own replay windows and marks a counter only after the AEAD / HMAC verified,
so the genuine message is still refused when it is replayed.
"""

from __future__ import annotations

import ipaddress
import itertools
import os
import threading

import pytest

from jvpn import wire
from jvpn.events import EventLog
from jvpn.gate import abi
from jvpn.gate.userspace import UserspaceGate
from jvpn.gateway.control import ControlPath
from jvpn.gateway.datapath import DataPath
from jvpn.gateway.follower import NullFollower
from jvpn.gateway.ownership import LocalOwnership
from jvpn.gateway.reattach import ReattachServer
from jvpn.gateway.supervise import Incidents
from jvpn.gateway.table import SessionTable
from jvpn.keys import derive_session_keys
from jvpn.policy import default_policy
from jvpn.session import Event, State, Transport, apply, new_session
from jvpn.store.sqlite import SqliteStore
from jvpn.tunnel import DataChannel
from kits.daemon_kit import Clock, ipv4

SID = 0x5EC0DE0000000005
OLD, NEW, EVIL = (Transport("192.0.2.10", 5555), Transport("198.51.100.7", 6000),
                  Transport("203.0.113.66", 6666))
KEYS = derive_session_keys(SID, b"\1" * 32, b"\2" * 32, b"\3" * 32)


def header_only_copy(msg: bytes) -> bytes:
    """What the attacker can make of a message it saw: the same tagged
    header, any body of the same length."""
    return msg[:abi.HDR_LEN] + bytes(b ^ 0x5A for b in msg[abi.HDR_LEN:])



class FakeSocket:
    """The gateway's UDP socket, for its replies (``sent``)."""

    def __init__(self):
        self.sent = []

    def sendto(self, msg, *args) -> int:
        """``sendto(msg, dst)`` or ``sendto(msg, flags, dst)``, as a socket's."""
        self.sent.append((msg, args[-1]))
        return len(msg)

    def send_buffer_use(self) -> tuple[int, int]:
        return 0, 212_992


class Gateway:
    """One gateway in process: a session ATTACHED at OLD, its client's channel."""

    def __init__(self, tmp_path, gate=None):
        self.clock = Clock()
        self.store = SqliteStore(tmp_path / "s.db")
        self.events = EventLog("gw-test", clock_ms=self.clock)
        self.gate = gate or UserspaceGate(clock_ns=lambda: self.clock.ms * 1_000_000)
        self.sock = FakeSocket()
        send = lambda msg, to: self.sock.sendto(msg, (to.addr, to.port))  # noqa: E731
        ownership = LocalOwnership("gw-test")
        self.table = SessionTable(store=self.store, gate=self.gate, events=self.events,
                                  ownership=ownership, clock_ms=self.clock, send=send)
        self.table.timer_ms = self.clock  # one clock: last_rx_ms is the timer clock's
        self.server = ReattachServer(self.store, default_policy(), clock_ms=self.clock,
                                     rand=os.urandom)
        lock = threading.RLock()
        follower = NullFollower(store=self.store, table=self.table, gate=self.gate,
                                ownership=ownership, events=self.events, lock=lock,
                                retry=lambda msg, src: None, clock_ms=self.clock)
        self.control = ControlPath(table=self.table, admission=None, reattach=self.server,
                                   follower=follower, events=self.events, send=send,
                                   clock_ms=self.clock, randbits=lambda n: 1)
        self.datapath = DataPath(
            sock=self.sock, tun=None, gate=self.gate, table=self.table, events=self.events,
            lock=lock, stop=threading.Event(), clock_ms=self.clock,
            on_handshake=lambda msg, src: None, on_control=self._control,
            on_confirm=self.control.confirm, incidents=Incidents(self.events, self.clock))
        rec, _ = apply(new_session(SID, self.clock.ms), Event.ATTACH_OK, self.clock.ms,
                       binding=OLD)
        self.store.create(rec, KEYS.pack())
        self.live = self.table.install(rec, KEYS, ipaddress.IPv4Address("10.99.0.2").packed)
        self.client = DataChannel(KEYS, "client")
        self.seq = itertools.count(1)

    def _control(self, msg, src):
        for reply, to in self.control.reattach_message(msg, src):
            self.sock.sendto(reply, (to.addr, to.port))

    def receive(self, *datagrams: tuple[bytes, Transport]) -> list:
        """The UDP loop over these datagrams; returns what the gateway sent."""
        self.sock.sent.clear()
        for msg, src in datagrams:  # as the loop hands each one on (DataPath.receive)
            self.datapath.receive(msg, (src.addr, src.port))
        return list(self.sock.sent)

    def record(self):
        return self.store.get(SID)[0]

    def request(self) -> bytes:
        hdr = wire.Header(type=abi.MSG_REATTACH_REQ, session_id=SID,
                          counter=self.client.next_counter())
        return wire.seal_control(hdr, KEYS.hdr_c2s, KEYS.reattach, next(self.seq),
                                 self.clock.ms, os.urandom(16), self.record().epoch)

    def answer(self, challenge: bytes) -> bytes:
        _hdr, (server_nonce, client_nonce) = self.client.open_control(challenge)
        hdr = wire.Header(type=abi.MSG_PATH_RESPONSE, session_id=SID,
                          counter=self.client.next_counter())
        return wire.seal_control(hdr, KEYS.hdr_c2s, KEYS.reattach, server_nonce, client_nonce)

    def close(self):
        self.store.close()


@pytest.fixture
def gw(tmp_path):
    g = Gateway(tmp_path)
    yield g
    g.close()


def _only(sent, msg_type):
    [(msg, dst)] = sent
    assert msg[0] == msg_type, f"sent type {msg[0]}, expected {msg_type}"
    return msg, dst


@pytest.mark.parametrize("copy_from", [NEW, EVIL], ids=["spoofed-source", "attacker-source"])
def test_header_copy_of_a_reattach_request_does_not_block_the_reattach(gw, copy_from):
    req = gw.request()
    assert gw.receive((header_only_copy(req), copy_from)) == []  # refused, nothing sent
    assert gw.record().state is State.ATTACHED
    _challenge, dst = _only(gw.receive((req, NEW)), abi.MSG_PATH_CHALLENGE)
    assert dst == (NEW.addr, NEW.port)
    assert gw.record().state is State.RECOVERING


def test_header_copy_of_a_path_response_does_not_block_the_switch(gw):
    challenge, _ = _only(gw.receive((gw.request(), NEW)), abi.MSG_PATH_CHALLENGE)
    resp = gw.answer(challenge)
    assert gw.receive((header_only_copy(resp), NEW)) == []
    assert gw.record().state is State.RECOVERING
    _only(gw.receive((resp, NEW)), abi.MSG_REATTACH_ACK)
    rec = gw.record()
    assert rec.state is State.ATTACHED and rec.binding == NEW
    assert len(rec.switches_ms) == 1  # one switch: the copy counted toward nothing


def test_header_copy_of_a_keepalive_does_not_block_liveness(gw):
    gw.clock.ms += 1_000
    ka = gw.client.seal(b"", abi.MSG_KEEPALIVE)
    assert gw.receive((header_only_copy(ka), OLD)) == []
    assert gw.live.last_rx_ms == gw.clock.ms - 1_000  # the copy refreshed nothing
    _only(gw.receive((ka, OLD)), abi.MSG_KEEPALIVE)  # answered
    assert gw.live.last_rx_ms == gw.clock.ms


def test_header_copies_of_every_keepalive_keep_the_session_attached(gw):
    """The churn attack: a copy ahead of each keepalive for longer than the
    heartbeat. The session stays ATTACHED; nothing counts toward the churn
    bounds."""
    pol = default_policy()
    for _ in range(3 * pol.heartbeat_volatile_ms // 500):
        gw.clock.ms += 500
        ka = gw.client.seal(b"", abi.MSG_KEEPALIVE)
        gw.receive((header_only_copy(ka), OLD), (ka, OLD))
        assert gw.clock.ms - gw.live.last_rx_ms < pol.heartbeat_volatile_ms
    rec = gw.record()
    assert rec.state is State.ATTACHED and rec.switches_ms == ()


@pytest.mark.parametrize("kernel_gate", [False, True], ids=["userspace-gate", "xdp-gate"])
def test_a_replayed_keepalive_refreshes_nothing(gw, kernel_gate):
    """The gate no longer consumes keepalive counters: the daemon's window
    does, after the AEAD. With XDP (the channel checks no data window) too."""
    if kernel_gate:
        gw.live.channel = DataChannel(KEYS, "gateway", check_replay=False, check_tag=False)
    ka = gw.client.seal(b"", abi.MSG_KEEPALIVE)
    _only(gw.receive((ka, OLD)), abi.MSG_KEEPALIVE)
    gw.clock.ms += 1_000
    assert gw.receive((ka, OLD)) == []  # passes the gate, refused by the daemon's window
    assert gw.live.last_rx_ms == gw.clock.ms - 1_000


def test_a_replayed_control_header_counter_is_refused_after_the_proof(gw):
    """The daemon's control-plane window: a counter marked after a verified
    HMAC is refused again, whatever the body (here a second genuine request
    under the same header counter, which no client sends: only the window
    can tell)."""
    req = gw.request()
    challenge, _ = _only(gw.receive((req, NEW)), abi.MSG_PATH_CHALLENGE)
    _only(gw.receive((gw.answer(challenge), NEW)), abi.MSG_REATTACH_ACK)
    hdr = wire.Header(type=abi.MSG_REATTACH_REQ, session_id=SID,
                      counter=wire.parse_header(req).counter)
    again = wire.seal_control(hdr, KEYS.hdr_c2s, KEYS.reattach, 99, gw.clock.ms,
                              os.urandom(16), gw.record().epoch)
    before = gw.record()
    assert gw.server.check(again, NEW).reject.reason == "REPLAY_DETECTED"
    assert gw.record() == before


# ---- the regression the review found in the first fix: the gate recorded no
# keepalive or control counter, so ONE captured message replayed many times
# passed the gate every time and spent the session's buckets (a genuine DATA,
# or the client's genuine reattach retries, then died as drop_rate_session).
# The daemon now raises the element's control floor once it verified a
# keepalive or acted on a control message; copies and replays at or below it
# die in the gate as drop_replay, before any bucket (docs/xdp.md).
class FakeTun:
    def __init__(self):
        self.written = []

    def write(self, pkt):
        self.written.append(pkt)


def _gate_count(gw, reason: int) -> int:
    return gw.gate.model.counters[reason][0]


def test_a_keepalive_replayed_from_the_bound_address_spends_no_bucket(gw):
    gw.datapath.tun = FakeTun()
    ka = gw.client.seal(b"", abi.MSG_KEEPALIVE)
    _only(gw.receive((ka, OLD)), abi.MSG_KEEPALIVE)  # verified: answered
    replays_dropped = _gate_count(gw, abi.R_DROP_REPLAY)
    assert gw.receive(*[(ka, OLD)] * 4000) == []
    assert _gate_count(gw, abi.R_DROP_REPLAY) - replays_dropped == 4000
    assert _gate_count(gw, abi.R_DROP_RATE_SESSION) == 0
    # a well-formed packet from the peer's own inner address (cryptokey routing)
    [data] = gw.client.seal_packet(ipv4(ipaddress.IPv4Address("10.99.0.2")))
    gw.receive((data, OLD))
    assert gw.datapath.tun.written, "the next genuine DATA must pass"


def test_a_replayed_reattach_request_does_not_starve_the_clients_retries(gw):
    """1000 replays/s of one captured request from ever new sources, while
    the client retries every 400 ms: every genuine retry passes the gate."""
    captured = gw.request()
    _only(gw.receive((captured, NEW)), abi.MSG_PATH_CHALLENGE)
    admitted, retries = 0, 0
    for ms in range(5_000):
        gw.clock.ms += 1
        src = Transport(f"203.0.{(ms >> 8) & 255}.{ms & 255}", 1000 + ms)
        gw.receive((captured, src))
        if ms % 400 == 7:
            retries += 1
            req = gw.request()
            admitted += gw.gate.admit(req, (NEW.addr, NEW.port))
            gw._control(req, NEW)
    assert admitted == retries
    assert _gate_count(gw, abi.R_DROP_RATE_SESSION) == 0
    assert _gate_count(gw, abi.R_DROP_REPLAY) == 5_000


def test_the_control_floor_survives_element_rewrites_and_restarts(gw):
    """A rewritten element (a switch, a standby, a daemon restarted over the
    pinned maps: put with first=True) keeps the floor: recorded keepalives
    are not accepted again after a restart (the window restarts at the data
    top only)."""
    ka = gw.client.seal(b"", abi.MSG_KEEPALIVE)
    _only(gw.receive((ka, OLD)), abi.MSG_KEEPALIVE)
    counter = wire.parse_header(ka).counter
    gw.gate.put(gw.record(), KEYS, first=True)
    assert gw.gate.model.sessions[SID].ctl_floor == counter
    assert not gw.gate.admit(ka, (OLD.addr, OLD.port))
    gw.table.raise_control_floor(SID, counter - 1)  # never lowered
    assert gw.gate.model.sessions[SID].ctl_floor == counter


def _sealed_request(gw, seq: int, nonce: bytes) -> bytes:
    """The client's request ``seq`` (again): a fresh header counter each time."""
    hdr = wire.Header(type=abi.MSG_REATTACH_REQ, session_id=SID,
                      counter=gw.client.next_counter())
    return wire.seal_control(hdr, KEYS.hdr_c2s, KEYS.reattach, seq, gw.clock.ms, nonce,
                             gw.record().epoch)


def test_a_retry_answered_again_raises_the_floor_and_the_next_retry_still_passes(gw):
    """The reattach retry window and the control window are one: a retry
    answered with the challenge again is recorded (acted on), so its copy
    from elsewhere neither passes the gate nor aborts the switch as relay
    evidence; the client's next retry has a newer counter and passes."""
    nonce = os.urandom(16)
    _only(gw.receive((_sealed_request(gw, 1, nonce), NEW)), abi.MSG_PATH_CHALLENGE)
    retry = _sealed_request(gw, 1, nonce)  # the challenge was lost
    _only(gw.receive((retry, NEW)), abi.MSG_PATH_CHALLENGE)
    assert gw.gate.model.sessions[SID].ctl_floor == wire.parse_header(retry).counter
    assert gw.receive((retry, EVIL)) == []  # a copy from elsewhere: dropped, no abort
    assert gw.record().state is State.RECOVERING
    gw.clock.ms += 400
    challenge, _ = _only(gw.receive((_sealed_request(gw, 1, nonce), NEW)),
                         abi.MSG_PATH_CHALLENGE)
    _only(gw.receive((gw.answer(challenge), NEW)), abi.MSG_REATTACH_ACK)
    assert gw.record().binding == NEW and gw.record().state is State.ATTACHED


def _switched(gw) -> bytes:
    """A reattach to NEW, done; returns its request (sequence 1, consumed)."""
    req = _sealed_request(gw, 1, os.urandom(16))
    challenge, _ = _only(gw.receive((req, NEW)), abi.MSG_PATH_CHALLENGE)
    _only(gw.receive((gw.answer(challenge), NEW)), abi.MSG_REATTACH_ACK)
    return req


def test_a_replayed_consumed_request_changes_nothing(gw):
    """Review E (check): a copy of a consumed request (its header counter
    recorded) raises no floor, changes no record, gets no answer."""
    req = _switched(gw)
    before, floor = gw.record(), gw.gate.model.sessions[SID].ctl_floor
    assert floor >= wire.parse_header(req).counter
    for src in (NEW, EVIL):
        assert gw.receive((req, src)) == []
        assert gw.server.check(req, src).reject.reason == "REPLAY_DETECTED"  # past the gate too
    assert gw.record() == before and gw.gate.model.sessions[SID].ctl_floor == floor


@pytest.mark.parametrize("seq", [0, 1], ids=["older-sequence", "consumed-sequence"])
def test_a_stale_request_raises_the_floor_to_its_own_verified_counter_only(gw, seq):
    """Review E (check): the key holder's request under a spent sequence
    (a late retry: answered, the switch not redone) is verified and
    recorded, so the gate's control floor rises to its header counter,
    exactly, never above; the record does not change; a header-only copy
    of it changes nothing at all."""
    _switched(gw)
    before = gw.record()
    stale = _sealed_request(gw, seq, os.urandom(16))
    counter = wire.parse_header(stale).counter
    floor = gw.gate.model.sessions[SID].ctl_floor
    assert gw.receive((header_only_copy(stale), NEW)) == []  # the MAC fails
    assert gw.gate.model.sessions[SID].ctl_floor == floor
    sent = gw.receive((stale, NEW))
    assert len(sent) == 1 and sent[0][0][0] in (abi.MSG_REATTACH_ACK, abi.MSG_REATTACH_REJECT)
    assert gw.gate.model.sessions[SID].ctl_floor == counter
    assert gw.record() == before


def test_a_reattach_under_keys_past_reject_after_is_refused_where_the_session_is_not_served(gw):
    """A reattach server that does not serve the session (no live session to
    measure: a standby's view, here a server without ``live_of``) measures
    the epoch's age from the record: past reject_after_ms the request
    proves nothing, gets no challenge and moves nothing (review k16r3)."""
    gw.clock.ms += default_policy().reject_after_ms
    assert gw.receive((gw.request(), NEW)) == []
    assert gw.record().binding == OLD and gw.record().state is State.ATTACHED
    [result] = [e for e in gw.events.recent if e["event_type"] == "ReattachResult"]
    assert result["reason_code"] == "KEY_EXPIRED"
