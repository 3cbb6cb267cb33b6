"""Revocation by key (jvpn/gateway/revocation.py): a session lives only while
the key that made it is configured with its inner address, checked at
start, at a reload and on every tick; a revocation the store refused is
retried until the session ends. Regression tests of review R1."""

from __future__ import annotations

import dataclasses
import ipaddress
import json

import pytest
from unit.test_operator_actions import gateway, peer_configs, told

from jvpn import keys
from jvpn.events import EventLog
from jvpn.gate.userspace import UserspaceGate
from jvpn.gateway.daemon import Gateway
from jvpn.policy import default_policy
from jvpn.store import StoreError, Unreadable, record_from_json, record_to_json
from jvpn.store.sqlite import SqliteStore
from kits.daemon_kit import (
    ADDRESS,
    CLIENT,
    GW_KEY,
    LISTEN,
    PEER_INNER,
    Clock,
    FakeSock,
    FakeTun,
    events_of,
    handshake,
    ipv4,
)


def rekeyed_alice():
    """The operator replaced alice's (compromised) key; her address stays."""
    alice, bob = peer_configs()
    return [dataclasses.replace(alice, public_key=keys.public_from_private(
        keys.generate_private())), bob]


def restart(tmp_path, peers) -> Gateway:
    gw = Gateway(private_key=GW_KEY, listen=LISTEN, address=ADDRESS,
                 peers={p.public_key: p for p in peers}, policy=default_policy(),
                 store=SqliteStore(tmp_path / "s.db"), gate=UserspaceGate(),
                 events=EventLog("gw-test"), clock_ms=Clock(), sock=FakeSock(), tun=FakeTun())
    gw.start()
    return gw


def passes(gw, peer) -> bool:
    """Does the gateway deliver the peer's inner packet to its TUN?"""
    n = len(gw.tun.written)
    gw.datapath.datagram(peer.seal(ipv4(PEER_INNER[0])), CLIENT)
    return len(gw.tun.written) == n + 1


class FailingCas:
    """The store refuses every write while ``down``."""

    def __init__(self, store):
        self.real, self.down = store.cas, True
        store.cas = self

    def __call__(self, *args, **kw):
        if self.down:
            raise StoreError("store unavailable (injected)")
        return self.real(*args, **kw)


@pytest.fixture
def gw(tmp_path):
    g = gateway(tmp_path)
    yield g
    g.store.close()


def test_the_record_names_the_key_of_the_peer_that_made_it(gw):
    a = handshake(gw)
    rec = gw.sessions[a.session_id].record
    assert rec.peer_key == keys.encode(peer_configs()[0].public_key)
    assert gw.store.get(a.session_id)[0].peer_key == rec.peer_key


def test_a_rekeyed_peers_old_session_is_revoked_by_the_reload(gw):
    old = handshake(gw)
    out = gw.apply_config(rekeyed_alice(), gw.policy)
    assert out.revoked == [f"{old.session_id:016x}"] and told(gw, old) == ["PEER_REVOKED"]
    assert not passes(gw, old)


def test_a_revocation_the_store_refused_is_retried_every_tick_until_it_ends(gw):
    old = handshake(gw)
    gw.table.confirm(gw.sessions[old.session_id])
    cas = FailingCas(gw.store)
    out = gw.apply_config(rekeyed_alice(), gw.policy)
    assert out.revoke_failed and not out.revoked
    gw.tick()
    assert old.session_id in gw.sessions  # still refused: still there, still pending
    assert any(e["where"] == "revoke" for e in events_of(gw.events, "DaemonError"))
    cas.down = False  # the store is back
    gw.tick()
    assert old.session_id not in gw.sessions and told(gw, old) == ["PEER_REVOKED"]
    assert not passes(gw, old) and not gw.revoke_pending


def test_changed_addresses_whose_revocation_failed_are_retried_too(gw):
    a = handshake(gw)
    alice, bob = peer_configs()
    moved = dataclasses.replace(alice, subnets=(ipaddress.ip_network("192.168.50.0/24"),))
    cas = FailingCas(gw.store)
    assert gw.apply_config([moved, bob], gw.policy).revoke_failed
    cas.down = False
    gw.tick()  # alice's key and inner address are configured: only the retry ends it
    assert a.session_id not in gw.sessions and told(gw, a) == ["PEER_REVOKED"]


def test_a_peer_rekeyed_while_the_gateway_was_down_loses_its_old_session_at_start(tmp_path):
    first = gateway(tmp_path)
    old = handshake(first)
    first.table.confirm(first.sessions[old.session_id])
    first.store.close()
    again = restart(tmp_path, rekeyed_alice())
    try:
        assert old.session_id not in again.sessions and told(again, old) == ["PEER_REVOKED"]
        assert again.store.get(old.session_id) is None and not passes(again, old)
    finally:
        again.stop()
        again.store.close()


def legacy(tmp_path, handshake_ns=None) -> tuple:
    """A confirmed session whose stored record is an older version's (no peer_key)."""
    first = gateway(tmp_path)
    a = handshake(first)
    rec, _secrets = first.store.get(a.session_id)
    old = rec.with_(peer_key="", version=rec.version + 1,
                    handshake_ns=rec.handshake_ns if handshake_ns is None else handshake_ns)
    first.store.cas(a.session_id, rec.version, old)
    first.store.close()
    return a


def test_an_older_record_is_kept_when_its_addresss_peer_made_it(tmp_path):
    a = legacy(tmp_path)
    again = restart(tmp_path, peer_configs())
    try:
        assert a.session_id in again.sessions and passes(again, a)
        again.tick()
        assert a.session_id in again.sessions
    finally:
        again.stop()
        again.store.close()


@pytest.mark.parametrize("peers, handshake_ns", [(rekeyed_alice, None), (peer_configs, 1)])
def test_an_older_record_not_proven_by_its_peers_initiation_is_revoked(tmp_path, peers,
                                                                       handshake_ns):
    """Re-keyed while down; or the store's newest initiation of the key is
    not the record's (another handshake since, or a record not its own)."""
    a = legacy(tmp_path, handshake_ns)
    again = restart(tmp_path, peers())
    try:
        assert a.session_id not in again.sessions and told(again, a) == ["PEER_REVOKED"]
    finally:
        again.stop()
        again.store.close()


def test_both_codecs_carry_the_key_and_read_an_older_record_without_it(gw):
    a = handshake(gw)
    rec = gw.sessions[a.session_id].record
    assert record_from_json(record_to_json(rec)) == rec  # sqlite and etcd share this codec
    doc = json.loads(record_to_json(rec))
    del doc["peer_key"]
    assert record_from_json(json.dumps(doc)).peer_key == ""
    doc["peer_key"] = 7
    with pytest.raises(Unreadable, match="peer_key"):
        record_from_json(json.dumps(doc))


def test_terminate_peer_names_a_session_that_failed_for_any_reason(gw):
    a = handshake(gw)
    handshake(gw, ("192.0.2.11", 6000), peer=1)
    real = gw.table.terminate
    gw.table.terminate = lambda sid, *args, **kw: (_ for _ in ()).throw(RuntimeError("boom"))
    out = gw.terminate_peer("alice")
    assert out["terminated"] == [] and out["failed"] == [f"{a.session_id:016x}: boom"]
    gw.table.terminate = real
    assert a.session_id in gw.sessions  # not ended: nothing said it was


def test_a_session_awaiting_its_revocation_shows_its_own_key_not_the_new_peers(gw):
    from jvpn.gateway import snapshot  # noqa: PLC0415

    old = handshake(gw)
    FailingCas(gw.store)
    gw.apply_config(rekeyed_alice(), gw.policy)
    [row] = [r for r in snapshot.sessions(gw) if r["session_id"] == f"{old.session_id:016x}"]
    assert row["public_key"] == keys.encode(peer_configs()[0].public_key)
    assert row["peer"] is None  # not the re-keyed alice's


def test_a_session_whose_revocation_the_store_refused_carries_no_traffic_meanwhile(gw):
    """Fail closed: until the store ends it, the revoked key's session has
    no element (nothing it sends is delivered) and no downstream (nothing
    is sent to it), and neither comes back with a later write."""
    old = handshake(gw)
    live = gw.sessions[old.session_id]
    gw.table.confirm(live)
    assert passes(gw, old) and gw.table.for_inner(live.inner) is live
    cas = FailingCas(gw.store)
    gw.apply_config(rekeyed_alice(), gw.policy)
    assert old.session_id in gw.revoke_pending
    assert not passes(gw, old) and gw.table.for_inner(live.inner) is None
    gw.table.confirm(live)  # what a late first message would do: no route back
    gw.tick()
    assert not passes(gw, old) and gw.table.for_inner(live.inner) is None
    cas.down = False
    gw.tick()
    assert old.session_id not in gw.sessions and told(gw, old) == ["PEER_REVOKED"]


class WalkCounting(dict):
    """The table's sessions, counting each walk of every session (at 1M
    sessions one walk is tens of ms with the GIL held)."""

    walks = 0

    def _walked(self):
        self.walks += 1

    def __iter__(self):
        self._walked()
        return super().__iter__()

    def keys(self):
        self._walked()
        return super().keys()

    def items(self):
        self._walked()
        return super().items()

    def values(self):
        self._walked()
        return super().values()


def test_a_tick_walks_no_session_while_nothing_is_pending(gw):
    """Issue 15: each tick's revocation step (ten a second) walked every
    session to drop ended ones from an empty pending set: 40-45 ms a tick
    of one C call at 1M, which the operator's pages waited for."""
    gw.table.sessions = WalkCounting(gw.table.sessions)
    a, b = handshake(gw), handshake(gw, peer=1)
    gw.tick()  # the drop counts' report: once per interval, one pass over the sessions
    assert gw.table.sessions.walks == 1
    gw.table.sessions.walks = 0
    for _ in range(3):
        gw.tick()
    assert gw.table.sessions.walks == 0
    assert {a.session_id, b.session_id} <= gw.table.sessions.keys()


def test_a_pending_revocation_whose_session_ended_otherwise_is_dropped(gw):
    old = handshake(gw)
    gw.table.confirm(gw.sessions[old.session_id])
    FailingCas(gw.store)
    assert gw.apply_config(rekeyed_alice(), gw.policy).revoke_failed
    assert gw.revoke_pending == {old.session_id}
    gw.table.drop_local(old.session_id)  # served no more some other way (a handover)
    gw.tick()
    assert not gw.revoke_pending
