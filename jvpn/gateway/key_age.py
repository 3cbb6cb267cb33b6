"""How old a session's keys are, and what the key policy makes of it
(issue 13, docs/protocol.md "Rekey"; pure functions of a live session, the
clock and the policy). Age: from the record's ``keys_ms`` (0: the
handshake's keys, ``created_ms``). Messages: counters either way minus the
epoch's base counters (``key_c2s_base`` / ``key_s2c_base``).

Expiry is measured on the epoch the gateway SEALS under (review R1 #3):
while a committed rekey awaits its confirmation that is the previous epoch,
whose making time and base counters the ring's answer keeps
(jvpn/rekey_answer.py), so an unconfirmed attempt never extends its life.
One exception: a previous epoch already expired at the commit (a rekey
from DEGRADED). The gateway then seals nothing under it but the rekey's
answers, nor delivers what it receives under it (``previous_expired``), and
the wait for the confirmation is bounded by the new epoch's own
``reject_after_*``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from jvpn.policy import Policy
from jvpn.session import SessionRecord, State

if TYPE_CHECKING:
    from jvpn.gateway.table import Live
    from jvpn.keys import KeyRing, SessionKeys

# states whose keys the timers hold to reject_after_* (a TERMINATED one is gone)
EXPIRING = (State.ATTACHED, State.VOLATILE, State.RECOVERING, State.DEGRADED)


def current_since(live: Live) -> int:
    rec = live.record
    return rec.keys_ms or rec.created_ms


def _used(live: Live, c2s_base: int, s2c_base: int) -> int:
    """Messages since the base counters, the larger direction."""
    s2c = live.send_upcoming() - 1 - s2c_base  # no channel made for it (a restored one)
    c2s = live.ceiling.floor - 1 - c2s_base
    return max(s2c, c2s, 0)


def _previous_worn(live: Live, at: int, c2s: int, s2c: int, p: Policy) -> bool:
    """The previous epoch (the ring's answer: its making and bases) is past
    reject_after_* at time ``at`` with these counters."""
    a = live.keys.answer
    return (at - a.prev_keys_ms >= p.reject_after_ms
            or max(c2s - a.prev_c2s_base, s2c - a.prev_s2c_base) >= p.reject_after_messages)


def previous_expired(live: Live, now: int, p: Policy) -> bool:
    """The ring's previous epoch is past reject_after_*: nothing received
    under it is delivered, nothing but a rekey answer is sealed under it."""
    ring = live.keys
    if ring.previous is None or ring.answer is None:
        return False
    return _previous_worn(live, now, live.ceiling.floor - 1, live.send_upcoming() - 1, p)


def current_expired(live: Live, now: int, p: Policy) -> bool:
    """The ring's current epoch is past reject_after_*: nothing received
    under it is delivered, nothing is sealed under it, at use, whatever the
    timers have done yet (review k16r2 #2b: a late key-expiry timer, a
    backlog, never lets data pass under expired keys). O(1): the epoch's
    making time and base counters are the record's."""
    rec = live.record
    return (now - current_since(live) >= p.reject_after_ms
            or _used(live, rec.key_c2s_base, rec.key_s2c_base) >= p.reject_after_messages)


def opened_expired(live: Live, keys: SessionKeys, now: int, p: Policy) -> bool:
    """``keys``, the epoch a client's message opened under, is past
    reject_after_* at use (the previous, or the current before its timer
    ran): nothing received under it is acted on, no reply is sealed for it
    (the data path, probes, reattach: one measure)."""
    ring = live.keys
    if ring.previous is not None and keys.epoch == ring.previous.epoch:
        return previous_expired(live, now, p)
    return keys.epoch == ring.current.epoch and current_expired(live, now, p)


def sending_expired(live: Live, now: int, p: Policy) -> bool:
    """The epoch the gateway would seal under is past reject_after_*: the
    previous while a rekey awaits its confirmation (nothing goes under it
    but the rekey's answers), or the current one before its key-expiry
    timer ran. Nothing else is sealed then (data, probe replies)."""
    if not live.keys.confirmed:
        return previous_expired(live, now, p)
    return current_expired(live, now, p)


def stored_expired(rec: SessionRecord, ring: KeyRing, keys: SessionKeys, now: int,
                   p: Policy) -> bool:
    """``opened_expired`` for a session not served here (a standby's, a
    record read from the store): by age only (the counters are the
    serving gateway's), from the record's making times."""
    if ring.previous is not None and keys.epoch == ring.previous.epoch:
        return ring.answer is not None and now - ring.answer.prev_keys_ms >= p.reject_after_ms
    return now - (rec.keys_ms or rec.created_ms) >= p.reject_after_ms


def _measures_previous(live: Live, p: Policy) -> bool:
    """Expiry measures the previous epoch: the gateway still seals under it
    (unconfirmed), and it was not already expired at the commit."""
    ring, rec = live.keys, live.record
    return (not ring.confirmed and ring.answer is not None
            and not _previous_worn(live, current_since(live), rec.key_c2s_base,
                                   rec.key_s2c_base, p))


def sealing(live: Live, p: Policy) -> tuple[int, int, int, int]:
    """(epoch, making time, c2s base, s2c base) of the epoch expiry measures."""
    ring, rec = live.keys, live.record
    if _measures_previous(live, p):
        a = ring.answer
        return ring.previous.epoch, a.prev_keys_ms, a.prev_c2s_base, a.prev_s2c_base
    return ring.epoch, current_since(live), rec.key_c2s_base, rec.key_s2c_base


def sealing_since(live: Live, p: Policy) -> int:
    return sealing(live, p)[1]


def measured(live: Live, p: Policy) -> tuple[int, int]:
    """(``sealing_since``, ``messages``) of the measured epoch, from one
    ``sealing`` (a restart asks each restored session: issue 15)."""
    _e, since, c2s, s2c = sealing(live, p)
    return since, _used(live, c2s, s2c)


def messages(live: Live, p: Policy | None = None) -> int:
    """Messages sealed under the measured epoch (without a policy: the
    current one), the larger direction."""
    if p is None:
        rec = live.record
        return _used(live, rec.key_c2s_base, rec.key_s2c_base)
    _e, _since, c2s, s2c = sealing(live, p)
    return _used(live, c2s, s2c)


def wants_rekey(live: Live, now: int, p: Policy) -> bool:
    """FLAG_REKEY on what the gateway sends, and the only time it accepts a
    new rekey: the current keys are old or worn, or the operator asked; not
    while a rekey awaits its confirmation (the client is answering one)."""
    if not live.keys.confirmed:
        return False
    return (live.rekey_requested or now - current_since(live) >= p.rekey_after_ms
            or messages(live) >= p.rekey_after_messages)


def expired(live: Live, now: int, p: Policy) -> bool:
    """The keys the gateway seals under are past reject_after_*."""
    _e, since, c2s, s2c = sealing(live, p)
    return now - since >= p.reject_after_ms or _used(live, c2s, s2c) >= p.reject_after_messages
