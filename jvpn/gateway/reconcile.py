"""Restart: the store is the truth, the gate's maps follow it.

A mixin of :class:`jvpn.gateway.daemon.Gateway` (its table, store, follower
and incidents): every live store session is projected into the maps, every
map element without a store session is removed, and a session caught
RECOVERING (its path challenge died with the old process) goes to DEGRADED
so that its client's next reattach is served.
"""

from __future__ import annotations

import gc
import ipaddress
import logging
import time

from jvpn.codes import EventType, Reason
from jvpn.config import ATTEMPTS_KEPT
from jvpn.errors import JvpnError
from jvpn.fastip import ipv4_packed
from jvpn.gate.batch import BatchNotWritten
from jvpn.gateway import dated_ahead
from jvpn.gateway.idle_due import idle_due_at
from jvpn.gateway.new_session import unconfirmed_expired
from jvpn.gcpause import paused_gc
from jvpn.keys import KeyRing, ring_for
from jvpn.session import Event, State
from jvpn.store import Stored, Unreadable

log = logging.getLogger(__name__)
PROGRESS_EVERY = 100_000  # sessions between two reconcile log lines
FREEZE_FROM = 10_000  # sessions restored from which the pass's objects are frozen (gc)


def _ring(rec, raw: bytes) -> KeyRing:
    """The stored ring, only if it is the record's (raises Unreadable: the
    session is not served, one STORE_RECORD_UNREADABLE DaemonError)."""
    try:
        return ring_for(rec, raw)
    except ValueError as e:
        raise Unreadable(f"session {rec.session_id:016x}: {e}") from None


def _by_peer(attempts: list[Stored]) -> dict:
    """The attempts by their peer's inner address (none recorded, or no
    text: each alone, and its own failure to read: review k19r3 F2)."""
    peers: dict = {}
    for stored in attempts:
        rec = stored.record
        addr = rec.inner_addr
        peers.setdefault(addr if addr and type(addr) is str else rec.session_id,
                         []).append(stored)
    return peers


def _inner_packed(addr) -> bytes:
    """A record's inner IPv4, packed (ValueError if it is not one)."""
    fast = ipv4_packed(addr)
    return fast if fast is not None else ipaddress.IPv4Address(addr).packed


def _freeze_if_large(restored: int) -> None:
    """After a pass that restored many sessions: what it made leaves the
    cyclic collector's view (gc.freeze), so later collections (an operator's
    listing makes a million rows) no longer walk a million idle sessions
    each time. A restored session's objects hold no cycle (a test drops
    sessions and the collector finds nothing), so they are still freed, by
    their reference counts, when the session goes; a cycle that was garbage
    already at the freeze stays (made once, at the start)."""
    if restored >= FREEZE_FROM:
        gc.freeze()


class TooManySessions(JvpnError):
    """The store holds more sessions owned here than MaxSessions: a start
    that served only some would leave the rest orphaned (attached, ours, with
    no element, never expired), so it does not start."""


class Reconcile:
    def reconcile(self, progress_every: int = PROGRESS_EVERY) -> None:
        """Store is the truth; the maps follow it (no session lost, none left).
        One pass over the store (Store.restorable), element writes batched
        (jvpn/gate/batch.py); a log line every ``progress_every`` sessions.

        All or nothing: a pass that does not end (a page read fails, a batch
        of elements is not written, more sessions of ours than MaxSessions)
        fails the start and removes nothing. A record whose secrets, floor
        or ceiling do not read costs that one session (a DaemonError). After
        a complete pass, the claims records dated ahead left are lowered
        where their evidence allows (jvpn/gateway/dated_ahead.py)."""
        started, cpu = time.monotonic(), time.process_time()
        with self.control, paused_gc():  # a few objects a session, all kept
            # the timer heap built once, after the pass (each restored session
            # is due at its own time, not at the first tick)
            with (self.table.timers.filling(), self.table.batched_writes(),
                  dated_ahead.collected(self.store) as seen):
                kept, others = self._restore_own(progress_every, started)
                self._stand_by_others(others)
            _freeze_if_large(kept + len(others))
            removed = self.table.remove_stale()  # only after a complete pass
            dated_ahead.release_claims(self.store, seen, self.clock_ms(), self.events,
                                       self.incidents)
            seconds = round(time.monotonic() - started, 3)
            # the process's CPU seconds too (every thread): on a shared
            # machine the wall time moves with the others' load far more
            self.events.emit(EventType.RECONCILED, Reason.OK, sessions=kept,
                             removed_from_maps=removed, seconds=seconds,
                             cpu_s=round(time.process_time() - cpu, 3))
        if kept + len(others) >= progress_every:
            log.info("reconcile: %d sessions restored in %.1f s", kept, seconds)

    def _restore_own(self, progress_every: int, started: float) -> tuple[int, list[Stored]]:
        """Our sessions restored, up to MaxSessions (more: TooManySessions,
        once the pass has counted them all); others' returned for later, so
        that their standby elements never take the room of one of ours."""
        kept = over = seen = 0
        others: list[Stored] = []
        attempts: list[Stored] = []  # unconfirmed: after the others of ours
        for stored in self.store.restorable():
            seen += 1
            if stored.problem is not None:
                self.incidents.report("reconcile", stored.problem)
            elif not self.ownership.owns(stored.record):
                if stored.record.state is not State.TERMINATED:  # an ended one stays ended
                    others.append(stored)
            elif not stored.record.confirmed and stored.record.state is not State.TERMINATED:
                attempts.append(stored)
            elif stored.record.state is not State.TERMINATED and (over or self.table.full()):
                over += 1  # counted, not restored: the start fails below
            else:
                kept += self._restore_one(stored)
            if seen % progress_every == 0:
                log.info("reconcile: %d sessions read, %d restored, %.1f s",
                         seen, kept, time.monotonic() - started)
        if over:
            raise TooManySessions(
                f"the session store holds {len(self.table.sessions) + over} sessions owned by "
                f"this gateway, more than its MaxSessions ({self.table.max_sessions()}): raise "
                "MaxSessions in the config (beyond the gate's capacity, attach again with a "
                "larger --max-sessions)")
        return kept + self._restore_attempts(attempts), others

    def _restore_attempts(self, attempts: list[Stored]) -> int:
        """Handshakes' sessions awaiting confirmation, once the confirmed
        ones are back: each peer's newest first (its initiation's
        timestamp), restored as admission would have kept them (review
        k19r1 R2): ATTEMPTS_KEPT a peer at most; at capacity one attempt,
        and only for a peer holding a session here (its one excess:
        jvpn/gateway/capacity.py); expired ones not (restored, they would
        end at the next tick). The others end, as an unconfirmed session
        ends (its client's retry is a new handshake), never a failed start.
        Peers holding no session here come first (review k19r3 F1): they
        have only the room below MaxSessions, a peer holding one has its
        excess too, so which attempts come back does not hang on the
        store's order."""
        kept = 0
        now = self.clock_ms()
        for inner, peer in sorted(self._attempt_groups(attempts), key=self._holds_session):
            peer.sort(key=lambda stored: stored.record.handshake_ns, reverse=True)
            for n, stored in enumerate(peer):
                rec = stored.record
                if (n < ATTEMPTS_KEPT and not unconfirmed_expired(rec, now)
                        and self._attempt_fits(inner)):
                    kept += self._restore_one(stored)
                else:
                    self.table.forget(rec.session_id)
        return kept

    def _attempt_groups(self, attempts: list[Stored]) -> list[tuple[bytes | None, list[Stored]]]:
        """(the peer's inner IPv4 packed, its attempts); a peer address that
        does not read costs its attempts, reported, not the start (review
        k19r3 F2: it raised out of the reconcile)."""
        groups = []
        for peer in _by_peer(attempts).values():
            addr = peer[0].record.inner_addr
            try:
                groups.append((_inner_packed(addr) if addr else None, peer))
            except (ValueError, TypeError) as e:
                for stored in peer:
                    self.incidents.report("reconcile", Unreadable(
                        f"session {stored.record.session_id:016x}: inner address: {e}"))
        return groups

    def _holds_session(self, group: tuple[bytes | None, list[Stored]]) -> bool:
        inner = group[0]
        return inner is not None and self.table.for_inner(inner) is not None

    def _attempt_fits(self, inner: bytes | None) -> bool:
        """Below capacity any; at capacity the first attempt of a peer
        holding a confirmed session here (admission would have let it
        replace an attempt, not add one: room_for is a new handshake's)."""
        table = self.table
        return not table.full() or (inner is not None and table.for_inner(inner) is not None
                                    and not table.attempts_of(inner))

    def _restore_one(self, stored: Stored) -> int:
        """1 when the session is served here; a failure is its own only (a
        batch of elements not written is the whole start's)."""
        try:
            rec = stored.record
            return int(self._restore(rec, _ring(rec, stored.secrets), stored))
        except BatchNotWritten:
            raise
        except Exception as e:  # noqa: BLE001 - one session must not block the start
            self.incidents.report("reconcile", e)
            return 0

    def _stand_by_others(self, others: list[Stored]) -> None:
        """Remote entries for other gateways' sessions, after ours (their
        own map, jvpn_remote: they never take the room of one of ours; one
        the remote map has no room for is reported by stand_by)."""
        for stored in others:
            try:
                rec = stored.record
                self.table.stand_by(rec, _ring(rec, stored.secrets).loaded(self.table.clock_ms()))
            except BatchNotWritten:
                raise
            except Exception as e:  # noqa: BLE001 - one session must not block the start
                self.incidents.report("reconcile", e)

    def _restore(self, rec, keys: KeyRing, stored: Stored) -> bool:
        """One stored session of ours after a start: served here (True), or
        ended, or lost to another gateway meanwhile (reclaim)."""
        table = self.table
        if rec.state is State.TERMINATED:
            table.forget(rec.session_id)
            return False
        rec = self.follower.reclaim(rec)
        if rec is None:
            return False
        live = table.install(rec, keys, _inner_packed(rec.inner_addr),
                             first_counter=stored.floor, stored_ceiling=stored.ceiling,
                             gate_window=True)
        if rec.state is State.RECOVERING:
            # Its path challenge lived in the memory of the process that
            # ended: nobody can answer it. Recovery fails now (DEGRADED, the
            # candidate dropped), so the client's next reattach starts anew.
            table.transition(live, Event.REATTACH_INVALID, candidate=None,
                             detail="path challenge lost in a restart")
        self._first_due(live)
        return True

    def _first_due(self, live) -> None:
        """The restored session is due when its timers can first fire, not
        at the first tick (issue 15: at 1M the first ticks checked every
        restored session, seconds of the control lock): the time its check
        would have rescheduled it at (jvpn/gateway/timer_checks.py
        ``_next_due``, a lower bound of every timer's: key expiry, the
        heartbeat window, the lifetime, a pending write at the next tick),
        so the same checks run, none of them later than due."""
        sid = live.record.session_id
        if self.table.get(sid) is not live:
            return
        now, timer_now = self.clock_ms(), self.table.timer_ms()
        self.table.timers.observe(now, timer_now)  # before the first tick: its timer-clock times
        due = idle_due_at(live, now, timer_now, self.policy)  # most: the record's
        if due is None:
            due, now, timer_now = self._next_due(live), self.clock_ms(), self.table.timer_ms()
        at, timer_at = due or (None, None)
        due_now = (at is not None and at <= now + 1)
        if due_now or (timer_at is not None and timer_at <= timer_now + 1):
            return  # due now (a write to retry): the next tick (its touch at the install)
        self.table.timers.replace(sid, at, timer_at)
