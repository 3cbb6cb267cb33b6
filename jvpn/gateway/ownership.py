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

This module decides; it writes nothing. A decision that changes the record
is an ``OwnerWrite`` (the next record, and the lease that must still be alive
for it to apply); the session table (jvpn/gateway/table.py) commits it. Store
errors from that commit are turned into an ``OwnershipError`` by
``claim_errors`` / ``handover_errors``: the caller rejects and changes nothing.

Single-gateway stores (SQLite) use ``LocalOwnership``: everything is ours.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from jvpn.session import SessionRecord
from jvpn.store import MAX_VERSION, ClusterStore, GatewayGone, StoreError, VersionConflict


class OwnershipError(Exception):
    def __init__(self, detail: str, security: bool = True):
        super().__init__(detail)
        self.detail, self.security = detail, security


class Claim(enum.Enum):
    MINE = "mine"  # go on with the reattach on this gateway
    WAIT = "wait"  # handoff requested: the owner has to release first


@dataclass(frozen=True)
class OwnerWrite:
    """An ownership change to commit: ``new`` over ``old`` (compare-and-swap
    on ``old.version``), and only while gateway ``alive[0]`` holds lease
    ``alive[1]`` (None: no lease condition)."""

    old: SessionRecord
    new: SessionRecord
    alive: tuple[str, int] | None = None


@dataclass(frozen=True)
class ClaimPlan:
    """The answer to a proven reattach that reached this gateway."""

    claim: Claim
    record: SessionRecord  # go on with this record when nothing is written
    write: OwnerWrite | None = None  # else commit this; its ``new`` is the record
    if_owner_gone: OwnerWrite | None = None  # ``write`` found the owner gone: take over


def _next(rec: SessionRecord, alive: tuple[str, int] | None = None, **changes) -> OwnerWrite:
    return OwnerWrite(rec, rec.with_(version=rec.version + 1, **changes), alive)


@contextmanager
def claim_errors() -> Iterator[None]:
    """Store answers while claiming, as the ownership conflict they mean."""
    try:
        yield
    except VersionConflict as e:
        raise OwnershipError(f"lost a race for the session: {e}") from None
    except StoreError as e:
        raise OwnershipError(f"store unavailable: {e}") from None


@contextmanager
def handover_errors(to: str) -> Iterator[None]:
    """Store answers while handing a session over to gateway ``to``."""
    try:
        yield
    except GatewayGone:
        raise OwnershipError(f"gateway {to} asked for the session but is not alive") from None
    except VersionConflict as e:
        raise OwnershipError(f"record moved during the handover: {e}") from None
    except StoreError as e:
        raise OwnershipError(f"store unavailable: {e}") from None


class LocalOwnership:
    """One gateway: every session is its own, no lease, token 0."""

    def __init__(self, node_id: str):
        self.node_id, self.token = node_id, 0

    def owns(self, rec: SessionRecord) -> bool:
        return True

    def claim(self, rec: SessionRecord) -> ClaimPlan:
        return ClaimPlan(Claim.MINE, rec)

    def lease_valid(self) -> bool:
        return True


class ClusterOwnership:
    """Ownership decisions on a clustered store (jvpn/store/etcd.py)."""

    def __init__(self, store: ClusterStore, node_id: str):
        self.store, self.node_id = store, node_id

    @property
    def token(self) -> int:
        """The fencing token: the store's lease id; one that cannot be an
        element's u64 (a store's garbage) is no lease: fenced (review k18r4 #3)."""
        lease = self.store.lease_id
        return lease if type(lease) is int and 0 < lease <= MAX_VERSION else 0

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

    def claim(self, rec: SessionRecord) -> ClaimPlan:
        """For a proven reattach that reached this gateway: go on (MINE) or
        WAIT, with the write that makes it so. Raises OwnershipError on a
        conflict."""
        if not self.lease_valid():
            raise OwnershipError("this gateway's lease is not certainly alive (fenced)")
        me = self.node_id
        with claim_errors():
            if rec.owner == me:
                if rec.owner_lease == self.token:
                    return ClaimPlan(Claim.MINE, rec)
                return ClaimPlan(Claim.MINE, rec, _next(rec, owner_lease=self.token,
                                                        handoff_to="", handoff_lease=0))
            if rec.handoff_to not in ("", me) and self.store.gateway_lease(rec.handoff_to):
                raise OwnershipError(f"gateway {rec.handoff_to} is already taking it over")
            if rec.handoff_to == me and rec.handoff_lease == self.token:
                if self.alive(rec.owner, rec.owner_lease):
                    return ClaimPlan(Claim.WAIT, rec)  # a retry: the owner has not released yet
                return ClaimPlan(Claim.MINE, rec, self._take_over(rec))
        # one transaction: ask, but only while the owner holds its lease; if
        # it does not any more (crashed, or fenced itself long ago): take over
        ask = _next(rec, alive=(rec.owner, rec.owner_lease), handoff_to=me,
                    handoff_lease=self.token)
        return ClaimPlan(Claim.WAIT, rec, ask, if_owner_gone=self._take_over(rec))

    def _take_over(self, rec: SessionRecord) -> OwnerWrite:
        return _next(rec, owner=self.node_id, owner_lease=self.token, handoff_to="",
                     handoff_lease=0)

    def handover(self, rec: SessionRecord, c2s_floor: int) -> OwnerWrite:
        """The owner's half, once its element is a standby: one transaction,
        only while the asking gateway still holds the lease it asked under
        (which becomes the session's token). Commit it in ``handover_errors``."""
        to, lease = rec.handoff_to, rec.handoff_lease
        return _next(rec, alive=(to, lease), owner=to, owner_lease=lease, handoff_to="",
                     handoff_lease=0, c2s_floor=max(rec.c2s_floor, c2s_floor))

    def clear_handoff(self, rec: SessionRecord) -> OwnerWrite | None:
        """A handoff request whose asker is gone: the write that clears it
        (None while the asker lives, or when there is none)."""
        if not rec.handoff_to or self.store.gateway_lease(rec.handoff_to) is not None:
            return None
        return _next(rec, handoff_to="", handoff_lease=0)
