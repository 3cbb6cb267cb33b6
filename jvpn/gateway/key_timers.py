"""The key lifecycle's timers for one session (issue 13, docs/protocol.md
"Rekey", overlap and expiry), run by the gateway's timer under the control
lock; the session table writes. The overlap ends ``rekey_overlap_ms`` after
the confirmation; keys the gateway seals under past ``reject_after_*`` are
``KeyExpired``: the session ends (KEY_EXPIRED) or, with
``keys.expiry_terminates = false``, goes DEGRADED until a rekey brings it
back. Never a silent fallback to old keys."""

from __future__ import annotations

from jvpn.codes import EventType, Reason
from jvpn.gateway import key_age
from jvpn.gateway.table import AEAD_IDLE_MS
from jvpn.policy import Policy
from jvpn.session import Event, State

# where KEYS_AGED leads to DEGRADED (jvpn/session.py); a DEGRADED one stays
AGEING = (State.ATTACHED, State.VOLATILE, State.RECOVERING)


def run(table, live, now: int, p: Policy) -> None:
    """One tick of one served session's keys (raises StoreError from the
    overlap's end's store write: the timer reports it, the next tick tries
    again; the previous epoch has left memory and the element already)."""
    if live.record.state is State.TERMINATED:
        return
    live.shed_if_idle(table.timer_ms())  # idle: its key bytes stay, its AEAD objects go (issue 15)
    if key_age.expired(live, now, p):
        if _expire(table, live, now, p):
            return
    elif live.quarantined and live.quarantine_lifts:
        # key expiry's quarantine whose keys a rekey renewed since (its
        # commit and confirmation are store writes: memory is the store's
        # record): nothing left to fail closed for (review R5 #2)
        table.lift_quarantine(live)
    table.end_overlap(live, now, p.rekey_overlap_ms)  # and its store write, again if due


def _expire(table, live, now: int, p: Policy) -> bool:
    """KeyExpired and its transition; False: DEGRADED already, nothing to do."""
    due = expiry(table, live, now, p)
    if due is None:
        return False
    rec = live.record
    event, detail = due
    table.transition(live, event, detail=detail)
    settle(table, live, rec)
    return True


def expiry(table, live, now: int, p: Policy) -> tuple[Event, str] | None:
    """The keys' expiry transition (event, detail) if due, KeyExpired said
    (once: a refused write is retried quietly); None: not expired, or
    DEGRADED already (no data passes; a rekey brings it back). The timers'
    batch commits it with the others (review k16r2 #3), then ``settle``."""
    rec = live.record
    if rec.state is State.TERMINATED or not key_age.expired(live, now, p):
        return None
    if not p.expiry_terminates and rec.state not in AGEING:
        return None
    epoch, since, _c, _s = key_age.sealing(live, p)  # the epoch measured, named
    age = now - since
    if not live.quarantined:
        table.events.emit(EventType.KEY_EXPIRED, Reason.KEY_EXPIRED, rec.session_id,
                          rec.binding, version=rec.version, key_epoch=epoch, key_age_ms=age,
                          messages=key_age.messages(live, p))
    event = Event.KEYS_EXPIRED if p.expiry_terminates else Event.KEYS_AGED
    return event, f"keys of epoch {epoch} expired ({age} ms old)"


def stranded(live, now: int, p: Policy, heard: int) -> tuple[Event, str] | None:
    """The end of a session DEGRADED with expired keys whose binding fell
    silent (review k16r5 #1): its way back is a rekey from the binding
    (a reattach under expired keys is refused unanswered), so once nothing
    authenticated has come from the binding for ``transport_lost_ttl_ms``
    it is ended, as a transportless session is, and the client's next
    handshake gets a fresh session instead of a slot held for ever.
    ``heard``: ``Live.heard_ms``, the last receive on the wall clock's reckoning."""
    if live.record.state is not State.DEGRADED or not key_age.expired(live, now, p):
        return None
    if now - heard <= p.transport_lost_ttl_ms:
        return None
    return Event.TRANSPORT_TTL_EXPIRED, "keys expired, binding silent too long"


def stranded_at(live, now: int, timer_now: int,
                p: Policy) -> tuple[int | None, int | None] | None:
    """The earliest time ``stranded`` can end this session, as (wall clock,
    timer clock): it needs the binding's silence (the timer clock's,
    ``Live.last_rx_ms``) and the measured epoch's age expiry (the wall
    clock's); either is a lower bound, the later of the two by the clocks'
    current lead the tighter (in DEGRADED no data moves its message count).
    None: not DEGRADED."""
    if live.record.state is not State.DEGRADED:
        return None
    silent = live.last_rx_ms + p.transport_lost_ttl_ms + 1
    if key_age.expired(live, now, p):
        return None, silent
    expires = key_age.sealing_since(live, p) + p.reject_after_ms
    return (None, silent) if silent + now - timer_now >= expires else (expires, None)


def settle(table, live, rec) -> None:
    """After the expiry's write (``rec``: the record it was decided on)."""
    if live.record is rec:  # the store refused the transition (TransitionRejected)
        # fail closed meanwhile, as a refused revocation does: the element
        # leaves the gate and the downstream leaves the session, so nothing
        # passes under the expired keys while the next tick retries the write
        table.quarantine(rec.session_id, lifts=True)
    else:  # stored (DEGRADED: the gate drops its data): a quarantine ends
        table.lift_quarantine(live)  # (review R4 #2)


# The most messages one session can seal or have delivered per millisecond
# (ten million a second: more than the daemon moves in all). Message-based
# expiry cannot come sooner than the messages left at this rate, so an
# idle session's keys are not looked at every tick (issue 15). The c2s
# count is the client's choice (its highest counter admitted): a jump past
# the bound takes a new replay-ceiling block, and that write has the session
# looked at next tick (jvpn/gateway/table.py _StoreWrite); within a block the
# count moves at most a block, a few milliseconds at this rate.
MAX_MESSAGES_PER_MS = 10_000


def due_at(live, now: int, timer_now: int, p: Policy) -> tuple[int | None, int | None]:
    """The earliest time ``run`` can change anything for this session, on
    each clock (review k21r3 F2): key expiry by age and the overlap's end
    on the wall clock (``now``: times of the record and the ring), the
    rest on the timer clock (``timer_now``): the message budget's rate
    bound, the idle AEAD drop (a silence, ``Live.last_rx_ms``) and a retry
    each tick. Lower bounds: a session checked early is checked again,
    never late. (None, None): nothing until the session changes (the table
    reschedules it then). Written out again for a restored idle session in
    idle_due.py: change both (tests/unit/test_idle_due.py holds them equal)."""
    if live.quarantined or live.secrets_unsaved:
        return None, timer_now  # a refused write or a quarantine to lift: every tick
    wall = timer = None
    if p.expiry_terminates or live.record.state in AGEING:  # else DEGRADED: nothing to expire
        since, used = key_age.measured(live, p)
        wall = since + p.reject_after_ms
        timer = timer_now + max(p.reject_after_messages - used, 0) // MAX_MESSAGES_PER_MS
    ring = live.keys
    if ring.previous is not None and ring.confirmed:  # the overlap's end
        until = live.overlap_until_ms
        if until is None:
            timer = timer_now
        elif wall is None or until < wall:
            wall = until
    # the idle AEAD drop, while the channel holds AEAD objects: a session
    # shed and then sent to (downstream to a silent client remakes its
    # sealing object) is shed again at its next check, not on the dot:
    # memory only, nothing a client sees
    if live.holds_aead:  # none made yet (a restored session's channel): nothing to drop
        idle = live.last_rx_ms + AEAD_IDLE_MS
        timer = idle if timer is None else min(timer, idle)
    return wall, timer
