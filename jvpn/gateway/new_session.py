"""New sessions from handshakes: a mixin of jvpn/gateway/table.py's
SessionTable (its store, writes, events, ``_live`` and ``put_new``).

A handshake's durable writes (docs/protocol.md "A handshake's durable
writes"): the initiation's claim, the record and the first send-counter
floor, in one transaction where the store allows (SQLite), and with a
group commit (jvpn/store/group_commit.py) shared by the handshakes that
arrive together. The session exists here, and its response goes out, only
once they are durable."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from jvpn.codes import EventType, Reason
from jvpn.config import (
    ANSWERABLE_PAST_NS,
    ATTEMPTS_KEPT,
    UNCONFIRMED_TTL_MS,
)
from jvpn.gateway.capacity import AttemptAnswerable
from jvpn.gateway.ceiling import REPLAY_BLOCK
from jvpn.keys import KeyRing, SessionKeys
from jvpn.session import SessionRecord
from jvpn.store import NOTHING_PREWRITTEN, HandshakeWrites, Prewritten, StoreError
from jvpn.store.group_commit import GroupCommit
from jvpn.tunnel import RESERVE_BLOCK

if TYPE_CHECKING:
    from jvpn.gateway.table import Live

# What a handshake's transaction reserves with the record: the send-counter
# floor a channel's first counter (1) asks for, so the session's first
# reply waits for no write of its own.
FIRST_FLOOR = 1 + RESERVE_BLOCK
# And what its confirmation writes: the replay ceiling a client's first
# message (counter 1) asks for. Until that write is durable the session
# delivers nothing (jvpn/gateway/datapath.py), so its ReplayCeiling may
# count on it from the start: the first message waits for no write of its own.
FIRST_CEILING = 1 + REPLAY_BLOCK


def unconfirmed_expired(rec: SessionRecord, now_ms: int) -> bool:
    """A handshake's session its initiator never used, past its TTL: it ends
    (jvpn/gateway/control.py expire_unconfirmed) and a new attempt may take its room.
    One made more than the TTL in this gateway's future too (review k19r1
    R3): its age is unknown (this clock stepped back, another gateway's is
    far off, a damaged store), and unknown it would never end, its
    initiation's timestamp refusing every newer-looking one of its peer's
    as a replay; the attempt fails closed, not its peer."""
    return abs(now_ms - rec.created_ms) > UNCONFIRMED_TTL_MS


def initiated_within_window(attempt: SessionRecord, new: SessionRecord) -> bool:
    """``new``'s initiation went out inside the window in which the client
    takes the answer to ``attempt``'s: by the client's own timestamps,
    compared with each other only, never with a gateway's clock."""
    return new.handshake_ns - attempt.handshake_ns < ANSWERABLE_PAST_NS


class PeerRevoked(StoreError):
    """A handshake admitted under peers a reload has since changed: its
    writes were queued meanwhile (group commit), the reload revoked only
    the sessions it saw. Refused on the handshake's one refusal path."""

    reason = Reason.PEER_REVOKED


class NewSessions:
    # the peer (public key, packed inner IPv4) is still configured: the
    # daemon's (jvpn/gateway/revocation.py); a table alone entitles any
    peer_entitled: Callable[[bytes, bytes], bool] = staticmethod(lambda peer, inner: True)

    def group_commit(self, lock: threading.RLock,
                     report: Callable[[str, Exception], None]) -> None:
        """Handshakes' writes group-committed from now on (`gateway up`), a
        SQLite store only; their continuations run under ``lock`` (the
        gateway's control lock). Without this, each is written at once."""
        if getattr(self.store, "folds_handshake", False):
            self.writes.close()
            self.writes = GroupCommit(self.store, deliver=_under(lock), report=report)

    def create(self, rec: SessionRecord, keys: SessionKeys, inner: bytes, tr, *,
               confirmed: bool = True) -> Live:
        """A new session from a handshake (raises StoreError: nothing changed).
        Unconfirmed (the record says so), it is not routed: downstream stays put."""
        rec = rec if confirmed else rec.with_(confirmed=False)
        self.refuse_if_full()  # raises SessionsFull (a StoreError): nothing changed
        self.store.create(rec, keys.pack())  # epoch 0: the version-1 value (KeyRing.unpack)
        return self._made(rec, keys, inner, tr, NOTHING_PREWRITTEN)

    def start_new(self, peer: bytes, timestamp_ns: int, rec: SessionRecord, keys: SessionKeys,
                  inner: bytes, tr, done: Callable[[Live | StoreError | None], None], *,
                  answer: bytes | None = None) -> None:
        """A handshake's new session, unconfirmed: its writes (the claim,
        the record, the first send-counter floor: jvpn/store
        ``HandshakeWrites``) through ``writes`` (at once, or group-committed),
        and only once they are durable the session here, then ``done(live)``;
        ``done(None)``: the claim found a replay; ``done(StoreError)``:
        not written, nothing here. Raises SessionsFull (AttemptAnswerable
        too) or AttemptInProgress (jvpn/gateway/capacity.py): nothing
        queued, nothing changed. The peer's oldest attempt ends once this
        one's writes are durable if it holds ATTEMPTS_KEPT of them, or at
        capacity once its answer is past (``_replaced``); not written, it
        stays (review E L2: it ended at the queueing, and a failed write
        left the peer with neither). ``answer``: the response the caller
        sends once it is made, kept with the attempt until it is confirmed
        (``answers``: sent again at capacity, review k19r1 R4)."""
        rec = rec.with_(confirmed=False)
        self.refuse_if_full(inner)
        made_ms = self.timer_ms()  # its age, made here (attempt_expired)
        w = HandshakeWrites(peer, timestamp_ns, rec, keys.pack(), FIRST_FLOOR)
        replaced = self._replaced(inner, rec)
        self.pending_new += 1
        self.writing.add(inner)

        def written(result: Prewritten | StoreError | None) -> None:
            self.pending_new -= 1
            self.writing.discard(inner)
            if result is None or isinstance(result, StoreError):
                done(result)
                return
            if not self.peer_entitled(peer, inner):  # a reload removed it meanwhile
                self._unwritten(rec)
                done(PeerRevoked("the peer was removed or changed by a reload"))
                return
            # durable: now the older attempt ends, first (its element's
            # room is the new one's); while queued it still counted, so
            # full() was one stricter meanwhile, never looser
            self._end_attempt(replaced)
            try:
                live = self._made(rec, keys, inner, tr, result, FIRST_CEILING)
            except StoreError as e:  # the gate full: the record is gone again
                done(e)
                return
            if not live.confirmed:
                self.made_ms[rec.session_id] = made_ms
                if answer is not None:
                    self.answers[rec.session_id] = answer
            done(live)
        try:
            self.writes.handshake(w, written)
        except StoreError:  # a stopped writer: refused, the previous attempt stays
            self.pending_new -= 1
            self.writing.discard(inner)
            raise

    def _replaced(self, inner: bytes, new: SessionRecord) -> Live | None:
        """The peer's attempt the new one replaces: its oldest, when it holds
        as many as its client still takes answers to (ATTEMPTS_KEPT), or at
        capacity, where its attempts do not grow (one over MaxSessions per
        peer at most: jvpn/gateway/capacity.py), once the client takes its
        answer no more; before, AttemptAnswerable (review k18rall F2: its
        late answer, taken, named a session gone). The caller checked the new
        initiation is newer than every one of them (handshakes.py)."""
        attempts = self.attempts_of(inner)
        if not attempts or (len(attempts) < ATTEMPTS_KEPT and not self.full()):
            return None
        oldest = attempts[0]  # the newer ones are answerable if it is
        # the client's initiations newer than the oldest's, this one included
        newer = len(attempts) + self.refused.get(inner, 0)
        if newer < ATTEMPTS_KEPT and self.answerable(oldest, new):
            self.refused[inner] = self.refused.get(inner, 0) + 1
            raise AttemptAnswerable(
                f"the gateway holds its MaxSessions ({self.max_sessions()}) sessions and "
                "the peer's previous attempt may still be answered: no new one until "
                "it is confirmed or past its answer window", self._answer_again(attempts, new))
        return oldest

    def answerable(self, attempt: Live, new: SessionRecord) -> bool:
        """The client may still take the answer to ``attempt``'s initiation:
        it has not expired, and ``new``'s initiation went out inside that
        answer's window (the client's timestamps)."""
        return (not self.attempt_expired(attempt, new.created_ms)
                and initiated_within_window(attempt.record, new))

    def attempt_expired(self, attempt: Live, now_ms: int) -> bool:
        """Past its TTL (unconfirmed_expired). One made in this process ages
        by the timer clock (made_ms): a wall clock stepped back more than
        the TTL ended every live attempt (review k19r3), one stepped forward
        too. One restored from the store has its stored wall-clock
        ``created_ms`` alone (the k19r1 R3 rule: dated more than the TTL
        ahead, it expires). ``now_ms``: the gateway's wall clock."""
        made = self.made_ms.get(attempt.record.session_id)
        if made is None:
            return unconfirmed_expired(attempt.record, now_ms)
        return self.timer_ms() - made > UNCONFIRMED_TTL_MS

    def _answer_again(self, attempts: list, new: SessionRecord) -> bytes | None:
        """The peer's newest attempt's response, for the refused initiation's
        source if it is that attempt's: the client keeps that initiation
        (it sent fewer than ATTEMPTS_KEPT since the oldest's) within its
        window, takes the answer and confirms from there (a confirmation
        from another source is refused: control.py). Only its client,
        holding the initiation's ephemeral key, can open it; 97-130 bytes
        for an initiation of 168 or more: no amplification."""
        newest = attempts[-1]
        if newest.record.binding != new.binding:
            return None
        return self.answers.get(newest.record.session_id)

    def _end_attempt(self, attempt: Live | None) -> None:
        """The peer's previous attempt ends quietly, unless it ended already
        or was confirmed while the new one's writes were queued (the
        client's late answer: a session now, which the new one's own
        confirmation ends, as any earlier session of the peer). One whose
        confirmation is queued or in flight is left to it (the same group
        commit may hold both, and the continuations run in queue order:
        review k16r1): a confirmation that lands makes it a session, one
        that fails ends it then (``_confirm_failed``)."""
        if (attempt is None or attempt.confirmed
                or self.sessions.get(attempt.record.session_id) is not attempt):
            return
        if attempt.confirming:
            attempt.superseded = True
            return
        self.forget(attempt.record.session_id)

    def _confirm_failed(self, live: Live) -> None:
        """Its confirmation was not recorded: an attempt again, which a
        newer attempt's commit replaced meanwhile, then ends now."""
        live.confirming = False
        if live.superseded and self.sessions.get(live.record.session_id) is live:
            self.forget(live.record.session_id)

    def _unwritten(self, rec: SessionRecord) -> None:
        """Its written record goes (a refused delete: retried every tick)."""
        try:
            self.store.delete(rec.session_id, rec.version)
        except StoreError:
            self.undeleted[rec.session_id] = rec.version

    def confirm(self, live: Live, done: Callable[[bool], None] | None = None) -> None:
        """The initiator proved the new session's path: recorded first, with
        the replay ceiling its first messages are delivered under (one
        transaction; group-committed), then the downstream goes to it, then
        ``done(True)``. Not recorded: ``done(False)`` (the next message
        retries), or without ``done`` a StoreError (at once, unless
        group-committed)."""
        rec = live.record
        if rec.confirmed:  # restored so, or confirmed before
            self._route_confirmed(live, done)
            return
        new = rec.with_(confirmed=True, version=rec.version + 1)

        def written(result) -> None:
            if isinstance(result, StoreError):
                self._confirm_failed(live)
                if done is None:
                    raise result
                done(False)
                return
            live.confirming = False
            if self.sessions.get(rec.session_id) is not live:  # forgotten meanwhile
                self.forgotten_then_confirmed(rec.session_id, new.version)
                if done is not None:
                    done(False)
                return
            self._project(new, live.keys, ())
            self._route_confirmed(live, done)
        live.confirming = True
        try:
            self.writes.confirm(rec, new, FIRST_CEILING, written)
        except StoreError:  # a stopped writer: not queued
            self._confirm_failed(live)
            raise

    def _route_confirmed(self, live: Live, done: Callable[[bool], None] | None) -> None:
        self._confirmed(live)  # live.confirmed, and its indexes (jvpn/gateway/indexes.py)
        self._route(live)
        if done is not None:
            done(True)

    def _made(self, rec: SessionRecord, keys: SessionKeys, inner: bytes, tr,
              prewritten: Prewritten, ceiling_ahead: int = 0) -> Live:
        """A stored new session in memory, its element and its event.
        ``ceiling_ahead``: the replay ceiling its confirmation writes
        (``confirm``), before which it delivers nothing."""
        confirmed = rec.confirmed
        live = self._live(rec, KeyRing.of(keys), inner, stored_ceiling=(0, True),
                          routed=confirmed, prewritten=prewritten,
                          ceiling_ahead=ceiling_ahead)
        live.confirmed = confirmed
        self.put_new(live, rec)
        self.events.emit(EventType.SESSION_STATE_CHANGE, tr.reason_code, rec.session_id,
                         rec.binding, version=rec.version, previous_state=tr.previous.name,
                         new_state=tr.new.name)
        return live


def _under(lock: threading.RLock) -> Callable[[Callable[[], None]], None]:
    def deliver(fn: Callable[[], None]) -> None:
        with lock:
            fn()
    return deliver
