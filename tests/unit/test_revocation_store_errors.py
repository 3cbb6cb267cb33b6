"""Revocation of an older record (no peer_key) when the store cannot name
its key (jvpn/gateway/revocation.py): fails closed at start and on every
tick, as a reload does, and reads the store at most once per session.
Regression tests of review R4."""

from __future__ import annotations

import pytest
from unit.test_operator_actions import peer_configs, told
from unit.test_revocation import legacy, passes, rekeyed_alice, restart

from jvpn.store import StoreError
from jvpn.store.sqlite import SqliteStore


class Unreadable:
    """last_initiation raises, as for a garbage value at initiations/<key>; counts calls."""

    def __init__(self, monkeypatch):
        self.calls = 0

        def last_initiation(store, peer):
            self.calls += 1
            raise StoreError("etcd value at /jvpn/initiations/.. is not a timestamp: b'x'")
        monkeypatch.setattr(SqliteStore, "last_initiation", last_initiation)


@pytest.mark.parametrize("peers", [rekeyed_alice, peer_configs])
def test_an_older_record_whose_key_the_store_cannot_name_is_revoked(tmp_path, monkeypatch,
                                                                    peers):
    a = legacy(tmp_path)
    Unreadable(monkeypatch)
    again = restart(tmp_path, peers())
    try:
        again.tick()
        assert a.session_id not in again.sessions and told(again, a) == ["PEER_REVOKED"]
        assert not passes(again, a)
    finally:
        again.stop()
        again.store.close()


def test_an_unresolved_session_is_not_looked_up_again_every_tick(tmp_path, monkeypatch):
    """The revocation's write fails too: the session stays pending, retried
    every tick, but its key is not read from the store again under the lock."""
    a = legacy(tmp_path)
    reads = Unreadable(monkeypatch)
    real_cas = SqliteStore.cas

    def refused(self, *args, **kw):
        raise StoreError("store unavailable (injected)")
    monkeypatch.setattr(SqliteStore, "cas", refused)
    again = restart(tmp_path, peer_configs())
    try:
        for _ in range(5):
            again.tick()
        assert reads.calls == 1 and a.session_id in again.revoke_pending
        monkeypatch.setattr(SqliteStore, "cas", real_cas)  # the store is back
        again.tick()
        assert a.session_id not in again.sessions and told(again, a) == ["PEER_REVOKED"]
        assert reads.calls == 1
    finally:
        again.stop()
        again.store.close()
