"""Review R3 #2: a session the policy ended (a switch storm: DEGRADED, then
TERMINATED) is told to the key holder where it is now, with the sealed
TERMINATE(POLICY_TERMINATION) -- not a REATTACH_REJECT SESSION_EXPIRED,
which a client with Reconnect = yes reads as renewable. A request naming a
TERMINATED record is refused as an expiry only if a TTL had run out."""
from __future__ import annotations

from test_reattach import _ack

from jvpn import wire
from jvpn.client_renew import RENEWABLE
from jvpn.codes import Reason
from jvpn.gate import abi
from jvpn.session import Event, State, apply
from kits.reattach_kit import KEYS, NAT, NEW, OLD, Harness


def _told(h, replies) -> list[tuple]:
    told = []
    for msg, to in list(h.sent) + list(replies):
        hdr, fields = wire.open_control(msg, KEYS.reattach)
        if hdr.type == abi.MSG_TERMINATE:
            told.append(("TERMINATE", wire.TERMINATE_REASONS[fields[0]], to))
        elif hdr.type == abi.MSG_REATTACH_REJECT:
            told.append(("REJECT", wire.REJECT_REASONS[fields[1]], to))
    return told


def _storm(h) -> list:
    for t in (NEW, NAT):
        h.clock.ms += 10
        _ack(h.reattach(t))
    h.clock.ms += 10
    h.handle(h.request(), OLD)
    assert h.record().state is State.DEGRADED
    h.clock.ms += 10
    h.sent.clear()
    return h.handle(h.request(), NEW)  # the client, now on NEW


def test_a_storm_termination_is_told_at_the_clients_path_as_not_renewable(tmp_path):
    h = Harness(tmp_path, max_switches_per_min=2, switch_cooldown_ms=0)
    replies = _storm(h)
    assert h.record().state is State.TERMINATED
    told = _told(h, replies)
    assert ("TERMINATE", "POLICY_TERMINATION", NEW) in told
    assert not [t for t in told if t[1] in RENEWABLE]


def test_a_terminated_record_is_an_expiry_only_after_a_ttl(tmp_path):
    h = Harness(tmp_path, max_switches_per_min=2, switch_cooldown_ms=0)
    _storm(h)
    h.clock.ms += 10
    h.handle(h.request(), NEW)
    last = [e for e in h.events.recent if e["event_type"] == "ReattachResult"][-1]
    assert (last["reason_code"], last["detail"]) == (Reason.POLICY_TERMINATION, "terminated")
    # the session lifetime had run out when it ended: that one is an expiry
    h2 = Harness(tmp_path / "ttl")
    rec = h2.record()
    ended, _tr = apply(rec, Event.SESSION_TTL_EXPIRED, rec.created_ms + h2.policy.max_lifetime_ms)
    h2.store.cas(rec.session_id, rec.version, ended)
    h2.handle(h2.request(), NEW)
    last = [e for e in h2.events.recent if e["event_type"] == "ReattachResult"][-1]
    assert (last["reason_code"], last["detail"]) == (Reason.SESSION_EXPIRED, "terminated")
