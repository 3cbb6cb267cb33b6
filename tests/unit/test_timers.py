"""Gateway timers: lifetime, transportless TTL, silence -> VOLATILE,
VOLATILE too long -> DEGRADED or TERMINATED (policy)."""

from jvpn.codes import Volatility
from jvpn.gateway.timers import due_timer
from jvpn.policy import default_policy
from jvpn.session import Event, State, Transport, apply, new_session

P = default_policy()
T = Transport("192.0.2.1", 1)


def _attached(now=0):
    return apply(new_session(1, now), Event.ATTACH_OK, now, binding=T)[0]


def test_quiet_attached_session_becomes_volatile():
    rec = _attached()
    assert due_timer(rec, last_rx_ms=0, now=P.heartbeat_volatile_ms, p=P) is None
    event, detail, changes = due_timer(rec, 0, P.heartbeat_volatile_ms + 1, P)
    assert event is Event.INSTABILITY_DETECTED and changes == {"transport_lost_ms": 0}
    # the gateway's view of the client's heartbeat_timeout (issue 14): same code
    assert detail == Volatility.HEARTBEAT_TIMEOUT == "heartbeat_timeout"


def test_volatile_too_long_degrades_or_terminates_by_policy():
    rec = apply(_attached(), Event.INSTABILITY_DETECTED, 10, transport_lost_ms=10)[0]
    now = 10 + P.volatile_to_degraded_ms + 1
    assert due_timer(rec, 10, now, P)[0] is Event.RECOVERY_TIMEOUT
    strict = P.__class__(**{**P.as_dict(), "recovery_expiry_terminates": True})
    assert due_timer(rec, 10, now, strict)[0] is Event.POLICY_TERMINATE


def test_transportless_ttl_and_lifetime_terminate():
    rec = apply(_attached(), Event.INSTABILITY_DETECTED, 10, transport_lost_ms=10)[0]
    rec = apply(rec, Event.RECOVERY_TIMEOUT, 20)[0]  # DEGRADED, no timer of its own
    assert due_timer(rec, 10, 10 + P.transport_lost_ttl_ms, P) is None
    assert due_timer(rec, 10, 11 + P.transport_lost_ttl_ms, P)[0] is Event.TRANSPORT_TTL_EXPIRED
    assert due_timer(_attached(), 10**12, P.max_lifetime_ms + 1, P)[0] is \
        Event.SESSION_TTL_EXPIRED
    assert apply(rec, Event.TRANSPORT_TTL_EXPIRED, 1)[0].state is State.TERMINATED


def test_recovering_past_its_deadline_fails_the_recovery():
    """RECOVERING is bounded by the record's recovery_deadline_ms (the
    policy's recovery window) even when no challenge is held in memory (a
    restart, another gateway's challenge): DEGRADED, the candidate dropped."""
    rec = apply(_attached(), Event.INSTABILITY_DETECTED, 10, transport_lost_ms=10)[0]
    rec = apply(rec, Event.SWITCH_INITIATED, 20, candidate=T,
                recovery_deadline_ms=20 + P.recovery_window_ms)[0]
    assert due_timer(rec, 10, 19 + P.recovery_window_ms, P) is None
    event, _, changes = due_timer(rec, 10, 20 + P.recovery_window_ms, P)
    assert event is Event.REATTACH_INVALID and changes == {"candidate": None}
    assert apply(rec, event, 1, **changes)[0].state is State.DEGRADED
