"""Reattach validation, end to end in memory: success, every rejection with
its reason code, nothing mutated by a rejection, one winner under a race,
switch storm -> DEGRADED -> TERMINATED."""

from __future__ import annotations

import pytest

from jvpn import wire
from jvpn.gate import abi
from jvpn.keys import derive_session_keys
from jvpn.session import State
from kits.reattach_kit import EVIL, KEYS, NAT, NEW, OLD, SID, Harness


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


def test_a_stale_epoch_is_told_the_current_one(h):
    """The key holder's switch committed but it never got the ACK (it had
    moved on to a new request): its new request names the old epoch and is
    refused, nothing changed, and the sealed REJECT says the current epoch,
    so its next request can name it. Before, it was told nothing and every
    later request named the same stale epoch: the session was lost."""
    h.reattach(NEW)  # the switch commits (epoch 1); the client never hears its ACK
    before = h.record()
    [(rejected, to)] = h.handle(h.request(epoch=0), NAT)
    hdr, (_seq, reason, epoch) = wire.open_control(rejected, KEYS.reattach)
    assert hdr.type == abi.MSG_REATTACH_REJECT and to == NAT
    assert wire.REJECT_REASONS[reason] == "FRESHNESS_INVALID" and epoch == before.epoch == 1
    assert h.record() == before
    h.clock.ms += h.policy.switch_cooldown_ms  # past the cooldown of the first switch
    to, epoch, _version = _ack(h.reattach(NAT))  # the next request, naming epoch 1
    assert to == NAT and epoch == 2


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
    [(rejected, to)] = h.handle(b, NAT)  # the loser is told (issue 10 item 10b)
    assert to == NAT and wire.open_control(rejected, KEYS.reattach)[1][1] == (
        wire.REJECT_REASONS.index("OWNERSHIP_CONFLICT"))
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
    assert h.reasons()[-1] == "POLICY_TERMINATION"  # the policy ended it: no expiry (R3 #2)
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


def test_a_lost_challenge_blocks_no_switch_past_its_deadline(h):
    """The gateway that sent the challenge is gone (a cluster owner killed or
    stopped mid-switch): nobody moves its RECOVERING record to DEGRADED.
    Until the deadline a request is a switch in progress; after it a new
    switch starts (the lost one DEGRADED first). Before the fix every
    request was refused until the session's transportless TTL ended it."""
    start = h.clock.ms
    [(lost, _to)] = h.handle(h.request(), NEW)
    h.server.pending.clear()  # the challenge lived in a process that is gone
    deadline = h.record().recovery_deadline_ms
    h.clock.ms = deadline - 1
    [(_rejected, _to)] = h.handle(h.request(), NAT)
    assert h.reasons()[-1] == "OWNERSHIP_CONFLICT" and h.record().state is State.RECOVERING
    h.clock.ms = deadline
    [(challenge, to)] = h.handle(h.request(), NAT)
    assert to == NAT and h.record().candidate == NAT
    states = [(e["previous_state"], e["new_state"]) for e in h.events.recent
              if e["event_type"] == "SessionStateChange"][-2:]
    assert states == [("RECOVERING", "DEGRADED"), ("DEGRADED", "RECOVERING")]
    assert h.handle(h.answer(lost), NEW) == []  # the lost challenge's answer counts for nothing
    to, epoch, _version = _ack(h.handle(h.answer(challenge), NAT))
    assert to == NAT and h.record().binding == NAT and epoch == 1
    assert h.clock.ms - start < h.policy.transport_lost_ttl_ms
