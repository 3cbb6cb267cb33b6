"""Which timer event a session is due for: a pure function of the record, the
last traffic time, the clock and the policy."""

from __future__ import annotations

from jvpn.codes import Volatility
from jvpn.policy import Policy
from jvpn.session import Event, SessionRecord, State


def due_timer(rec: SessionRecord, last_rx_ms: int, now: int,
              p: Policy) -> tuple[Event, str, dict] | None:
    """The timer event a session is due for, if any (first match wins).
    ``last_rx_ms``: the last receive on the wall clock's current reckoning
    (``Live.heard_ms``: now less the silence the timer clock measured), so
    that a wall-clock step forward is no silence."""
    if now - rec.created_ms > p.max_lifetime_ms:
        return Event.SESSION_TTL_EXPIRED, "session lifetime", {}
    if rec.transport_lost_ms and now - rec.transport_lost_ms > p.transport_lost_ttl_ms:
        return Event.TRANSPORT_TTL_EXPIRED, "transportless too long", {}
    if rec.state is State.ATTACHED and now - last_rx_ms > p.heartbeat_volatile_ms:
        # the gateway's view of the client's heartbeat_timeout (docs/protocol.md
        # "Transport selection", "The gateway's view"): the same field, the same code
        return (Event.INSTABILITY_DETECTED, Volatility.HEARTBEAT_TIMEOUT.value,
                {"transport_lost_ms": last_rx_ms})
    if (rec.state is State.RECOVERING and rec.recovery_deadline_ms is not None
            and now >= rec.recovery_deadline_ms):  # the policy's recovery window
        return Event.REATTACH_INVALID, "recovery window expired", {"candidate": None}
    if rec.state is State.VOLATILE and now - rec.last_change_ms > p.volatile_to_degraded_ms:
        event = Event.POLICY_TERMINATE if p.recovery_expiry_terminates else Event.RECOVERY_TIMEOUT
        return event, "recovery window expired", {}
    return None


def due_at(rec: SessionRecord, last_rx_ms: int, p: Policy) -> tuple[int, int | None]:
    """The earliest time ``due_timer`` can return an event for this record,
    on each clock (review k21r3 F2): the record's deadlines on the wall
    clock (its lifetime, the transportless TTL, the recovery window, the
    VOLATILE bound: times of the record, which other gateways read), the
    heartbeat's silence on the timer clock (``last_rx_ms``: ``Live.last_rx_ms``,
    the timer clock's; None: not ATTACHED). Lower bounds: ``last_rx_ms``
    only grows, so a session checked then and found not due is simply
    checked again later, never late. Written out again for a restored idle
    session in idle_due.py: change both (tests/unit/test_idle_due.py holds
    them equal)."""
    at = rec.created_ms + p.max_lifetime_ms + 1
    if rec.transport_lost_ms:
        at = min(at, rec.transport_lost_ms + p.transport_lost_ttl_ms + 1)
    if rec.state is State.ATTACHED:
        return at, last_rx_ms + p.heartbeat_volatile_ms + 1
    if rec.state is State.RECOVERING and rec.recovery_deadline_ms is not None:
        at = min(at, rec.recovery_deadline_ms)
    elif rec.state is State.VOLATILE:
        at = min(at, rec.last_change_ms + p.volatile_to_degraded_ms + 1)
    return at, None
