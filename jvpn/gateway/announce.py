"""The events of stored transitions, said once the store holds them: by the
session table's commit, and by its adoption of a commit the store applied
while reporting a failure (jvpn/gateway/key_writes.py ``refresh_keys``)."""

from __future__ import annotations

from jvpn.codes import EventType
from jvpn.events import EventLog
from jvpn.session import SessionRecord, State


def announce(events: EventLog, base: SessionRecord, steps, detail: str, now: int) -> None:
    """One event per stored transition in ``steps`` (over ``base``)."""
    for rec, tr in steps:
        events.emit(EventType.SESSION_STATE_CHANGE, tr.reason_code, rec.session_id,
                    rec.binding, version=tr.version, previous_state=tr.previous.name,
                    new_state=tr.new.name, detail=detail)
        if tr.new is State.TERMINATED:
            lost = base.transport_lost_ms
            events.emit(EventType.SESSION_TERMINATED, tr.reason_code, rec.session_id,
                        version=tr.version, detail=detail,
                        session_age_ms=now - base.created_ms,
                        transportless_age_ms=(now - lost) if lost else 0)
