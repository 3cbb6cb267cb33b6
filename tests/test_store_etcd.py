"""The etcd store against a real etcd (Debian etcd-server on loopback, started
by the test): the same contract as the SQLite store, secrets sealed with the
cluster key, fail closed when etcd is gone, gateway leases."""

from __future__ import annotations

import os
import threading
import time

import pytest

from jvpn.etcdlab import EtcdServer
from jvpn.session import Event, Transport, apply, new_session
from jvpn.store import AlreadyExists, StoreError, VersionConflict
from jvpn.store.etcd import EtcdStore

T1 = Transport("192.0.2.10", 5555)
KEY = os.urandom(32)


@pytest.fixture(scope="module")
def etcd():
    import shutil

    if not shutil.which("etcd"):
        if os.environ.get("JVPN_REQUIRE_KERNEL") == "1":
            pytest.fail("etcd (Debian etcd-server) is missing: sudo make setup")
        pytest.skip("etcd (Debian etcd-server) is not installed")
    server = EtcdServer().start()
    yield server
    server.remove()


@pytest.fixture
def store(etcd, request):
    s = EtcdStore(etcd.host, etcd.port, cluster_key=KEY, prefix=f"/t/{request.node.name}/")
    yield s
    s.close()


def _attached(sid=0xF000000000000001):
    return apply(new_session(sid, 0), Event.ATTACH_OK, 1, binding=T1)[0]


def test_create_get_cas_delete(store):
    rec = _attached()
    store.create(rec, b"top secret")
    got, secrets = store.get(rec.session_id)
    assert got == rec and secrets == b"top secret"
    with pytest.raises(AlreadyExists):
        store.create(rec, b"x")
    vol = apply(rec, Event.INSTABILITY_DETECTED, 2)[0]
    store.cas(rec.session_id, rec.version, vol)
    with pytest.raises(VersionConflict):
        store.cas(rec.session_id, rec.version, vol.with_(version=vol.version + 1))
    assert [r.session_id for r in store.list()] == [rec.session_id]
    store.set_floor(rec.session_id, 1 << 20)
    store.set_floor(rec.session_id, 5)  # never lowered
    assert store.get_floor(rec.session_id) == 1 << 20
    store.delete(rec.session_id, vol.version)
    assert store.get(rec.session_id) is None and store.get_floor(rec.session_id) == 0
    kinds = [c.kind for c in store.changes()]
    assert kinds == ["create", "update", "delete"]


def test_concurrent_cas_one_winner(store):
    rec = _attached(7)
    store.create(rec, b"k")
    wins, losses = [], []
    barrier = threading.Barrier(6)

    def racer(i):
        new = rec.with_(version=rec.version + 1, binding=Transport("203.0.113.1", 1000 + i))
        barrier.wait()
        try:
            store.cas(rec.session_id, rec.version, new)
            wins.append(i)
        except VersionConflict:
            losses.append(i)

    threads = [threading.Thread(target=racer, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(wins) == 1 and len(losses) == 5
    assert store.get(7)[0].binding.port == 1000 + wins[0]


def test_secrets_are_sealed_with_the_cluster_key(store, etcd):
    rec = _attached(9)
    store.create(rec, b"\xaa" * 40)
    raw = store._client.get(store._sid_key(9))[0]
    assert b"\xaa" * 8 not in raw and b"qqqqqq" not in raw  # neither raw nor base64 of it
    other = EtcdStore(etcd.host, etcd.port, cluster_key=os.urandom(32), prefix=store.prefix)
    with pytest.raises(StoreError, match="cluster key"):
        other.get(9)
    other.close()


def test_unreachable_etcd_fails_closed():
    s = EtcdStore("127.0.0.1", 1, cluster_key=KEY, timeout_s=0.5)  # nothing listens on :1
    with pytest.raises(StoreError):
        s.get(1)
    with pytest.raises(StoreError):
        s.cas(1, 0, _attached(1).with_(version=5))
    s.close()


def test_gateway_registration_lives_with_its_lease(store, etcd):
    store.register_gateway("gw-a", ttl_s=2)
    assert store.gateways() == ["gw-a"]
    time.sleep(2.5)  # kept alive by the gateway
    assert store.gateways() == ["gw-a"]
    store._stop.set()  # the gateway dies (no more keepalives, no revoke)
    observer = EtcdStore(etcd.host, etcd.port, cluster_key=KEY, prefix=store.prefix)
    deadline = time.monotonic() + 8
    while observer.gateways() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert observer.gateways() == []
    observer.close()


def test_reattach_over_etcd(store):
    """The reattach path is store-agnostic: a switch through the etcd store."""
    from test_reattach import KEYS, NEW, SID, Harness

    class EtcdHarness(Harness):
        def __init__(self):  # the SQLite harness, with this store instead
            import itertools

            from jvpn.events import EventLog
            from jvpn.policy import default_policy
            from jvpn.reattach import ReattachServer
            from test_reattach import OLD, Clock

            self.clock, self.store = Clock(), store
            self.events = EventLog("gw", clock_ms=self.clock)
            self.projected = []
            self.c2s, self.s2c, self.seq = (itertools.count(100), itertools.count(1),
                                            itertools.count(1))
            self.policy = default_policy()
            self.server = ReattachServer(store, self.policy, self.events,
                                         project=lambda r, k: self.projected.append(r),
                                         next_counter=lambda sid: next(self.s2c),
                                         clock_ms=self.clock)
            rec = apply(new_session(SID, self.clock.ms), Event.ATTACH_OK, self.clock.ms,
                        binding=OLD)[0]
            store.create(rec, KEYS.pack())

    h = EtcdHarness()
    [(_ack, to)] = h.reattach(NEW)
    assert to == NEW and store.get(SID)[0].binding == NEW
