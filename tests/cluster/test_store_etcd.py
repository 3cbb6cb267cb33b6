"""The etcd store against a real etcd (Debian etcd-server on loopback, started
by the test): the same contract as the SQLite store, secrets sealed with the
cluster key, fail closed when etcd is gone, gateway leases."""

from __future__ import annotations

import os
import time

import pytest

from jvpn.session import Event, Transport, apply, new_session
from jvpn.store import AlreadyExists, StoreError, VersionConflict
from jvpn.store.etcd import EtcdStore
from kits.store_contract import (
    concurrent_cas_has_one_winner,
    initiation_claims_have_one_winner,
    lowering_a_claim_compares_first,
    replay_ceiling_rules,
    secrets_move_with_the_record,
)

T1 = Transport("192.0.2.10", 5555)
KEY = os.urandom(32)


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
    concurrent_cas_has_one_winner(store, _attached(7), racers=6)


def test_initiation_claims_one_winner(store):
    initiation_claims_have_one_winner(store, racers=6)


def test_lowering_a_claim_compares_first(store):
    lowering_a_claim_compares_first(store)


def test_an_unparsable_initiation_timestamp_fails_closed(store, etcd):
    import etcd3gw  # noqa: PLC0415

    peer = b"\x07" * 32
    client = etcd3gw.client(host=etcd.host, port=etcd.port)
    client.put(f"{store.prefix}initiations/{peer.hex()}", "not a number")
    with pytest.raises(StoreError, match="not a timestamp"):
        store.claim_initiation(peer, 5)


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
    from unit.test_reattach import NEW, SID, Harness

    h = Harness(None, store=store)
    [(_ack, to)] = h.reattach(NEW)
    assert to == NEW and store.get(SID)[0].binding == NEW


def test_cas_only_while_a_gateway_holds_its_lease(store):
    """One transaction: the record at the expected version *and* the named
    gateway registered under the named lease (the handoff's request and
    handover); which of the two failed is told apart."""
    from jvpn.store import GatewayGone

    rec = _attached(0xF000000000000009)
    store.create(rec, b"k" * 32)
    lease = store.register_gateway("gw-b", ttl_s=2)
    asked = rec.with_(version=rec.version + 1, handoff_to="gw-b", handoff_lease=lease)
    store.cas(rec.session_id, rec.version, asked, alive=("gw-b", lease))
    assert store.get(rec.session_id)[0].handoff_to == "gw-b"
    nxt = asked.with_(version=asked.version + 1)
    with pytest.raises(GatewayGone):
        store.cas(rec.session_id, asked.version, nxt, alive=("gw-b", lease + 1))
    with pytest.raises(GatewayGone):
        store.cas(rec.session_id, asked.version, nxt, alive=("gw-nobody", lease))
    with pytest.raises(VersionConflict):
        store.cas(rec.session_id, rec.version, nxt, alive=("gw-b", lease))
    assert store.get(rec.session_id)[0] == asked  # nothing written by the failures


def test_a_node_id_is_registered_once(store, etcd):
    from jvpn.store.etcd import NodeIdTaken

    store.register_gateway("gw-x", ttl_s=2)
    other = EtcdStore(etcd.host, etcd.port, cluster_key=KEY, prefix=store.prefix)
    try:
        with pytest.raises(NodeIdTaken, match="unique"):
            other.register_gateway("gw-x", ttl_s=2)
        store._stop.set()  # the first one dies; its registration ends with its lease
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline:
            try:
                other.register_gateway("gw-x", ttl_s=2)
                break
            except NodeIdTaken:
                time.sleep(0.2)
        assert other.gateway_lease("gw-x") == other.lease_id
    finally:
        other.close()


def test_replay_ceiling_rules(store):
    replay_ceiling_rules(store, _attached(11))


def test_a_rekey_writes_record_and_secrets_together(store):
    secrets_move_with_the_record(store, _attached())
