"""Who may serve a session in a cluster: one owner at a time, moved only
through the store (seed S1 across gateways, S5: ambiguity is rejection).

Every session record names its owner and the owner's lease at the time it
took the session (the fencing token, also carried into the owner's BPF
element). A gateway that receives a *proven* reattach for a session owned
elsewhere:

- owner's lease gone (crashed, or partitioned long enough to have fenced
  itself): takes it over with one compare-and-swap;
- owner alive: writes ``handoff_to = me`` (one CAS) and waits. The owner
  watches the prefix; it removes the session's element from its own XDP map
  *first*, then hands the record over (owner = me, handoff_to cleared) with a
  CAS. Only then does the new gateway go on with the reattach (path check,
  then its own element). So no instant exists where both pass data.

Anything the store cannot answer, or answers in a way that does not fit, is
an ``OwnershipError``: the caller rejects and changes nothing.

Used by jvpn/daemon.py. Single-gateway stores (SQLite) use ``LocalOwnership``:
everything is ours.
"""

from __future__ import annotations

import enum

from jvpn.session import SessionRecord
from jvpn.store import GatewayGone, StoreError, VersionConflict


class OwnershipError(Exception):
    def __init__(self, detail: str, security: bool = True):
        super().__init__(detail)
        self.detail, self.security = detail, security


class Claim(enum.Enum):
    MINE = "mine"  # go on with the reattach on this gateway
    WAIT = "wait"  # handoff requested: the owner has to release first


class LocalOwnership:
    """One gateway: every session is its own, no lease, token 0."""

    clustered = False

    def __init__(self, node_id: str):
        self.node_id, self.token = node_id, 0

    def owns(self, rec: SessionRecord) -> bool:
        return True

    def claim(self, rec: SessionRecord) -> tuple[Claim, SessionRecord]:
        return Claim.MINE, rec

    def lease_valid(self) -> bool:
        return True


class ClusterOwnership:
    """Ownership decisions on a clustered store (jvpn/store/etcd.py)."""

    clustered = True

    def __init__(self, store, node_id: str):
        self.store, self.node_id = store, node_id

    @property
    def token(self) -> int:
        return self.store.lease_id

    def owns(self, rec: SessionRecord) -> bool:
        return rec.owner == self.node_id

    def lease_valid(self, margin_s: float = 0.25) -> bool:
        return self.token != 0 and self.store.lease_valid(margin_s)

    def deadline_ns(self, margin_s: float = 0.25) -> int:
        """Until when (CLOCK_MONOTONIC ns) the lease is certainly alive."""
        return max(int((self.store.lease_deadline() - margin_s) * 1e9), 1)

    def alive(self, node: str, lease: int) -> bool:
        """Is ``node`` still registered under ``lease``? (a StoreError means
        we do not know: the caller fails closed)."""
        return node != "" and lease != 0 and self.store.gateway_lease(node) == lease

    def claim(self, rec: SessionRecord) -> tuple[Claim, SessionRecord]:
        """For a proven reattach that reached this gateway. Returns the
        record to go on with, or WAIT. Raises OwnershipError on a conflict."""
        if not self.lease_valid():
            raise OwnershipError("this gateway's lease is not certainly alive (fenced)")
        me = self.node_id
        try:
            if rec.owner == me:
                if rec.owner_lease == self.token:
                    return Claim.MINE, rec
                return Claim.MINE, self._cas(rec, owner_lease=self.token, handoff_to="",
                                             handoff_lease=0)
            if rec.handoff_to not in ("", me) and self.store.gateway_lease(rec.handoff_to):
                raise OwnershipError(f"gateway {rec.handoff_to} is already taking it over")
            if rec.handoff_to == me and rec.handoff_lease == self.token:
                if self.alive(rec.owner, rec.owner_lease):
                    return Claim.WAIT, rec  # a retry: the owner has not released yet
                return Claim.MINE, self._take_over(rec)
            # one transaction: ask, but only while the owner holds its lease
            return Claim.WAIT, self._cas(rec, handoff_to=me, handoff_lease=self.token,
                                         alive=(rec.owner, rec.owner_lease))
        except GatewayGone:  # the owner crashed (or fenced itself long ago): take over
            return Claim.MINE, self._take_over(rec)
        except VersionConflict as e:
            raise OwnershipError(f"lost a race for the session: {e}") from None
        except StoreError as e:
            raise OwnershipError(f"store unavailable: {e}") from None

    def _take_over(self, rec: SessionRecord) -> SessionRecord:
        try:
            return self._cas(rec, owner=self.node_id, owner_lease=self.token, handoff_to="",
                             handoff_lease=0)
        except VersionConflict as e:
            raise OwnershipError(f"lost a race for the session: {e}") from None
        except StoreError as e:
            raise OwnershipError(f"store unavailable: {e}") from None

    def handover(self, rec: SessionRecord, c2s_floor: int) -> SessionRecord:
        """The owner's half: called after its element is a standby. One
        transaction, only while the asking gateway still holds the lease it
        asked under (which becomes the session's token)."""
        to, lease = rec.handoff_to, rec.handoff_lease
        try:
            return self._cas(rec, owner=to, owner_lease=lease, handoff_to="", handoff_lease=0,
                             c2s_floor=max(rec.c2s_floor, c2s_floor), alive=(to, lease))
        except GatewayGone:
            raise OwnershipError(f"gateway {to} asked for the session but is not alive") from None
        except VersionConflict as e:
            raise OwnershipError(f"record moved during the handover: {e}") from None
        except StoreError as e:
            raise OwnershipError(f"store unavailable: {e}") from None

    def _cas(self, rec: SessionRecord, alive: tuple[str, int] | None = None,
             **changes) -> SessionRecord:
        new = rec.with_(version=rec.version + 1, **changes)
        if alive is None:
            self.store.cas(rec.session_id, rec.version, new)
        else:
            self.store.cas(rec.session_id, rec.version, new, alive=alive)
        return new
