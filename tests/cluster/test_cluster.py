"""Ownership in a cluster (issue 5), in process: gateway daemons on one etcd,
userspace gates, a client on loopback, all inside a throwaway namespace.
The same daemons with XDP gates, in the lab, are in test_cluster_lab.py."""

from __future__ import annotations

import threading
import time

import pytest

from jvpn.gate import abi
from jvpn.gateway.follower import Parked
from jvpn.lab.addresses import LOOPBACK
from jvpn.lab.wait import wait_until
from jvpn.session import State, Transport
from kits.cluster_kit import Cluster, netns

pytestmark = pytest.mark.kernel  # namespaces and TUN devices need root


def _record(c: Cluster):
    store = c.store()
    try:
        [rec] = store.list()
        return rec
    finally:
        store.close()


def _served_by(c: Cluster, sid: int) -> set[str]:
    """Gateways whose gate would pass this session's data (not a standby)."""
    return {n for n, gw in c.gateways.items()
            if (e := gw.gate.model.sessions.get(sid)) is not None
            and e.state != abi.STATE_REMOTE}


def _data_from(c: Cluster, node: str, transport: Transport) -> bool:
    """Would ``node``'s gate pass a fresh data packet from ``transport``?"""
    msg = c.client.channel.seal(b"probe", abi.MSG_DATA)
    return c.gateways[node].gate.admit(msg, (transport.addr, transport.port))


def test_handoff_a_b_a_moves_the_single_owner(cluster):
    c = cluster
    client = c.connect("gw-a")
    sid = client.session_id
    a, b = c.gateways["gw-a"], c.gateways["gw-b"]
    rec = _record(c)
    assert (rec.owner, rec.owner_lease) == ("gw-a", a.ownership.token)
    assert _served_by(c, sid) == {"gw-a"}
    assert a.gate.model.sessions[sid].fence == a.ownership.token

    c.move("gw-b")
    rec = _record(c)
    assert (rec.owner, rec.owner_lease, rec.handoff_to) == ("gw-b", b.ownership.token, "")
    assert rec.state is State.ATTACHED and rec.epoch == 1
    assert _served_by(c, sid) == {"gw-b"}
    assert b.gate.model.sessions[sid].fence == b.ownership.token
    assert a.events.has("OwnershipHandoff", "HANDOFF_RELEASED")
    assert b.events.has("OwnershipHandoff", "HANDOFF_REQUESTED")
    new = rec.binding
    assert _data_from(c, "gw-b", new) and not _data_from(c, "gw-a", new)

    c.move("gw-a")
    rec = _record(c)
    assert (rec.owner, rec.owner_lease, rec.epoch) == ("gw-a", a.ownership.token, 2)
    assert _served_by(c, sid) == {"gw-a"}
    assert sid not in b.sessions and sid in a.sessions


def test_the_parked_request_completes_the_handoff_when_the_owner_releases(cluster):
    """B parks the client's proven request until A releases; then B runs that
    same request again (its own copy, its header counter already recorded)
    and challenges the client. The client never retries here: before the fix
    B refused its own parked request as a replay (REPLAY_DETECTED) and every
    handoff waited for the client's next retry (retry_ms, 400 ms)."""
    c = cluster
    client = c.connect("gw-a")
    client.retry_ms = 60_000  # no retry within the test: the parked request must do it
    c.move("gw-b")
    b = c.gateways["gw-b"]
    assert b.events.has("OwnershipHandoff", "HANDOFF_REQUESTED")
    assert not b.events.has("ReattachResult", "REPLAY_DETECTED")
    assert not b.events.has("SecurityEvent", "SEC_REPLAY_ATTEMPT")
    assert _record(c).owner == "gw-b"


def test_an_old_record_does_not_take_a_session_from_its_new_owner(cluster):
    """A sweep lists the records, then follows them one by one: a list read
    just before this gateway's own takeover write still names the old owner.
    Acting on it, B dropped the session it had just taken (its challenge
    could not even be sent), the record kept naming B, and with B's lease
    alive nobody could take the session over (cluster lab)."""
    c = cluster
    client = c.connect("gw-a")
    sid = client.session_id
    stale = _record(c)  # owner gw-a
    c.move("gw-b")
    b = c.gateways["gw-b"]
    b.follower.on_store_record(sid, stale)
    assert sid in b.sessions and _served_by(c, sid) == {"gw-b"}
    assert not b.events.has("OwnershipHandoff", "OWNERSHIP_LOST")


def test_a_client_that_missed_an_ack_catches_up_at_a_non_owner(cluster):
    """The client missed the ACK of its switch to B (it had moved on), so its
    next request, at A, names the old epoch. A does not own the session and
    cannot seal an answer; before the fix it refused the request silently,
    every retry alike, and the session was lost (cluster lab). Now ownership
    settles first, the owner tells the current epoch, and the client's next
    request switches."""
    c = cluster
    client = c.connect("gw-a")
    c.move("gw-b")
    assert client.epoch == 1
    client.epoch = 0  # as if B's ACK had never reached it
    c.move("gw-a", timeout_s=10)
    rec = _record(c)
    assert rec.owner == "gw-a" and rec.state is State.ATTACHED
    assert client.epoch == rec.epoch == 2


def test_no_replay_of_old_packets_at_the_new_owner(cluster):
    """The new owner's window starts above what the old owner accepted."""
    c = cluster
    client = c.connect("gw-a")
    a = c.gateways["gw-a"]
    old = [client.channel.seal(b"x", abi.MSG_DATA) for _ in range(3)]
    src = _record(c).binding
    for m in old:
        assert a.gate.admit(m, (src.addr, src.port))
    c.move("gw-b")
    new = _record(c).binding
    b = c.gateways["gw-b"]
    for m in old:  # the same bytes, now from the bound transport at B
        assert not b.gate.admit(m, (new.addr, new.port))
    assert _data_from(c, "gw-b", new)


def test_two_gateways_race_for_one_session(tmp_path):
    """A crashed; its client's one proof reaches B and C at once: one owner."""
    with netns():
        c = Cluster(tmp_path, nodes=("gw-a", "gw-b", "gw-c"))
        try:
            client = c.connect("gw-a")
            sid = client.session_id
            c.crash("gw-a")
            wait_until(lambda: c.store().gateways() == ["gw-b", "gw-c"], "A's lease to expire", 6)
            client.seq += 1
            from jvpn import wire

            req = wire.seal_control(
                wire.Header(type=abi.MSG_REATTACH_REQ, session_id=sid,
                            counter=client.channel.next_counter()),
                client.keys.hdr_c2s, client.keys.reattach, client.seq, client.wall_ms(),
                b"\x01" * wire.NONCE_LEN, client.epoch)
            src = Transport("127.0.0.1", 40000)
            gws = [c.gateways["gw-b"], c.gateways["gw-c"]]
            barrier = threading.Barrier(2)

            def race(gw):
                barrier.wait()
                gw.handle_control(req, src)

            threads = [threading.Thread(target=race, args=(g,)) for g in gws]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            rec = _record(c)
            assert rec.owner in ("gw-b", "gw-c") and rec.state is State.RECOVERING
            loser = next(g for g in gws if g.events.node_id != rec.owner)
            assert loser.events.has("ReattachResult", "OWNERSHIP_CONFLICT")
            assert loser.events.has("SecurityEvent", "SEC_OWNERSHIP_ANOMALY")
            assert sid not in loser.sessions and _served_by(c, sid) == set()
        finally:
            c.close()


def test_crashed_owner_is_taken_over_after_its_lease(cluster):
    c = cluster
    client = c.connect("gw-a")
    sid = client.session_id
    c.crash("gw-a")
    t0 = time.monotonic()
    c.move("gw-b", timeout_s=10)
    took = time.monotonic() - t0
    rec = _record(c)
    assert rec.owner == "gw-b" and rec.state is State.ATTACHED
    assert c.gateways["gw-b"].events.has("OwnershipHandoff", "OWNER_LEASE_EXPIRED")
    assert took < c.lease_ttl_s + 3, took
    assert _served_by(c, sid) == {"gw-b"}


def test_etcd_stopped_mid_reattach_rejects_and_keeps_the_binding(cluster):
    c = cluster
    client = c.connect("gw-a")
    sid = client.session_id
    a = c.gateways["gw-a"]
    before = _record(c)
    stopped = threading.Event()
    real_control = client._control

    def stop_etcd_then_answer(msg, src, sock):
        if msg[0] == abi.MSG_PATH_CHALLENGE and not stopped.is_set():
            c.etcd.stop()  # the challenge went out; the store is gone before the answer
            stopped.set()
        real_control(msg, src, sock)

    client._control = stop_etcd_then_answer
    client.endpoint = ("127.0.0.1", c.ports["gw-a"])
    client.rebind()
    wait_until(stopped.is_set, "the path challenge", 5)
    wait_until(lambda: a.events.has("ReattachResult", "OWNERSHIP_CONFLICT"), "the rejection", 3)
    assert a.events.has("SecurityEvent", "SEC_OWNERSHIP_ANOMALY")
    assert client.reattaches == 0
    assert _data_from(c, "gw-a", before.binding)  # the current binding keeps working
    # after its lease can no longer be renewed the gateway fences itself
    wait_until(lambda: a.fenced, "the fence", c.lease_ttl_s + 1)
    assert _served_by(c, sid) == set()
    # the client keeps retrying; until the record is read it answers no
    # challenge, so no switch can commit after etcd returns either
    client._control = lambda msg, src, sock: None
    c.etcd.start()
    rec = c.store().get(sid)[0]
    assert rec.binding == before.binding  # the switch never committed
    assert rec.state in (State.RECOVERING, State.DEGRADED, State.ATTACHED)
    client._control = real_control
    wait_until(lambda: _served_by(c, sid) == {"gw-a"}, "serving again once etcd is back", 10)


def test_a_cleanly_stopped_owner_lets_its_sessions_move_at_once(cluster):
    c = cluster
    client = c.connect("gw-a")
    sid = client.session_id
    a = c.gateways.pop("gw-a")
    a.stop()
    a.store.close()  # what `gateway up` does on SIGTERM: the lease is revoked
    assert a.gate.model.sessions[sid].state == abi.STATE_REMOTE  # stopped passing first
    t0 = time.monotonic()
    c.move("gw-b", timeout_s=5)
    assert time.monotonic() - t0 < c.lease_ttl_s  # no wait for a lease to run out
    assert c.gateways["gw-b"].events.has("OwnershipHandoff", "OWNER_LEASE_EXPIRED")
    assert _record(c).owner == "gw-b"


def test_a_replayed_spent_request_at_another_gateway_starts_no_handoff(cluster):
    """Adversarial review: the client's request of a completed switch, copied
    and sent to a gateway that does not own the session, from the attacker's
    address, once looked like the client asking to move back (RFC 9000 9.3.3)
    and started a handoff: one packet took the session from its owner. It is
    refused as a spent sequence; the owner keeps it."""
    from jvpn import wire

    c = cluster
    client = c.connect("gw-a")
    sid = client.session_id
    c.move("gw-b")  # a completed switch on gw-b: its request is what the attacker copies
    rec = _record(c)
    assert rec.owner == "gw-b" and rec.epoch == 1
    copy = wire.seal_control(
        wire.Header(type=abi.MSG_REATTACH_REQ, session_id=sid,
                    counter=client.channel.next_counter()),
        client.keys.hdr_c2s, client.keys.reattach, rec.switch_seq, int(time.time() * 1000),
        bytes(16), rec.epoch - 1)
    a = c.gateways["gw-a"]
    a.handle_control(copy, Transport("10.99.77.7", 4444))
    time.sleep(0.5)  # what a handoff request would take to reach the owner
    after = _record(c)
    assert (after.owner, after.handoff_to, after.binding) == ("gw-b", "", rec.binding)
    assert not a.events.has("OwnershipHandoff", "HANDOFF_REQUESTED")
    assert a.events.has("ReattachResult", "REPLAY_DETECTED")


def test_a_terminate_at_the_non_owner_ends_the_session(cluster):
    """Review R3 #5: the client's TERMINATE that reaches a gateway which is
    not the session's owner (its path moved there) is verified under that
    gateway's standby keys and ends the record in the store; the owner's
    watch drops the session."""
    c = cluster
    client = c.connect("gw-a")
    sid = client.session_id
    a, b = c.gateways["gw-a"], c.gateways["gw-b"]
    wait_until(lambda: sid in b.table.standby, "gw-b stands by for the session", timeout=5)
    # as if its reattach were parked at gw-b, waiting for gw-a to release
    b.follower.waiting[sid] = Parked(b"", Transport(LOOPBACK, 1), until_ms=1 << 62)
    client.endpoint = (LOOPBACK, c.ports["gw-b"])  # the path now leads to gw-b
    client.down()  # stops; its one TERMINATE goes to gw-b
    c.client = None
    wait_until(lambda: sid not in a.sessions, "the owner drops the session", timeout=5)
    assert sid not in b.follower.waiting  # the parked request is void
    store = c.store()
    try:
        got = store.get(sid)  # once: the owner deletes it meanwhile
        assert got is None or got[0].state is State.TERMINATED
    finally:
        store.close()
    assert any(e["event_type"] == "SessionTerminated" and e["reason_code"] == "CLIENT_STOPPED"
               for e in b.events.recent)
