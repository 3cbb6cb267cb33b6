"""Ownership decisions are plain data: what to write, under which lease
condition; nothing is written here (the session table commits)."""

from __future__ import annotations

import pytest

from jvpn.gateway.ownership import Claim, ClusterOwnership, OwnershipError, claim_errors
from jvpn.session import State, new_session
from jvpn.store import StoreError, VersionConflict


class Leases:
    """Just the lease side of a cluster store: who is registered under what."""

    def __init__(self, me: int, registered: dict[str, int], valid: bool = True):
        self.lease_id, self.registered, self.valid = me, registered, valid

    def lease_valid(self, margin_s: float = 0.0) -> bool:
        return self.valid

    def gateway_lease(self, node: str) -> int | None:
        return self.registered.get(node)


def _rec(**kw):
    return new_session(7, 0, owner="gw-a").with_(state=State.ATTACHED, version=3, **kw)


def test_a_live_owner_is_asked_under_its_lease_with_a_takeover_if_gone():
    own = ClusterOwnership(Leases(20, {"gw-a": 10, "gw-b": 20}), "gw-b")
    plan = own.claim(_rec(owner_lease=10))
    assert plan.claim is Claim.WAIT and plan.write.alive == ("gw-a", 10)
    assert (plan.write.new.handoff_to, plan.write.new.handoff_lease) == ("gw-b", 20)
    assert plan.write.new.version == 4 and plan.write.old.version == 3
    gone = plan.if_owner_gone.new
    assert (gone.owner, gone.owner_lease, gone.handoff_to) == ("gw-b", 20, "")


def test_a_retry_waits_while_the_owner_lives_and_takes_over_after():
    rec = _rec(owner_lease=10, handoff_to="gw-b", handoff_lease=20)
    alive = ClusterOwnership(Leases(20, {"gw-a": 10}), "gw-b").claim(rec)
    assert alive.claim is Claim.WAIT and alive.write is None
    dead = ClusterOwnership(Leases(20, {}), "gw-b").claim(rec)
    assert dead.claim is Claim.MINE and dead.write.new.owner == "gw-b"


def test_our_own_record_under_an_old_lease_moves_to_the_current_token():
    own = ClusterOwnership(Leases(30, {}), "gw-a")
    assert own.claim(_rec(owner_lease=30)).write is None
    plan = own.claim(_rec(owner_lease=10))
    assert plan.claim is Claim.MINE and plan.write.new.owner_lease == 30


def test_a_fenced_gateway_claims_nothing():
    with pytest.raises(OwnershipError, match="fenced"):
        ClusterOwnership(Leases(20, {}, valid=False), "gw-b").claim(_rec(owner_lease=10))


def test_handover_requires_the_askers_lease_and_keeps_the_higher_floor():
    own = ClusterOwnership(Leases(10, {}), "gw-a")
    w = own.handover(_rec(owner_lease=10, handoff_to="gw-b", handoff_lease=20, c2s_floor=50),
                     c2s_floor=40)
    assert w.alive == ("gw-b", 20) and (w.new.owner, w.new.owner_lease) == ("gw-b", 20)
    assert w.new.c2s_floor == 50 and w.new.handoff_to == ""


@pytest.mark.parametrize("error,words", [(VersionConflict("x"), "lost a race"),
                                          (StoreError("x"), "store unavailable")])
def test_store_answers_while_claiming_are_ownership_conflicts(error, words):
    with pytest.raises(OwnershipError, match=words), claim_errors():
        raise error
