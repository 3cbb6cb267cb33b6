"""Restart: the store is the truth, the gate's maps follow it.

A mixin of :class:`jvpn.gateway.daemon.Gateway` (its table, store, follower
and incidents): every live store session is projected into the maps, every
map element without a store session is removed, and a session caught
RECOVERING (its path challenge died with the old process) goes to DEGRADED
so that its client's next reattach is served.
"""

from __future__ import annotations

import ipaddress
import logging
import time

from jvpn.codes import EventType, Reason
from jvpn.gate.element import GateFull
from jvpn.keys import KeyRing, ring_for
from jvpn.session import Event, State
from jvpn.store import Stored, Unreadable

log = logging.getLogger(__name__)
PROGRESS_EVERY = 100_000  # sessions between two reconcile log lines


def _ring(rec, raw: bytes) -> KeyRing:
    """The stored ring, only if it is the record's (raises Unreadable: the
    session is not served, one STORE_RECORD_UNREADABLE DaemonError)."""
    try:
        return ring_for(rec, raw)
    except ValueError as e:
        raise Unreadable(f"session {rec.session_id:016x}: {e}") from None


class Reconcile:
    def reconcile(self, progress_every: int = PROGRESS_EVERY) -> None:
        """Store is the truth; the maps follow it (no session lost, none left).
        One pass over the store (Store.restorable), element writes batched
        (jvpn/gate/batch.py); a log line every ``progress_every`` sessions."""
        started = time.monotonic()
        with self.control:
            kept = seen = 0
            try:
                with self.table.batched_writes():
                    for stored in self.store.restorable():
                        seen += 1
                        kept += self._restore_one(stored)
                        if seen % progress_every == 0:
                            log.info("reconcile: %d sessions read, %d restored, %.1f s",
                                     seen, kept, time.monotonic() - started)
            except Exception as e:  # noqa: BLE001 - the last batch (GateFull) or the store
                self.incidents.report("reconcile", e)
            removed = self.table.remove_stale()
            seconds = round(time.monotonic() - started, 3)
            self.events.emit(EventType.RECONCILED, Reason.OK, sessions=kept,
                             removed_from_maps=removed, seconds=seconds)
        if seen >= progress_every:
            log.info("reconcile: %d sessions restored in %.1f s", kept, seconds)

    def _restore_one(self, stored: Stored) -> int:
        """1 when the session is served here; a failure is its own only."""
        try:
            if stored.problem is not None:
                raise stored.problem
            if self.table.full():
                raise GateFull(f"session {stored.record.session_id:016x} not restored: the "
                               f"gateway holds its MaxSessions ({self.table.max_sessions()})")
            rec = stored.record
            return int(self._restore(rec, _ring(rec, stored.secrets), stored))
        except Exception as e:  # noqa: BLE001 - one session must not block the start
            self.incidents.report("reconcile", e)
            return 0

    def _restore(self, rec, keys: KeyRing, stored: Stored) -> bool:
        """One stored session after a start: served here (True), stood by, or gone."""
        table = self.table
        if not self.ownership.owns(rec):
            if rec.state is not State.TERMINATED:
                table.stand_by(rec, keys.loaded(table.clock_ms()))  # an ended overlap stays ended
            return False
        if rec.state is State.TERMINATED:
            table.forget(rec.session_id)
            return False
        rec = self.follower.reclaim(rec)
        if rec is None:
            return False
        live = table.install(rec, keys, ipaddress.IPv4Address(rec.inner_addr).packed,
                             first_counter=stored.floor, stored_ceiling=stored.ceiling,
                             gate_window=True)
        if rec.state is State.RECOVERING:
            # Its path challenge lived in the memory of the process that
            # ended: nobody can answer it. Recovery fails now (DEGRADED, the
            # candidate dropped), so the client's next reattach starts anew.
            table.transition(live, Event.REATTACH_INVALID, candidate=None,
                             detail="path challenge lost in a restart")
        return True
