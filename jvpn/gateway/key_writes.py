"""The session table's key writes (issue 13, docs/protocol.md "Rekey"): a
mixin of :class:`jvpn.gateway.table.SessionTable`, which stays the one writer
of records, elements and events. A rekey's commit itself goes through
``SessionTable.commit(..., ring=...)`` (one compare-and-swap of the record
and its secrets); here are what follows it: the confirmation (the client
used the new epoch: the gateway seals under it, a store write first: a
store that refuses changes nothing, and a later message retries), and the
end of the overlap: the previous epoch leaves memory and the element FIRST
(restricting is always safe: review R1 #5), then the store, whose write the
timer retries every tick until it succeeds."""

from __future__ import annotations

from typing import TYPE_CHECKING

from jvpn.codes import EventType, Reason
from jvpn.gateway.announce import announce
from jvpn.keys import KeyRing, ring_for
from jvpn.session import State
from jvpn.store import StoreError

if TYPE_CHECKING:
    from jvpn.gateway.table import Live

# what ``refresh_keys`` found in the store
ADOPTED, ENDED, MOVED, NOT_APPLIED, UNKNOWN = (
    "adopted", "ended", "moved", "not_applied", "unknown")


class KeyWrites:
    def _cas(self, base, new, ring: KeyRing | None) -> None:
        """``commit``'s store write: with a ring, the record and the secrets
        in one compare-and-swap, and only then the session takes the ring."""
        if ring is None:
            self.store.cas(base.session_id, base.version, new)
            return
        live = self.sessions.get(new.session_id)
        old = live.keys.live() if live is not None else ()
        self.store.cas(base.session_id, base.version, new, secrets=ring.pack())
        self._take_ring(new.session_id, ring)
        if any(k not in ring.live() for k in old):  # an epoch dropped: erase its old copies
            self.store.forget_old_secrets()

    def _take_ring(self, sid: int, ring: KeyRing) -> None:
        """After the store took ``ring``: the session's channel follows (the
        element follows in ``_project``)."""
        live = self.sessions.get(sid)
        if live is None:
            return
        if not ring.confirmed:  # a rekey committed: the operator's request is answered
            live.rekey_requested = False
        live.keys = ring
        live.channel.set_keys(ring)
        live.secrets_unsaved = False  # the store holds this ring
        if ring.previous is None or not ring.confirmed:
            live.overlap_until_ms = None

    def refresh_keys(self, live: Live, steps=(), detail: str = "") -> str:
        """After a rekey commit that raised StoreError, an ambiguous result
        (an etcd deadline: the store may have applied it; review R4 #3):
        reads the stored record and acts on what it says (review R5 #3, #7):
          ADOPTED      a newer version of OUR ownership (same owner and
                       owner_lease), keys at our epoch or later: its record
                       and ring become the session's (record, ring, element);
                       ``steps``, the commit's transitions, are said if the
                       store holds that very record
          ENDED        TERMINATED: the session ends here too, through the
                       normal TERMINATED projection (element, downstream gone)
          MOVED        another owner's: no longer served here, on standby as
                       a watch event would leave it
          NOT_APPLIED  the store answered and holds nothing newer: the
                       commit did not land
          UNKNOWN      the store did not answer, answered garbage, or holds
                       a record of ours under another lease or older keys
        Raises nothing."""
        base = live.record
        try:
            got = self.store.get(base.session_id)
            if got is None:
                return UNKNOWN  # gone: the timers decide
            rec, ring = got[0], ring_for(*got)
        except (StoreError, ValueError):
            return UNKNOWN
        if rec.version <= base.version:
            return NOT_APPLIED
        if rec.state is State.TERMINATED:
            self._project(rec, live.keys, ())
            self.forget(base.session_id)
            return ENDED
        if rec.owner != base.owner:
            # the remote entry first: it takes our element's control floor
            # (jvpn/gate/element.py remote_ctl_floor), then the element goes
            self.stand_by(rec, live.keys)
            self.drop_local(base.session_id)
            self.events.emit(EventType.OWNERSHIP_HANDOFF, Reason.OWNERSHIP_LOST,
                             base.session_id, owner=rec.owner,
                             detail="the store says not ours (read after a rekey commit)")
            return MOVED
        if rec.owner_lease != base.owner_lease or ring.epoch < live.keys.epoch:
            # our name under another lease (the follower settles that), or
            # older keys (keys only move forward): not adopted here
            return UNKNOWN
        loaded = ring.loaded(self.clock_ms())
        self._take_ring(base.session_id, loaded)
        live.secrets_unsaved = loaded is not ring
        self._project(rec, loaded, ())
        announce(self.events, base, [s for s in steps if s[0] == rec], detail, self.clock_ms())
        return ADOPTED

    def confirm_keys(self, live: Live, overlap_ms: int) -> bool:
        """The client's first authentic message under the new epoch: the ring
        becomes confirmed (store first; raises StoreError: nothing changed),
        the gateway seals under it, and the overlap starts."""
        ring = live.keys
        if ring.confirmed:
            return False
        rec = live.record  # a secrets-only write: the version stays (jvpn/store check_cas)
        until = self.clock_ms() + overlap_ms  # stored: a restart resumes the overlap
        self.commit(rec, rec, ring.with_confirmed(until), ring=ring.with_confirmed(until))
        live.overlap_until_ms = until
        self.events.emit(EventType.KEY_ROTATED, Reason.REKEY_CONFIRMED, rec.session_id,
                         rec.binding, version=rec.version, key_epoch=ring.epoch,
                         previous_until_ms=live.overlap_until_ms)
        return True

    def end_overlap(self, live: Live, now: int, overlap_ms: int) -> None:
        """The timer's: a confirmed ring's previous epoch is dropped
        ``overlap_ms`` after the confirmation (a ring loaded from the store
        inside its overlap keeps the stored end; past it, or with none
        stored, it was dropped at load: KeyRing.loaded): from
        memory and the element at once, then from the store (raises
        StoreError: the next tick writes it again)."""
        ring = live.keys
        if ring.previous is not None and ring.confirmed:
            if live.overlap_until_ms is None:  # a ring loaded inside its overlap
                live.overlap_until_ms = ring.overlap_until_ms or now + overlap_ms
            if now < live.overlap_until_ms:
                return
            self._drop_previous(live, ring)
        if live.secrets_unsaved:
            rec = live.record  # secrets only, as the confirmation
            self.commit(rec, rec, live.keys, ring=live.keys)
            self.store.forget_old_secrets()  # the dropped epoch's older copies leave the disk

    def _drop_previous(self, live: Live, ring: KeyRing) -> None:
        rec, only = live.record, ring.without_previous()
        self._take_ring(rec.session_id, only)
        live.secrets_unsaved = True  # until the store takes it
        self._project(rec, only, ())  # one element replace: the new phase only
        live.overlap_until_ms = None
        self.events.emit(EventType.KEY_ROTATED, Reason.PREVIOUS_KEYS_DROPPED, rec.session_id,
                         rec.binding, version=rec.version, key_epoch=ring.epoch,
                         dropped_epoch=ring.previous.epoch)
