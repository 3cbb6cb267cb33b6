"""A claim a record dated ahead leaves behind (review k21r2 F1), lowered at
a restart on that evidence alone (docs/protocol.md "A record dated ahead").

A record whose ``handshake_ns`` is more than HANDSHAKE_AHEAD_MAX_MS ahead of
its ``created_ms`` is no record to any read (jvpn/store ``_AHEAD_MAX_NS``).
A gateway before k21age that took its initiation also claimed the same
timestamp for its peer (jvpn/store ``claim_initiation``), and that claim
held off the peer's every initiation stamped by a right clock, for as long
as the client's clock had been ahead: years, for a clock years ahead.

The claim is lowered only where all of this holds, each a reason a lower
claim refuses every initiation a gateway of this version could have claimed:
  1. the record is dated ahead (the store's rule: its writer took an
     initiation far ahead of its own clock, which this version refuses);
  2. the peer's claim is exactly that record's ``handshake_ns`` (the store
     compares and swaps in one statement: a claim moved by anyone since is
     left as it is);
  3. that claim is more than HANDSHAKE_AHEAD_MAX_MS ahead of this gateway's
     clock too: no gateway of this version with our clock can have claimed
     it (``Admission.dated_ahead`` refuses it first). A claim within the
     bound may be a real bar: one a capture of the record's own initiation
     made once it was fresh (review k21r2 F3), or one a gateway whose clock
     is ahead of ours made (tests/unit/test_claim_ahead_of_our_clock.py);
     it ends within a day of our clock anyway.
It becomes the record's ``created_ms`` plus HANDSHAKE_AHEAD_MAX_MS: the
newest initiation a gateway of this version, its clock where the writer's
was, could have claimed by then. A record from the past lowers it to the
past (the peer handshakes at once); one made less than a day ago holds its
peer off until a day after its making, never longer.

Not fixed (review k22rall): every other initiation the old gateway took
while the client's clock was ahead becomes fresh again, each in its own
day, once our clock is within a day of its stamp; a capture of one,
replayed then, bars the peer for up to a day at a time the attacker picks
(docs/protocol.md, the third limit).

Only a restart's pass acts on it (the store read once, in whole, under the
control lock), never a read an unauthenticated message causes (a reattach's
get) nor an operator's listing. A crash before the lowering leaves the
claim for the next start (the record is still there); after it, the next
start's compare finds the lowered claim and changes nothing."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from jvpn.codes import EventType, Reason
from jvpn.config import HANDSHAKE_AHEAD_MAX_MS
from jvpn.keys import KeyError_, decode
from jvpn.store import DatedAhead, StoreError

_AHEAD_MAX_NS = HANDSHAKE_AHEAD_MAX_MS * 1_000_000


def lowered_claim(record: DatedAhead, now_ms: int) -> int | None:
    """What the peer's claim may be lowered to if it is still the record's
    ``handshake_ns`` (rules 1 and 3 of the module's; the store checks 2),
    or None: the claim stays."""
    made_ns = record.created_ms * 1_000_000
    if record.handshake_ns - made_ns <= _AHEAD_MAX_NS:  # 1: no evidence
        return None
    if record.handshake_ns - now_ms * 1_000_000 <= _AHEAD_MAX_NS:  # 3: maybe a real bar
        return None
    return made_ns + _AHEAD_MAX_NS


@contextmanager
def collected(store) -> Iterator[list[DatedAhead]]:
    """The records dated ahead the store's reads skip meanwhile (a store
    without the hook: none)."""
    seen: list[DatedAhead] = []
    if not hasattr(store, "on_dated_ahead"):
        yield seen
        return
    store.on_dated_ahead = seen.append
    try:
        yield seen
    finally:
        store.on_dated_ahead = None


def release_claims(store, seen: list[DatedAhead], now_ms: int, events, incidents) -> int:
    """Each claim ``seen`` holds evidence against, lowered where
    ``lowered_claim`` allows and the store's compare finds it unchanged:
    one ``InitiationClaimLowered`` event each. A store that fails is
    reported (DaemonError) and fails nothing else: the next start tries
    again. Returns the claims lowered."""
    lower = getattr(store, "lower_claim", None)
    done = 0
    for record in dict.fromkeys(seen):  # a record read twice: one compare
        to_ns = lowered_claim(record, now_ms)
        peer = _peer(record.peer_key)
        if lower is None or to_ns is None or peer is None:
            continue
        try:
            if not lower(peer, record.handshake_ns, to_ns):
                continue
        except StoreError as e:
            incidents.report("reconcile", e)
            continue
        done += 1
        events.emit(EventType.INITIATION_CLAIM_LOWERED, Reason.STORE_RECORD_UNREADABLE,
                    session_id=record.session_id, peer_key=record.peer_key,
                    claimed_ns=record.handshake_ns, lowered_ns=to_ns,
                    detail="the claim of a record dated ahead (its initiation stamped more "
                    f"than {HANDSHAKE_AHEAD_MAX_MS // 1000} s after its making)")
    return done


def _peer(peer_key) -> bytes | None:
    """The claim's key of a record's ``peer_key``; None for one that does
    not read as a key (no claim is that record's)."""
    try:
        return decode(peer_key) if type(peer_key) is str else None
    except KeyError_:
        return None
