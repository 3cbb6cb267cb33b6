"""A cluster holds more sessions than one sessions map (issue 15, docs/cluster.md
"Remote sessions"): two gateways attached with a 1024-session map, 1500
sessions in the store split between them plus the lab client's, and a
handoff of the client's session still passes no packet on both gateways.

Before issue 15 every gateway kept a sessions-map element (and a runtime
slot) per session another gateway owns: here 751 own + 750 standby elements
on each gateway, more than its map holds. Now the others' sessions are
entries of the remote sessions map."""

from __future__ import annotations

import time

import pytest

from jvpn import keys
from jvpn.bench.handoff import handoff_trials
from jvpn.keys import derive_session_keys
from jvpn.lab.cluster import ClusterLab
from jvpn.lab.wait import wait_until
from jvpn.session import State, new_session
from kits.cluster_kit import need_etcd

pytestmark = pytest.mark.kernel

MAX_SESSIONS = 1024
PER_GATEWAY = 750  # background sessions each gateway owns: 1500 > MAX_SESSIONS
BULK_INNER = "10.99.0.77"  # one more configured peer, the background sessions' own
FIRST_SID = 0x15_0000_0000


def _bulk_peer(cl: ClusterLab) -> str:
    """A second configured peer for the background sessions (its own inner
    address: the lab client's downstream stays its own)."""
    public = keys.encode(keys.public_from_private(keys.generate_private()))
    with open(cl.tmp / "peers.conf", "a") as f:
        f.write(f"\n[Peer]\nPublicKey = {public}\nAllowedIP = {BULK_INNER}/32\nName = bulk\n")
    return public


def _write_background(cl: ClusterLab, peer_key: str) -> set[int]:
    """DEGRADED sessions (no binding, no timer due within the hour) written
    straight to the store, half owned by each gateway: no handshakes."""
    now = time.time_ns() // 1_000_000
    store = cl.store()
    sids = set()
    try:
        for i in range(2 * PER_GATEWAY):
            sid = FIRST_SID + i
            owner = "gw-a" if i % 2 == 0 else "gw-b"
            rec = new_session(sid, now, owner=owner).with_(
                state=State.DEGRADED, version=3, peer_key=peer_key, inner_addr=BULK_INNER)
            ks = derive_session_keys(sid, sid.to_bytes(32, "little"), b"\2" * 32, b"\3" * 32)
            store.create(rec, ks.pack())
            sids.add(sid)
    finally:
        store.close()
    return sids


@pytest.fixture(scope="module")
def cl(tmp_path_factory):
    need_etcd()
    c = ClusterLab(tmp_path_factory.mktemp("cluster-scale"), gateway_extra="LeaseTTL = 2\n",
                   attach_extra=("--max-sessions", str(MAX_SESSIONS))).up()
    try:
        c.background = _write_background(c, _bulk_peer(c))
        c.start_all()
        c.ready("a", timeout=60)
        yield c
    finally:
        c.down()


def _held(cl: ClusterLab, name: str) -> tuple[int, int]:
    """(elements of ours, remote entries) in the gateway's maps."""
    rows = cl.cli_json(name, "sessions")["gw0"]
    remote = sum(r["state"] == "REMOTE" for r in rows)
    return len(rows) - remote, remote


def _client_sid(cl: ClusterLab) -> int:
    store = cl.store()
    try:
        [rec] = [r for r in store.list() if r.session_id not in cl.background]
        return rec.session_id
    finally:
        store.close()


def test_two_gateways_hold_more_sessions_than_one_sessions_map(cl):
    total = 2 * PER_GATEWAY + 1
    assert total > MAX_SESSIONS
    # A owns its half and the client's session; B owns the other half
    wait_until(lambda: _held(cl, "a") == (PER_GATEWAY + 1, PER_GATEWAY),
               "A: its own elements and a remote entry per session of B", 30)
    wait_until(lambda: _held(cl, "b") == (PER_GATEWAY, PER_GATEWAY + 1),
               "B: its own elements and a remote entry per session of A", 30)


def test_a_handoff_among_them_passes_no_packet_on_both_gateways(cl):
    sid = _client_sid(cl)
    finish = cl.stream(2_000_000, 6.0, port=5002)
    time.sleep(0.5)
    got = handoff_trials(cl, sid, trials=2, settle_s=1.0)
    sent, received = finish()
    assert sent == received
    assert got["dual_active_packets"] == 0, got
    assert all(ms is not None for ms in got["to_owner_ms"]), got
    assert got["mirrored"] > 0 and min(got["accepted"].values()) > 100, got
    # the background sessions stayed where they were, on both gateways
    assert _held(cl, "b")[0] + _held(cl, "a")[0] == 2 * PER_GATEWAY + 1
