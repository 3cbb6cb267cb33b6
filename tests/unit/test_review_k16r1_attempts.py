"""Adversarial review k16r1: review E L2 with the real group commit.
Fails on the reviewed code (89243f9)."""

from __future__ import annotations

from jvpn.gate import abi
from jvpn.lab.wait import wait_until
from jvpn.store.group_commit import GroupCommit
from jvpn.store.sqlite import SqliteStore
from kits.daemon_kit import handshake, initiation, make_gateway


def test_an_attempt_confirmed_in_the_newer_ones_commit_is_kept(tmp_path):
    """12afcf5 keeps an older attempt confirmed while the newer attempt's
    writes are queued, but only when the confirmation's continuation runs
    first (its test holds the handshake alone and confirms at once). With
    `gateway up`'s GroupCommit the confirmation, queued after the newer
    handshake, commits in the same (or a later) transaction and the
    continuations run in queue order: the newer one's ``written`` ends the
    older attempt (``confirmed`` not yet set), then the older one's
    durable confirmation finds it forgotten (``forgotten_then_confirmed``).
    The client's confirmed session is gone; it recovers only by a new
    handshake. An on-path attacker gets this by holding the late answer's
    confirmation until just after the newer initiation passed."""
    store = SqliteStore(tmp_path / "s.db")
    gw = make_gateway(tmp_path, store=store, cookie_threshold_per_s=10_000)
    first = handshake(gw, src=("198.51.100.7", 4000), peer=0)
    handshake(gw, src=("198.51.100.7", 4001), peer=0)
    gw.table.group_commit(gw.control, gw.incidents.report)  # as `gateway up` does
    assert isinstance(gw.table.writes, GroupCommit)
    gw.table.writes.max_wait_s, gw.table.writes.max_batch = 10.0, 2
    gw.datapath.datagram(initiation(0).initiation(), ("198.51.100.7", 4002))  # queued
    gw.datapath.datagram(first.seal(b"", abi.MSG_KEEPALIVE), ("198.51.100.7", 4000))  # the batch
    wait_until(lambda: gw.table.writes.commits == 1 and gw.table.pending_new == 0,
               "the batch committed and answered", 10)
    with gw.control:
        kept = first.session_id in gw.sessions and gw.sessions[first.session_id].confirmed
        stored = store.get(first.session_id)
    gw.table.writes.close()
    store.close()
    assert kept, "the attempt confirmed in the same commit was ended by the newer attempt"
    assert stored is not None and stored.confirmed
