"""Issue 12: a stopping client's TERMINATE, at the gateway (the in-memory
control path over the session table of the reattach tests). Authentic and
fresh: the session ends at once (record and gate element gone, the event
with CLIENT_STOPPED, nothing sent back). Anything else changes nothing: a
forged one, a replayed one, one whose counter the session already used,
one aimed at a later session."""

from __future__ import annotations

import ipaddress

import pytest

from jvpn import wire
from jvpn.gate import abi
from jvpn.keys import derive_session_keys
from jvpn.session import Event, State, apply, new_session
from kits.reattach_kit import KEYS, NEW, OLD, SID, Harness

STOPPED = wire.TERMINATE_REASONS.index("CLIENT_STOPPED")


@pytest.fixture
def h(tmp_path):
    harness = Harness(tmp_path)
    yield harness
    harness.store.close()


def terminate(h, *, keys=KEYS, sid=SID, counter=None) -> bytes:
    return wire.seal_control(
        wire.Header(type=abi.MSG_TERMINATE, session_id=sid,
                    counter=next(h.c2s) if counter is None else counter),
        keys.hdr_c2s, keys.reattach, STOPPED)


def ended(h, sid=SID) -> list[dict]:
    return [e for e in h.events.recent
            if e["event_type"] == "SessionTerminated" and e["session_id"] == f"{sid:016x}"]


def test_client_stopped_is_the_last_reason_on_the_wire():
    # append only: the indices before it are what deployed clients and gateways send
    assert wire.TERMINATE_REASONS[:3] == ["TTL_SESSION_EXPIRED", "TTL_TRANSPORT_LOSS_EXPIRED",
                                          "POLICY_TERMINATION"]
    assert "CLIENT_STOPPED" in wire.TERMINATE_REASONS[3:]


def test_an_authentic_terminate_ends_the_session_at_once(h):
    assert h.handle(terminate(h), OLD) == []
    assert h.store.get(SID) is None and SID not in h.table.sessions
    assert SID not in h.gate.model.sessions  # the binding left the gate
    [e] = ended(h)
    assert e["reason_code"] == "CLIENT_STOPPED"
    assert not [m for m, _to in h.sent if m[0] == abi.MSG_TERMINATE]  # the client is gone


def test_from_another_address_it_still_ends_it(h):
    """The key holder may have moved before it stopped: the MAC, not the
    source, says who sent it."""
    h.handle(terminate(h), NEW)
    assert h.store.get(SID) is None and ended(h)[0]["reason_code"] == "CLIENT_STOPPED"


def test_a_forged_terminate_changes_nothing(h):
    before = h.record()
    wrong = derive_session_keys(SID, b"\x09" * 32, b"\2" * 32, b"\3" * 32)
    h.handle(terminate(h, keys=wrong), OLD)
    good = bytearray(terminate(h))
    good[abi.HDR_LEN] ^= 1  # the reason, under a MAC that no longer matches
    h.handle(bytes(good), OLD)
    assert h.record() == before and SID in h.gate.model.sessions and not ended(h)


def test_a_used_counter_is_refused(h):
    """A TERMINATE whose header counter the session's control window already
    recorded (a verified request's) is stale: the session goes on."""
    counter = 500
    h.handle(_request(h, counter), NEW)
    before = h.record()
    h.handle(terminate(h, counter=counter), OLD)
    assert h.record().session_id == before.session_id and not ended(h)
    assert SID in h.table.sessions


def _request(h, counter: int) -> bytes:
    return wire.seal_control(
        wire.Header(type=abi.MSG_REATTACH_REQ, session_id=SID, counter=counter),
        KEYS.hdr_c2s, KEYS.reattach, next(h.seq), h.clock.ms, b"\7" * 16, h.record().epoch)


def test_a_replayed_terminate_does_not_end_a_later_session(h):
    """The first copy ended its session; a later session of the same peer
    has another id and other keys: the replay (as it was, or with the new
    session's id in its header) fails the tag and the MAC."""
    msg = terminate(h)
    h.handle(msg, OLD)
    sid2 = SID ^ 0xFF
    keys2 = derive_session_keys(sid2, b"\4" * 32, b"\5" * 32, b"\6" * 32)
    rec, _ = apply(new_session(sid2, h.clock.ms), Event.ATTACH_OK, h.clock.ms, binding=OLD)
    h.store.create(rec, keys2.pack())
    h.table.install(rec, keys2, ipaddress.IPv4Address("10.99.0.2").packed)
    h.handle(msg, OLD)
    moved = bytearray(msg)
    moved[8:16] = sid2.to_bytes(8, "little")
    h.handle(bytes(moved), OLD)
    assert h.store.get(sid2)[0].state is State.ATTACHED and sid2 in h.gate.model.sessions
    assert not ended(h, sid2)


def test_the_reason_the_client_chose_is_not_echoed(h):
    """Review R3 #7: a key holder's TERMINATE naming POLICY_TERMINATION (or
    any index) is logged as what it is: the client stopped."""
    msg = wire.seal_control(
        wire.Header(type=abi.MSG_TERMINATE, session_id=SID, counter=next(h.c2s)),
        KEYS.hdr_c2s, KEYS.reattach, wire.TERMINATE_REASONS.index("POLICY_TERMINATION"))
    h.handle(msg, OLD)
    assert h.store.get(SID) is None
    assert all("POLICY_TERMINATION" not in str(e) for e in h.events.recent)


def test_one_for_a_session_not_served_here_is_counted(h):
    """Review R3 #5: a TERMINATE for a session this gateway does not serve
    (and holds no standby keys for) changes nothing and is counted in the
    unauthenticated summary, not dropped silently."""
    other = SID ^ 0xFF
    h.handle(terminate(h, sid=other), OLD)
    assert SID in h.table.sessions
    h.events.close()  # writes the summary of unauthenticated rejections
    [summary] = [e for e in h.events.recent if e["event_type"] == "SessionTerminated"]
    assert summary["reason_code"] == "SESSION_NOT_FOUND" and summary["count"] == 1
