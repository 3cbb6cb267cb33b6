"""Restart: the store is the truth, the gate's maps follow it.

A mixin of :class:`jvpn.gateway.daemon.Gateway` (its table, store, follower
and incidents): every live store session is projected into the maps, every
map element without a store session is removed, and a session caught
RECOVERING (its path challenge died with the old process) goes to DEGRADED
so that its client's next reattach is served.
"""

from __future__ import annotations

import ipaddress

from jvpn.codes import EventType, Reason
from jvpn.keys import KeyRing, ring_for
from jvpn.session import Event, State
from jvpn.store import Unreadable


def _ring(rec, raw: bytes) -> KeyRing:
    """The stored ring, only if it is the record's (raises Unreadable: the
    session is not served, one STORE_RECORD_UNREADABLE DaemonError)."""
    try:
        return ring_for(rec, raw)
    except ValueError as e:
        raise Unreadable(f"session {rec.session_id:016x}: {e}") from None


class Reconcile:
    def reconcile(self) -> None:
        """Store is the truth; the maps follow it (no session lost, none left)."""
        with self.control:
            kept = 0
            for listed in self.store.list():
                try:
                    got = self.store.get(listed.session_id)
                    if got is not None and self._restore(got[0], _ring(got[0], got[1])):
                        kept += 1
                except Exception as e:  # noqa: BLE001 - one session must not block the start
                    self.incidents.report("reconcile", e)
            removed = self.table.remove_stale()
            self.events.emit(EventType.RECONCILED, Reason.OK, sessions=kept,
                             removed_from_maps=removed)

    def _restore(self, rec, keys: KeyRing) -> bool:
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
                             first_counter=self.store.get_floor(rec.session_id),
                             gate_window=True)
        if rec.state is State.RECOVERING:
            # Its path challenge lived in the memory of the process that
            # ended: nobody can answer it. Recovery fails now (DEGRADED, the
            # candidate dropped), so the client's next reattach starts anew.
            table.transition(live, Event.REATTACH_INVALID, candidate=None,
                             detail="path challenge lost in a restart")
        return True
