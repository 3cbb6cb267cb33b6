"""Issue 15 review: Store.restorable on etcd pages on the raw key bytes (a
key that does not decode must not end the pass early) and reads each
session's floor and ceiling as that session's own (one that does not parse
costs that session only). A fake etcd3gw client: the range reads only."""

from __future__ import annotations

import json
import os

import pytest

from jvpn.session import Event, Transport, apply, new_session
from jvpn.store import StoreError, record_to_json
from jvpn.store.etcd import EtcdStore


def _b(key) -> bytes:
    return key if isinstance(key, bytes) else key.encode("latin-1")  # as etcd3gw sends it


class FakeEtcd:
    """etcd's range read: keys in [start, range_end), ascending, ``limit``."""

    def __init__(self):
        self.kv: dict[bytes, bytes] = {}

    def get(self, start, metadata, range_end, limit, sort_order, sort_target):
        assert (metadata, sort_order, sort_target) == (True, "ascend", "key")
        keys = sorted(k for k in self.kv if _b(start) <= k < _b(range_end))[:limit]
        return [(self.kv[k], {"key": k, "mod_revision": 1}) for k in keys]


def _store() -> tuple[EtcdStore, FakeEtcd]:
    store = EtcdStore(cluster_key=os.urandom(32), prefix="/t/")
    store._client = fake = FakeEtcd()
    return store, fake


def _put_session(store: EtcdStore, fake: FakeEtcd, key: bytes, sid: int) -> None:
    rec = apply(new_session(sid, 1), Event.ATTACH_OK, 1, binding=Transport("192.0.2.1", 1))[0]
    value = {"record": record_to_json(rec), "secrets": store._seal(sid, b"secrets")}
    fake.kv[key] = json.dumps(value).encode()


def test_a_key_that_does_not_decode_does_not_end_the_paging():
    store, fake = _store()
    for sid in (1, 2):
        _put_session(store, fake, f"/t/sessions/{sid:016x}".encode(), sid)
    _put_session(store, fake, b"/t/sessions/\xff", 3)  # the last of the first page
    _put_session(store, fake, b"/t/sessions/\xff\x01", 4)  # on the second page
    got = list(store.restorable(page=3))
    assert [s.record.session_id for s in got] == [1, 2, 3, 4]
    assert [s.secrets for s in got] == [b"secrets"] * 4


def test_a_floor_or_ceiling_that_does_not_parse_costs_that_session_only():
    store, fake = _store()
    for sid in (1, 2, 3):
        _put_session(store, fake, f"/t/sessions/{sid:016x}".encode(), sid)
    fake.kv[f"/t/floors/{1:016x}".encode()] = b"many"
    fake.kv[f"/t/replay/{2:016x}".encode()] = b""
    fake.kv[f"/t/floors/{3:016x}".encode()] = b"77"
    fake.kv[f"/t/replay/{3:016x}".encode()] = b"90 exact"
    got = {s.record.session_id: s for s in store.restorable(page=2)}
    assert isinstance(got[1].problem, StoreError) and isinstance(got[2].problem, StoreError)
    assert got[3].problem is None and (got[3].floor, got[3].ceiling) == (77, (90, True))


DEEP = b"[" * 100_000 + b"]" * 100_000  # json.loads raises RecursionError on it


def test_a_session_value_nested_too_deep_costs_that_session_only():
    """Review k17b #2: the envelope {"record", "secrets"} of an etcd value is
    parsed before the record; its RecursionError left the whole pass (the
    start, a sweep's list, the watch) where a ValueError costs one session."""
    store, fake = _store()
    for sid in (1, 2, 3):
        _put_session(store, fake, f"/t/sessions/{sid:016x}".encode(), sid)
    fake.kv[f"/t/sessions/{2:016x}".encode()] = DEEP
    got = [s for s in store.restorable(page=10) if s.problem is None]
    assert sorted(s.record.session_id for s in got) == [1, 3]


def test_a_gateway_registration_nested_too_deep_is_a_store_error():
    store, _fake = _store()
    store._get_raw = lambda _key: (DEEP, {})
    with pytest.raises(StoreError):
        store.gateway_lease("gw-b")
