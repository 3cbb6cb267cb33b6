"""The first due time of a session restored idle (issue 15): what
``TimerChecks._next_due`` (jvpn/gateway/timer_checks.py) gives for it, from
its record, its one key epoch and its two counters' floors alone.

A restart reschedules every restored session (jvpn/gateway/reconcile.py
``_first_due``); at 1M the general function's four timers' lower bounds,
through a dozen calls a session, were a seventh of the pass. Nearly all
restored sessions are in one case: confirmed, one key epoch (no overlap,
no answer awaiting its confirmation), not quarantined, nothing to write
again, no channel made yet (so no AEAD objects to drop), not DEGRADED
(no stranding, no nudge). For that case the bounds reduce to the
record's timers (jvpn/gateway/timers.py ``due_at``, written out here) and the current
epoch's key expiry by time and by messages (jvpn/gateway/key_timers.py
``due_at``). Any other session returns None and the caller asks
``_next_due``. tests/unit/test_idle_due.py holds the two equal over random
records, counters and policies, and over each condition's edge.
"""

from __future__ import annotations

from jvpn.gateway.key_timers import AGEING, MAX_MESSAGES_PER_MS
from jvpn.gateway.table import Live
from jvpn.policy import Policy
from jvpn.session import State


def idle_due_at(live: Live, now: int, timer_now: int,
                p: Policy) -> tuple[int, int] | None:
    """``_next_due(live)`` at ``now`` (the wall clock) and ``timer_now``
    (the timer clock) for a session restored idle (see the module's text):
    (wall clock, timer clock), each on its own (review k21r3 F2); None for
    any other (ask ``_next_due``)."""
    rec, first = live.record, live.unmade_first_counter
    if (first is None or rec.state not in AGEING or not live.confirmed or live.quarantined
            or live.secrets_unsaved or live.keys.previous is not None):
        return None
    # key_age.measured with one epoch, confirmed: the current one's making
    # time, and its messages the larger direction past its base counters
    # (the send counter is the stored floor while no channel is made)
    used = max(first - 1 - rec.key_s2c_base,
               live.ceiling.floor - 1 - rec.key_c2s_base, 0)
    # the wall clock's: the record's deadlines (timers.py due_at, written
    # out: one call less) and key expiry by age
    at = min(rec.created_ms + p.max_lifetime_ms + 1,
             (rec.keys_ms or rec.created_ms) + p.reject_after_ms)
    if rec.transport_lost_ms:
        at = min(at, rec.transport_lost_ms + p.transport_lost_ttl_ms + 1)
    # the timer clock's: key expiry by messages (the rate bound) and the heartbeat's silence
    timer_at = timer_now + max(p.reject_after_messages - used, 0) // MAX_MESSAGES_PER_MS
    state = rec.state
    if state is State.ATTACHED:
        timer_at = min(timer_at, live.last_rx_ms + p.heartbeat_volatile_ms + 1)
    elif state is State.VOLATILE:
        at = min(at, rec.last_change_ms + p.volatile_to_degraded_ms + 1)
    elif rec.recovery_deadline_ms is not None:  # RECOVERING
        at = min(at, rec.recovery_deadline_ms)
    return max(at, now + 1), max(timer_at, timer_now + 1)
