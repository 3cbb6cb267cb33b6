"""The cluster follower's sweep (jvpn/gateway/follower.py ``_sweep``): a
full re-read of the store every SWEEP_S, which judges only what it can:
a session absent from the list is dropped only if it was known before the
read, and a session of ours the sweep cannot re-claim (a listing older than
what we hold, a version conflict, a store that does not answer) is not
taken for a deleted one. Each used to drop a live session (OWNERSHIP_LOST,
owner "") and orphan its client while the record still said ours."""

from __future__ import annotations

import pytest

from jvpn.codes import Reason
from jvpn.session import Event, apply, new_session
from jvpn.store import StoreError
from kits.follower_kit import CLIENT, INNER, LEASE_A, keys_of, rig_in

rig = pytest.fixture(rig_in)

OWN = 100
OLD_LEASE = 99  # our lease before a re-registration (the token is now LEASE_A)


def _serve(rig, lease: int = LEASE_A) -> None:
    """An own session, served here, its record under ``lease``."""
    rec = rig.record(OWN, "gw-a").with_(owner_lease=lease)
    rig.table.create(rec, keys_of(OWN), INNER.packed,
                     apply(new_session(OWN, 1_000), Event.ATTACH_OK, 1_000, binding=CLIENT)[1])


def _ownership_lost(rig) -> list:
    seen = []
    emit = rig.follower.events.emit
    rig.follower.events.emit = lambda *a, **kw: (seen.append(a[1]), emit(*a, **kw))
    return seen


def test_a_session_made_here_while_the_sweep_reads_the_store_stays(rig):
    """The CI failure of test_cluster_scale_lab: a handshake committed while
    the sweep's list of 1,500 records was read."""
    listed = rig.store.list

    def list_then_a_handshake_commits():
        before = listed()
        _serve(rig)
        return before

    rig.store.list = list_then_a_handshake_commits
    rig.follower.sweep_if_due()
    assert OWN in rig.table and rig.gate.ids() == {OWN}
    rig.store.list = listed
    rig.follower._next_sweep = 0  # the next sweep sees its record: it stays
    rig.follower.sweep_if_due()
    assert OWN in rig.table


def test_a_listing_older_than_a_reattachs_reclaim_does_not_drop_the_session(rig):
    """After a re-registration: the sweep lists our record under the old
    lease (v1); meanwhile a proven reattach re-claims it (v2, our new token)
    and moves it on (v3). The sweep's re-claim of its v1 must not conflict
    the session away."""
    _serve(rig, OLD_LEASE)
    listed = rig.store.list
    seen = _ownership_lost(rig)

    def list_then_a_reattach_reclaims():
        before = listed()
        with rig.follower.lock:  # the control path's claim, then a transition
            claimed = rig.follower.claim(rig.store.get(OWN)[0], None, b"", CLIENT)
            rig.table.commit(claimed, claimed.with_(version=claimed.version + 1,
                                                    reattach_seq=7), rig.table.get(OWN).keys)
        return before

    rig.store.list = list_then_a_reattach_reclaims
    rig.follower.sweep_if_due()
    assert rig.store.get(OWN)[0].owner_lease == LEASE_A
    assert OWN in rig.table and rig.gate.ids() == {OWN}
    assert Reason.OWNERSHIP_LOST not in seen


def test_a_store_that_does_not_answer_the_reclaim_does_not_drop_the_session(rig):
    """The sweep's re-claim times out (it may even have committed): the
    record still says ours, so the session stays; a later sweep re-claims."""
    _serve(rig, OLD_LEASE)
    seen = _ownership_lost(rig)
    cas = rig.store.cas

    def timeout_once(*a, **kw):
        rig.store.cas = cas
        raise StoreError("etcd transaction failed: timeout")

    rig.store.cas = timeout_once
    rig.follower.sweep_if_due()
    assert OWN in rig.table and Reason.OWNERSHIP_LOST not in seen
    rig.follower._next_sweep = 0
    rig.follower.sweep_if_due()
    assert OWN in rig.table and rig.store.get(OWN)[0].owner_lease == LEASE_A
