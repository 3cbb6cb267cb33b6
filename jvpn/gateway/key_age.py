"""How old a session's keys are, and what the key policy makes of it
(issue 13, docs/protocol.md "Rekey"; pure functions of a live session, the
clock and the policy). Age: from the record's ``keys_ms`` (0: the
handshake's keys, ``created_ms``). Messages: counters either way minus the
epoch's base counters (``key_c2s_base`` / ``key_s2c_base``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from jvpn.policy import Policy
from jvpn.session import State

if TYPE_CHECKING:
    from jvpn.gateway.table import Live

# states whose keys the timers hold to reject_after_* (a TERMINATED one is gone)
EXPIRING = (State.ATTACHED, State.VOLATILE, State.RECOVERING, State.DEGRADED)


def current_since(live: Live) -> int:
    rec = live.record
    return rec.keys_ms or rec.created_ms


def sealing_since(live: Live) -> int:
    """Where the expiry counts from: the current epoch's making. While a
    committed rekey awaits the client's first message under it, the
    gateway still seals under the previous epoch; that wait is bounded by
    the new epoch's own reject_after_ms (a client that never uses the keys
    it asked for meets KeyExpired then), so a session that asked for its
    rekey is not expired between the commit and the confirmation (from
    DEGRADED, a rekey's REKEY_OK would otherwise be undone at the next
    tick). Attempts per epoch are bounded (max_rekey_attempts)."""
    return current_since(live)


def messages(live: Live) -> int:
    """Messages sealed under the current epoch, the larger direction."""
    rec = live.record
    s2c = live.channel.counter.upcoming - 1 - rec.key_s2c_base
    c2s = live.ceiling.floor - 1 - rec.key_c2s_base
    return max(s2c, c2s, 0)


def wants_rekey(live: Live, now: int, p: Policy) -> bool:
    """FLAG_REKEY on what the gateway sends: the current keys are old or
    worn, or the operator asked; not while a rekey awaits its confirmation
    (the client is answering one)."""
    if not live.keys.confirmed:
        return False
    return (live.rekey_requested or now - current_since(live) >= p.rekey_after_ms
            or messages(live) >= p.rekey_after_messages)


def expired(live: Live, now: int, p: Policy) -> bool:
    """The keys the gateway seals under are past reject_after_*."""
    return (now - sealing_since(live) >= p.reject_after_ms
            or messages(live) >= p.reject_after_messages)
