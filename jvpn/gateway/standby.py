"""The session table's writes for sessions this gateway does not serve at
the moment: remote entries of sessions another gateway owns (the gate's
jvpn_remote map, not a sessions-map element: docs/cluster.md "Remote
sessions"), a session parked for a handover, every session when the lease
is not certainly alive (fenced) or the gateway stops. A mixin of
:class:`jvpn.gateway.table.SessionTable`: the table stays the one writer of
records, elements and state events; this only groups the cluster-side half."""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING

from jvpn.codes import EventType, Reason
from jvpn.errors import JvpnError
from jvpn.keys import KeyRing, ring_for
from jvpn.session import Event, IllegalTransition, SessionRecord, State, apply
from jvpn.store import StoreError

if TYPE_CHECKING:
    from jvpn.gateway.table import Live


class StandbyWrites:
    def park(self, live: Live) -> int:
        """The owner's first half of a handover: no sender of ours is left
        (a floor write in flight has ended), our element becomes a standby
        (no data passes here any more) and the replay ceiling is settled.
        Returns the highest client counter seen, the next owner's floor."""
        exact = live.retire()
        live.installed, live.parked = False, True
        self._stop_data(live)
        sid = live.record.session_id
        if live.blind_epoch is not None:
            # Never served since a crash: its floor is the crashed holder's
            # ceiling, up to a block above the client's counters, not what
            # was delivered. Handed over, it would start the next owner's
            # window there and refuse every message of the client, its
            # reattach requests included. The store keeps that ceiling (not
            # exact): the next owner, blind too, starts above the counter of
            # the client's proven path response (jvpn/gateway/ceiling.py).
            return max(self.gate.counter_top(sid), live.record.c2s_floor)
        self._settle(sid, exact)
        return max(self.gate.counter_top(sid), exact)

    def _settle(self, sid: int, exact: int) -> None:
        try:
            self.store.settle_replay_ceiling(sid, exact)
        except StoreError:
            pass  # the higher ceiling stays: safe, a restart may refuse up to a block

    def settle_all(self) -> None:
        """At a stop, after the data loops ended: each session's exact replay
        ceiling, so a restart (or the next owner) strands nobody."""
        for sid, live in self.sessions.items():
            exact = live.retire()
            if live.blind_epoch is None:  # a blind one's floor is not exact (park)
                self._settle(sid, exact)

    def stand_by(self, rec: SessionRecord, keys: KeyRing | None = None) -> None:
        """Another gateway owns it: a remote entry lets the client's reattach
        reach us (a handoff), never its data. ``keys``: None reads the
        store's (a key ring: mid-rekey, both epochs). An element of ours for
        the session, if any, is the caller's to remove (after this: the
        client's reattach always finds one of the two)."""
        if keys is None:
            try:
                got = self.store.get(rec.session_id)
            except StoreError:
                return  # the next sweep tries again
            if got is None:
                return
            try:
                keys = ring_for(got[0], got[1]).loaded(self.clock_ms())  # an ended overlap: ended
            except ValueError as e:  # not the record's keys: no standby (next sweep: again)
                self.events.emit(EventType.DAEMON_ERROR, Reason.STORE_RECORD_UNREADABLE,
                                 rec.session_id, where="standby", detail=str(e))
                return
        try:
            self.gate.put_remote(rec.session_id, keys)
        except JvpnError as e:  # the remote map is full: not stood by (next sweep: again)
            self.events.emit(EventType.DAEMON_ERROR, Reason.OS_ERROR, rec.session_id,
                             where="remote entry", detail=str(e))
            return
        self.standby[rec.session_id] = (keys, rec.owner)
        self.standby_inner[rec.session_id] = _packed(rec.inner_addr)

    def drop_standby(self, sid: int) -> None:
        self.stand_down(sid)

    def stand_down(self, sid: int) -> bool:
        """Forget our standby of ``sid`` and remove its remote entry (an
        element of ours, if any, is the caller's: it now serves the
        session); False if there was none."""
        self.standby_inner.pop(sid, None)
        if self.standby.pop(sid, None) is None:
            return False
        self.gate.remove_remote(sid)
        return True

    def remove_stale(self) -> int:
        """Gate elements of sessions not served here, and remote entries of
        sessions not stood by here."""
        stale = self.gate.ids() - set(self.sessions)
        for sid in stale:
            self.gate.remove(sid)
        gone = self.gate.remote_ids() - set(self.standby)
        for sid in gone:
            self.gate.remove_remote(sid)
        return len(stale) + len(gone)

    def fence(self) -> None:
        """Our lease is not certainly alive: every element of ours leaves the gate."""
        self.fenced = True
        for live in self.sessions.values():
            if live.installed:
                live.retire()  # another gateway may take it: no sender of ours is left
                live.installed, live.parked = False, True
                self._stop_data(live)

    def unfence(self) -> None:
        self.fenced = False  # elements come back one by one (follower: follow/sweep)

    def stop_passing(self) -> None:
        """On a cluster gateway's stop: another gateway may take our sessions
        at once, so our senders end and our elements stop passing data first;
        then the exact replay ceilings (the next owner starts above them)."""
        for live in self.sessions.values():
            live.retire()
            if live.installed:
                self._stop_data(live)
        self.settle_all()

    def _stop_data(self, live: Live) -> None:
        """Our element of the session passes no data any more: a standby, or
        (it cannot be written: a record out of the element's range) none at
        all. One session's failure never stops a fence's loop (review k18r4 #1)."""
        try:
            self.gate.standby(live.record, live.keys)
        except (ValueError, OverflowError, JvpnError, OSError) as e:
            sid = live.record.session_id
            self.gate.remove(sid)  # fail closed: no element, no data
            self.events.emit(EventType.DAEMON_ERROR, Reason.OS_ERROR, sid,
                             where="standby element", detail=str(e))

    def end_remote(self, sid: int, src, now_ms: int, detail: str) -> None:
        """A session another gateway owns, ended on its client's verified
        TERMINATE (jvpn/gateway/client_stop.py, review R3 #5): through
        ``commit`` like every record change (compare-and-swap on the
        version, our standby element removed, SessionStateChange and
        SessionTerminated), and the owner's watch drops the session.
        Fencing: the owner's own writes race ours on the version and one
        wins; if the owner wins nothing changed here (TransitionRejected)."""
        keys = self.standby.get(sid, (None, ""))[0]
        try:
            got = self.store.get(sid)
            if got is None or got[0].state is State.TERMINATED or keys is None:
                return  # already ended (or no longer stood by): nothing to write
            rec = got[0]
            new, tr = apply(rec, Event.CLIENT_STOP, now_ms)
            self.commit(rec, new, keys, [(new, tr)], detail=f"{detail} (from {src})")
            self.drop_standby(sid)  # ended: nothing of it reaches us any more
        except (StoreError, IllegalTransition) as e:
            self.events.emit(EventType.TRANSITION_REJECTED,
                             getattr(e, "reason_code", Reason.OWNERSHIP_CONFLICT), sid,
                             detail=f"{detail}: not ended here ({e}); its owner keeps it "
                                    "until its TTL")


def _packed(inner_addr: str) -> bytes:
    """A standby record's inner IPv4, packed as Live.inner; a store value
    that is not one matches no peer."""
    try:
        return ipaddress.IPv4Address(inner_addr).packed
    except ValueError:
        return b""
