"""How many sessions the gate may hold, and the batched element writes of
a restart: a mixin of jvpn/gateway/table.py's SessionTable (its gate,
sessions, standby elements, store and _put)."""

from __future__ import annotations

import contextlib

from jvpn.codes import Reason
from jvpn.gate import abi
from jvpn.gate.element import GateFull
from jvpn.store import StoreError


def default_max_sessions(capacity: int) -> int:
    """MaxSessions when the config names none: the gate's capacity less
    1/64 of it (at least one): a peer holding a session may re-handshake at
    MaxSessions (one session over it, until its confirmation ends the old
    one), and that session needs an element the maps still have."""
    return max(1, capacity - max(1, capacity // 64))


class SessionsFull(StoreError):
    """A new session refused: the gateway holds MaxSessions sessions (or the
    gate's maps are full). A StoreError so that it travels the handshake's
    one refusal path ("nothing changed"), with its own reason code."""

    reason = Reason.GATEWAY_FULL


class AttemptInProgress(StoreError):
    """A peer's new handshake refused while its previous one's writes are
    still queued (a group commit: milliseconds; a client waits at least
    250 ms before its next attempt): one attempt per peer, so that one peer's
    initiations never take more than one more session's room."""

    reason = Reason.RATE_LIMITED


class AttemptAnswerable(SessionsFull):
    """At capacity, a peer's new attempt refused while its client may still
    take the answer to its previous one (review k18rall F2): that attempt's
    room is the only one the peer has, and ending it for the new one would
    leave the client holding an answer to a session gone. The initiation is
    spent (a replay of it is refused), nothing else changes; the client's
    next initiation gets the room once that answer is past
    (jvpn/gateway/new_session.py ``answerable``). ``answer``: that
    attempt's own response, sent again to the refused initiation's source
    (review k19r1 R4: its first copy may be what was lost); None where the
    gateway keeps none (restored after a restart) or the source differs."""

    def __init__(self, detail: str, answer: bytes | None = None):
        super().__init__(detail)
        self.answer = answer


class Capacity:
    pending_new = 0  # handshakes' sessions whose writes are queued (table.py start_new)

    def max_sessions(self) -> int:
        """The gate's element budget: MaxSessions (the attached maps'
        capacity by default, jvpn/gateway/build.py)."""
        return getattr(self.gate, "max_sessions", abi.DEFAULT_MAX_SESSIONS)

    def full(self) -> bool:
        """No room for another session of ours: the sessions served here and
        the new ones whose writes are queued (group commit). Standbys do not
        count: they are other gateways' sessions, remote entries in a map of
        their own (docs/cluster.md), and a cluster's must not crowd out a
        gateway's own (an element the maps have no room for is refused by
        the gate itself: put_new)."""
        return len(self.sessions) + self.pending_new >= self.max_sessions()

    def refuse_if_full(self, inner: bytes | None = None) -> None:
        """``inner``: the handshake's peer (its inner IPv4, packed), which
        may still handshake at capacity if it holds a session here."""
        if inner is not None and inner in self.writing:
            raise AttemptInProgress("the peer's previous handshake is still being written")
        if not self.room_for(inner):
            raise SessionsFull(f"the gateway holds its MaxSessions ({self.max_sessions()}) "
                               "sessions: no new one")

    def room_for(self, inner: bytes | None) -> bool:
        """A new session of this peer (None: of nobody in particular) fits."""
        return not self.full() or self._replaces(inner)

    def _replaces(self, inner: bytes | None) -> bool:
        """The peer holds a session here (confirmed, or an attempt awaiting
        confirmation): its new one takes that one's place (an attempt's once
        its client takes that attempt's answer no more, before which the new
        one is refused AttemptAnswerable: jvpn/gateway/new_session.py; the
        confirmed one's at the confirmation, jvpn/gateway/control.py), so
        a client that restarted or lost its keys is never locked out by the
        others. One excess per peer at most (its confirmed session and one
        attempt), until the confirmation or the attempt's expiry gives it
        back; an element the maps have no room for is still refused (put_new)."""
        return inner is not None and (self.for_inner(inner) is not None
                                      or bool(self.attempts_of(inner)))

    def put_new(self, live, rec) -> None:
        """A new session's first element; the gate full (elements the count
        does not know of: a map another writer filled) ends the session at
        once, stored record included, as if it had never been made."""
        try:
            self._put(live, rec)
        except GateFull as e:
            self.forget(rec.session_id)
            raise SessionsFull(str(e)) from None

    def batched_writes(self) -> contextlib.AbstractContextManager:
        """Element writes gathered into batches until the block ends (a
        restart's reconcile: jvpn/gate/batch.py); a gate without batches
        writes each at once."""
        batched = getattr(self.gate, "batched", None)
        return batched() if batched is not None else contextlib.nullcontext()
