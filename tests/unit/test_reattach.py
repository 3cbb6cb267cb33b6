"""Reattach validation, end to end in memory: success, every rejection with
its reason code, nothing mutated by a rejection, one winner under a race,
switch storm -> DEGRADED -> TERMINATED."""

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
from jvpn.gateway.follower import NullFollower
from jvpn.gateway.ownership import LocalOwnership
from jvpn.gateway.reattach import ReattachServer
from jvpn.gateway.table import SessionTable
from jvpn.keys import derive_session_keys
from jvpn.policy import default_policy
from jvpn.session import Event, State, Transport, apply, new_session
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

    def put(self, rec, keys, fence=0, first=False, c2s_floor=0):
        self.projected.append(rec)
        super().put(rec, keys, fence, first, c2s_floor)


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


@pytest.fixture
def h(tmp_path):
    harness = Harness(tmp_path)
    yield harness
    harness.store.close()


def _ack(replies):
    [(msg, to)] = replies
    hdr, (_seq, epoch, version) = wire.open_control(msg, KEYS.reattach)
    assert hdr.type == abi.MSG_REATTACH_ACK and hdr.tag_valid(KEYS.hdr_s2c)
    return to, epoch, version


@pytest.mark.parametrize("target", [NEW, NAT], ids=["address-change", "nat-rebinding"])
def test_reattach_success(h, target):
    v0 = h.record().version
    to, epoch, version = _ack(h.reattach(target))
    rec = h.record()
    assert to == target and rec.binding == target and rec.state is State.ATTACHED
    assert rec.epoch == epoch == 1 and rec.version == version > v0
    assert h.projected[-1].binding == target  # BPF element replaced after the store
    states = [e["new_state"] for e in h.events.recent if e["event_type"] == "SessionStateChange"]
    assert states == ["VOLATILE", "RECOVERING", "ATTACHED"]
    assert h.reasons()[-1] == "REATTACH_ACCEPT"


def _unchanged(h, before, replies, reason):
    assert replies == [] or wire.parse_header(replies[0][0]).type == abi.MSG_REATTACH_REJECT
    assert h.record() == before
    assert h.reasons()[-1] == reason


def test_replayed_request_is_rejected(h):
    req = h.request()
    [(challenge, _)] = h.handle(req, NEW)
    h.handle(h.answer(challenge), NEW)
    before = h.record()
    _unchanged(h, before, h.handle(req, EVIL), "REPLAY_DETECTED")


def test_forged_proof(h):
    bad = derive_session_keys(SID, b"\x09" * 32, b"\2" * 32, b"\3" * 32)
    before = h.record()
    _unchanged(h, before, h.handle(h.request(keys=bad), EVIL), "AUTH_FAIL")
    assert any(e["reason_code"] == "SEC_SESSION_FIXATION_ATTEMPT" for e in h.events.recent)


def test_stale_timestamp_and_wrong_epoch(h):
    before = h.record()
    stale = h.request(ts=h.clock.ms - h.policy.reattach_proof_max_age_ms - 1)
    _unchanged(h, before, h.handle(stale, NEW), "FRESHNESS_INVALID")
    _unchanged(h, before, h.handle(h.request(epoch=7), NEW), "FRESHNESS_INVALID")


def test_unknown_session_allocates_nothing(h):
    before = h.record()
    _unchanged(h, before, h.handle(h.request(sid=SID ^ 1), EVIL), "SESSION_NOT_FOUND")
    assert h.server.pending == {}


def test_hijack_with_captured_request_from_third_address(h):
    """The attacker races the client with the client's own (captured) request:
    the challenge goes to the attacker's address, but the attacker cannot
    answer it without the key, and an answer from elsewhere is refused."""
    req = h.request()
    [(_challenge, to)] = h.handle(req, EVIL)
    assert to == EVIL
    forged = wire.seal_control(
        wire.Header(type=abi.MSG_PATH_RESPONSE, session_id=SID, counter=next(h.c2s)),
        KEYS.hdr_c2s, b"\0" * 32, b"\0" * 16, b"\0" * 16)
    assert h.handle(forged, EVIL) == []
    assert h.record().binding == OLD and h.reasons()[-1] == "AUTH_FAIL"
    h.clock.ms += h.policy.recovery_window_ms + 1
    h.control.expire_challenges()  # the challenge lapses: DEGRADED, binding never moved
    assert h.record().state is State.DEGRADED and h.record().binding == OLD


def test_challenge_answered_from_a_different_address(h):
    [(challenge, _)] = h.handle(h.request(), NEW)
    before = h.record()
    assert h.handle(h.answer(challenge), EVIL) == []
    assert h.record() == before and h.reasons()[-1] == "AUTH_FAIL"
    # the genuine answer from the challenged transport still completes it
    to, _, _ = _ack(h.handle(h.answer(challenge), NEW))
    assert to == NEW and h.record().binding == NEW


def test_parallel_reattaches_one_winner(h):
    a, b = h.request(), h.request()
    [(ch_a, _)] = h.handle(a, NEW)
    assert h.handle(b, NAT) == []
    assert h.reasons()[-1] == "OWNERSHIP_CONFLICT"
    _ack(h.handle(h.answer(ch_a), NEW))
    assert h.record().binding == NEW
    assert h.reasons().count("REATTACH_ACCEPT") == 1


def test_store_conflict_rejects_and_binding_stays(h):
    [(challenge, _)] = h.handle(h.request(), NEW)
    rec = h.record()
    h.store.cas(SID, rec.version, rec.with_(version=rec.version + 1))  # another writer
    replies = h.handle(h.answer(challenge), NEW)
    assert h.reasons()[-1] == "OWNERSHIP_CONFLICT"
    assert h.record().binding == OLD
    assert wire.open_control(replies[0][0], KEYS.reattach)[0].type == abi.MSG_REATTACH_REJECT


def test_cooldown_consumes_the_sequence(h):
    _ack(h.reattach(NEW))
    h.clock.ms += 100
    req = h.request()
    [(msg, _)] = h.handle(req, NAT)
    assert wire.open_control(msg, KEYS.reattach)[1][1] == wire.REJECT_REASONS.index("POLICY_DENY")
    h.clock.ms += 2_000  # past the cooldown, still inside the proof's max age
    assert h.handle(req, NAT) == []  # cannot be replayed after the cooldown
    assert h.reasons()[-1] == "REPLAY_DETECTED"


def test_switch_storm_degrades_then_terminates(tmp_path):
    h = Harness(tmp_path, max_switches_per_min=2, switch_cooldown_ms=0)
    for t in (NEW, NAT):
        h.clock.ms += 10
        _ack(h.reattach(t))
    h.clock.ms += 10
    h.handle(h.request(), OLD)
    assert h.record().state is State.DEGRADED and h.reasons()[-1] == "POLICY_DENY"
    assert h.projected[-1].state is State.DEGRADED  # XDP now blocks data for it
    h.clock.ms += 10
    h.handle(h.request(), NEW)
    rec = h.record()
    assert rec.state is State.TERMINATED and rec.binding is None
    assert any(e["event_type"] == "SessionTerminated" for e in h.events.recent)
    h.clock.ms += 10
    assert h.handle(h.request(), NEW) == []
    assert h.reasons()[-1] == "SESSION_EXPIRED"
    h.store.close()


def test_rate_limited_per_source(h):
    for _ in range(25):
        h.handle(h.request(keys=derive_session_keys(SID, b"\7" * 32, b"\7" * 32,
                                                           b"\7" * 32)), EVIL)
    assert "RATE_LIMITED" in h.reasons()


def test_the_policy_recovery_window_bounds_recovering(tmp_path):
    """recovery_window_ms, not a compiled 3 s, is how long a path challenge
    (and RECOVERING) lasts; the record carries the deadline."""
    h = Harness(tmp_path, recovery_window_ms=10_000)
    start = h.clock.ms
    [(_challenge, _to)] = h.handle(h.request(), NEW)
    assert h.record().state is State.RECOVERING
    assert h.record().recovery_deadline_ms == start + 10_000
    h.clock.ms = start + 5_000  # past the old compiled 3 s
    h.control.expire_challenges()
    assert h.record().state is State.RECOVERING
    h.clock.ms = start + 9_999
    h.control.expire_challenges()
    assert h.record().state is State.RECOVERING
    h.clock.ms = start + 10_000
    h.control.expire_challenges()
    assert h.record().state is State.DEGRADED and h.record().candidate is None
