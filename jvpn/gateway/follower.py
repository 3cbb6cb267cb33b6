"""Following the cluster: which sessions this gateway may serve, as the
store says (seed S1 across gateways; docs/cluster.md).

``ClusterFollower`` watches the session records (plus a periodic full
re-read: what a missed watch event would hide), releases a session another
gateway asks for (its element first, then the record), parks a proven
reattach until the owner released, fences this gateway when its lease is not
certainly alive, and registers anew when etcd dropped the lease.
``NullFollower`` is the single gateway: every session is its own, no lease,
no fence. Both change state only through the session table; the ownership
decisions come from jvpn/gateway/ownership.py.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from jvpn.codes import EventType, Reason, Security
from jvpn.events import EventLog
from jvpn.gateway.ownership import (
    Claim,
    ClaimPlan,
    ClusterOwnership,
    LocalOwnership,
    OwnershipError,
    claim_errors,
    handover_errors,
)
from jvpn.gateway.reattach import Reject
from jvpn.gateway.table import Live, SessionTable
from jvpn.keys import KeyRing
from jvpn.session import SessionRecord, State, Transport
from jvpn.store import ClusterStore, GatewayGone, Store, StoreError

HANDOFF_WAIT_MS = 3_000  # a request parked for the owner's release is dropped after this
SWEEP_S = 0.5  # full re-read of the store (what a missed watch event would hide)

Retry = Callable[[bytes, Transport], None]  # run a parked request again (and send its replies)


@dataclass
class Parked:
    """A proven reattach that waits for the owner to release the session."""

    msg: bytes
    src: Transport
    until_ms: int  # on the timer clock (the table's timer_ms): this gateway's wait alone


class NullFollower:
    """A single gateway: every session is its own; no lease, no fence."""

    def __init__(self, *, store: Store, table: SessionTable, gate, ownership: LocalOwnership,
                 events: EventLog, lock: threading.RLock, retry: Retry,
                 clock_ms: Callable[[], int]):
        self.table, self.gate, self.ownership = table, gate, ownership

    def arm(self) -> None:
        self.gate.set_fence(0, 0)  # a cluster gateway's fence must not outlive it here

    def loops(self, stop: threading.Event) -> list[Callable[[], None]]:
        return []

    def publish(self) -> None:
        self.gate.publish_owners(self.ownership.node_id, self.ownership.token,
                                 self.table.remote_owners())

    def may_admit(self) -> bool:
        return True

    def claim(self, rec: SessionRecord, keys: KeyRing, msg: bytes,
              src: Transport) -> SessionRecord | None:
        if rec.session_id not in self.table:
            self.table.adopt(rec, keys)
        return rec

    def reclaim(self, rec: SessionRecord) -> SessionRecord | None:
        return rec

    def check_lease(self) -> None:
        pass

    def expire_parked(self) -> None:
        pass

    def cancel_parked(self, sid: int) -> bool:
        return False

    def sweep_if_due(self) -> None:
        pass

    def stop(self) -> None:
        """After the data loops ended: exact replay ceilings for the restart."""
        self.table.settle_all()


class ClusterFollower:
    def __init__(self, *, store: ClusterStore, table: SessionTable, gate,
                 ownership: ClusterOwnership, events: EventLog, lock: threading.RLock,
                 retry: Retry, clock_ms: Callable[[], int]):
        self.store, self.table, self.gate, self.ownership = store, table, gate, ownership
        self.events, self.lock, self.retry, self.clock_ms = events, lock, retry, clock_ms
        self.waiting: dict[int, Parked] = {}
        self._next_sweep = 0.0

    # ------------------------------------------------------------ lifecycle
    def arm(self) -> None:
        """Before any element of ours is written: the kernel's own fence."""
        self.gate.set_fence(self.ownership.token, self.ownership.deadline_ns())

    def loops(self, stop: threading.Event) -> list[Callable[[], None]]:
        return [lambda: self.store.watch_sessions(self.on_store_record, stop)]

    def publish(self) -> None:
        self.gate.publish_owners(self.ownership.node_id, self.ownership.token,
                                 self.table.remote_owners())

    def stop(self) -> None:
        """Our lease ends with us (the caller revokes it)."""
        self.table.stop_passing()

    def may_admit(self) -> bool:
        return not self.table.fenced and self.ownership.lease_valid()

    # ------------------------------------------------------------ claiming
    def claim(self, rec: SessionRecord, keys: KeyRing, msg: bytes,
              src: Transport) -> SessionRecord | None:
        """Reattach step 5b (after the proof): may this gateway serve the
        session? None: parked until its owner releases it."""
        if self.table.fenced:
            raise Reject(Reason.OWNERSHIP_CONFLICT, Security.SEC_OWNERSHIP_ANOMALY,
                         "this gateway is fenced")
        try:
            claim, new = self._settle(self.ownership.claim(rec))
        except OwnershipError as e:
            raise Reject(Reason.OWNERSHIP_CONFLICT, Security.SEC_OWNERSHIP_ANOMALY,
                         e.detail) from None
        sid = rec.session_id
        if claim is Claim.WAIT:
            # on the timer clock: our wait alone, no other gateway reads it
            self.waiting[sid] = Parked(msg, src, self.table.timer_ms() + HANDOFF_WAIT_MS)
            self.events.emit(EventType.OWNERSHIP_HANDOFF, Reason.HANDOFF_REQUESTED, sid, src,
                             version=new.version, owner=rec.owner, to=self.events.node_id)
            return None
        if rec.owner != new.owner:
            self.events.emit(EventType.OWNERSHIP_HANDOFF, Reason.OWNER_LEASE_EXPIRED, sid, src,
                             version=new.version, previous_owner=rec.owner,
                             owner=new.owner, detail="the owner's lease is gone: taken over")
        if sid not in self.table:
            self.table.adopt(new, keys)
        return new

    def _settle(self, plan: ClaimPlan) -> tuple[Claim, SessionRecord]:
        """Commit what the ownership decision needs written (raises OwnershipError)."""
        if plan.write is None:
            return plan.claim, plan.record
        with claim_errors():
            try:
                return plan.claim, self.table.write_owner(plan.write)
            except GatewayGone:
                if plan.if_owner_gone is None:
                    raise
                return Claim.MINE, self.table.write_owner(plan.if_owner_gone)

    def reclaim(self, rec: SessionRecord) -> SessionRecord | None:
        """Our record under an older lease of ours (restart, re-registration):
        move it to the current token before serving it."""
        if rec.owner_lease == self.ownership.token:
            return rec
        try:
            claim, new = self._settle(self.ownership.claim(rec))
        except OwnershipError as e:
            self.events.emit(EventType.SECURITY_EVENT, Security.SEC_OWNERSHIP_ANOMALY,
                             rec.session_id, detail=f"not re-claimed: {e.detail}")
            return None
        return new if claim is Claim.MINE else None

    # ------------------------------------------------------------ following the store
    def on_store_record(self, sid: int, rec: SessionRecord | None) -> None:
        """A session changed in the store (watch or sweep): follow it."""
        with self.lock:
            live = self.table.get(sid)
            if live is not None:
                self._follow(live, rec)
            elif rec is None or rec.state is State.TERMINATED:
                self.table.drop_standby(sid)
            elif not self.ownership.owns(rec):
                keys, owner = self.table.standby.get(sid, (None, None))
                if owner != rec.owner or _keys_moved(keys, rec):
                    # a new owner, or the owner's rekey moved the keys: the
                    # store's ring (both epochs mid-rekey) becomes our standby's
                    self.table.stand_by(rec, None if _keys_moved(keys, rec) else keys)
            parked = self.waiting.get(sid)
            if (parked is not None and rec is not None and self.ownership.owns(rec)
                    and not rec.handoff_to):
                del self.waiting[sid]
                self.retry(parked.msg, parked.src)

    def _follow(self, live: Live, rec: SessionRecord | None) -> None:
        sid = live.record.session_id
        if rec is not None and rec.version < live.record.version:
            # an old record (a sweep's list read before our own write, a late
            # watch event): acting on it would drop a session we just took
            # over, and nobody could take it from us while our lease lives
            return
        if rec is None or not self.ownership.owns(rec):
            if rec is not None and rec.state is not State.TERMINATED:
                self.table.stand_by(rec, live.keys)  # first: a reattach still reaches us
            self.table.drop_local(sid)  # deleted, or moved while we could not hear it
            self.events.emit(EventType.OWNERSHIP_HANDOFF, Reason.OWNERSHIP_LOST, sid,
                             owner=rec.owner if rec else "", detail="the store says not ours")
            return
        self.table.observe(live, rec)
        if live.quarantined:
            # a revocation's: awaiting it (retried here), never handed to a
            # gateway that may not have reloaded yet. Key expiry's (review R5
            # #7, decided): not handed over either until its write lands (the
            # store refused that write, so a handover's would fail too, and a
            # next owner would serve the expired keys until its first tick);
            # it lifts at the next tick once the store answers. Either way
            # the requester's parked request times out
            return
        if rec.handoff_to and rec.handoff_to != self.ownership.node_id:
            self._release(live, rec)
        elif live.parked and not self.table.fenced and rec.owner_lease == self.ownership.token:
            self.table.serve_again(live, rec)  # a handover that did not happen

    def _release(self, live: Live, rec: SessionRecord) -> None:
        """The owner's half of a handoff: our element goes first, then the
        record moves. If the move is refused we serve it again; if the answer
        is ambiguous we stay parked (the sweep decides when the store answers)."""
        sid = rec.session_id
        floor = self.table.park(live)
        try:
            with handover_errors(rec.handoff_to):
                new = self.table.write_owner(self.ownership.handover(rec, floor))
        except OwnershipError as e:
            self.events.emit(EventType.OWNERSHIP_HANDOFF, Reason.OWNERSHIP_CONFLICT, sid,
                             to=rec.handoff_to, detail=e.detail)
            self.events.emit(EventType.SECURITY_EVENT, Security.SEC_OWNERSHIP_ANOMALY, sid,
                             detail=e.detail)
            self._refuse_handoff(live, rec)
            return
        self.table.stand_by(new, live.keys)  # the remote entry, then our parked element goes
        self.table.drop_local(sid)
        self.events.emit(EventType.OWNERSHIP_HANDOFF, Reason.HANDOFF_RELEASED, sid,
                         version=new.version, owner=new.owner, c2s_floor=new.c2s_floor)

    def _refuse_handoff(self, live: Live, rec: SessionRecord) -> None:
        """The requester is gone (or the record moved): clear the request if
        it is still the current record, and serve the session again."""
        try:
            got = self.store.get(rec.session_id)
            if got is None or not self.ownership.owns(got[0]):
                return  # the next sweep or watch event drops it
            cur = got[0]
            clear = self.ownership.clear_handoff(cur)
            if clear is not None:
                cur = self.table.write_owner(clear)
        except StoreError:
            return  # ambiguous: stay parked
        if not cur.handoff_to:
            self.table.serve_again(live, cur)

    # ------------------------------------------------------------ timers
    def check_lease(self) -> None:
        """Fence: without a certainly-alive lease another gateway may take
        our sessions over, so every element of ours leaves the kernel now.
        The kernel fences itself at the same deadline (set_fence) even if
        this thread never runs again."""
        self.gate.set_fence(self.ownership.token, self.ownership.deadline_ns())
        if self.ownership.lease_valid():
            if self.table.fenced:
                self.table.unfence()
                self.events.emit(EventType.OWNERSHIP_HANDOFF, Reason.LEASE_RENEWED,
                                 detail="unfenced")
            return
        if not self.table.fenced:
            self.table.fence()
            self.events.emit(EventType.SECURITY_EVENT, Security.SEC_OWNERSHIP_ANOMALY,
                             detail="lease not renewed in time: fenced, no session passes here")
        self._renew_registration()

    def _renew_registration(self) -> None:
        """A lease etcd already dropped cannot come back: register anew (a
        new token); our records are re-claimed by the sweep."""
        if self.store.lease_expired():
            try:
                self.store.register_gateway(self.ownership.node_id, self.store.lease_ttl_s)
            except StoreError:
                return

    def cancel_parked(self, sid: int) -> bool:
        """The key holder stopped (its TERMINATE verified): its parked request is void."""
        return self.waiting.pop(sid, None) is not None

    def expire_parked(self) -> None:
        now = self.table.timer_ms()
        for sid, p in list(self.waiting.items()):
            if now > p.until_ms:
                del self.waiting[sid]
                self.events.emit(EventType.REATTACH_RESULT, Reason.OWNERSHIP_CONFLICT, sid,
                                 p.src, accepted=False,
                                 detail="the owner did not release in time")

    def sweep_if_due(self) -> None:
        """Outside the control lock: a full re-read, then the owners map."""
        if time.monotonic() < self._next_sweep:
            return
        self._next_sweep = time.monotonic() + SWEEP_S
        self._sweep()
        self.publish()

    def _sweep(self) -> None:
        # what we knew before the read: a session made here while the list
        # was read (a handshake's commit; 1,500 records take ~0.5 s) is
        # absent from it, and would be dropped as deleted
        known = set(self.table.sessions) | set(self.waiting) | set(self.table.standby)
        try:
            records = {r.session_id: r for r in self.store.list()}
        except StoreError:
            return
        for sid in known | set(records):
            rec = records.get(sid)
            if rec is not None and sid in self.table and self.ownership.owns(rec):
                with self.lock:
                    rec = self._reclaimed(sid, rec)
                if rec is None:
                    continue  # not judged by this sweep: the watch or the next one will
            self.on_store_record(sid, rec)

    def _reclaimed(self, sid: int, rec: SessionRecord) -> SessionRecord | None:
        """The listed record of a session we serve, moved to our current
        token; None: this sweep cannot say. A listing older than what we hold
        (the control path re-claimed and moved it meanwhile) is not written
        over, and a re-claim that conflicts or is not answered is not a
        deletion: the record still says ours (review k17 #1: both dropped
        the session, OWNERSHIP_LOST owner "", and orphaned its client)."""
        live = self.table.get(sid)
        if live is None or rec.version < live.record.version:
            return None
        if self.table.fenced:
            return rec
        return self.reclaim(rec)


def _keys_moved(ring: KeyRing | None, rec: SessionRecord) -> bool:
    """Our standby's keys may be behind the store's: another epoch, or a ring
    mid-rekey (its confirmation and the overlap's end rewrite it)."""
    return ring is None or ring.epoch != rec.key_epoch or ring.previous is not None


def for_store(store: Store, node_id: str):
    """The ownership rules and the follower class for this store: a store
    shared by gateways (``ClusterStore``) makes this gateway a cluster member."""
    if isinstance(store, ClusterStore):
        return ClusterOwnership(store, node_id), ClusterFollower
    return LocalOwnership(node_id), NullFollower
