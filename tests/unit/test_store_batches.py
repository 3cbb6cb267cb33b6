"""The store's batched writes (issue 15, the timers' storm): ``cas_many``
and ``delete_many`` are one transaction on SQLite, each write still its
record's own compare-and-swap; a failed commit fails them all; a store
without transactions over many records writes one by one."""

from __future__ import annotations

import dataclasses

import pytest

from jvpn.bench.session_memory import synthetic
from jvpn.session import Event, State, apply
from jvpn.store import StoreError, VersionConflict, cas_many, delete_many, set_floors
from jvpn.store.sqlite import SqliteStore


@pytest.fixture
def store(tmp_path):
    s = SqliteStore(tmp_path / "s.db")
    for i in range(4):
        rec, ring, _inner = synthetic(i)
        s.create(rec, ring.pack())
    yield s
    s.close()


def _volatile(rec):
    return apply(rec, Event.INSTABILITY_DETECTED, rec.created_ms + 1, transport_lost_ms=1)[0]


def test_a_conflict_is_that_records_alone(store):
    recs = sorted(store.list(), key=lambda r: r.session_id)
    stale = dataclasses.replace(recs[1], version=recs[1].version - 1)
    results = cas_many(store, [(recs[0], _volatile(recs[0])), (stale, _volatile(stale)),
                               (recs[2], _volatile(recs[2]))])
    assert results[0] is None and results[2] is None
    assert isinstance(results[1], VersionConflict)
    got = {r.session_id: r.state for r in store.list()}
    assert [got[r.session_id] for r in recs] == [State.VOLATILE, State.ATTACHED,
                                                 State.VOLATILE, State.ATTACHED]


def test_a_failed_commit_fails_every_write_and_changes_nothing(store, monkeypatch):
    recs = store.list()

    def failing(_ops):
        raise StoreError("session store commit failed: disk I/O error (injected)")
    monkeypatch.setattr(store, "write_many", failing)
    results = cas_many(store, [(r, _volatile(r)) for r in recs])
    assert all(isinstance(e, StoreError) for e in results) and len(results) == len(recs)
    deleted = delete_many(store, [(r.session_id, r.version) for r in recs])
    assert all(isinstance(e, StoreError) for e in deleted) and len(deleted) == 4
    assert {r.state for r in store.list()} == {State.ATTACHED} and len(store.list()) == 4


def test_deletes_in_one_transaction_each_at_its_version(store):
    recs = sorted(store.list(), key=lambda r: r.session_id)
    results = delete_many(store, [(recs[0].session_id, recs[0].version),
                                  (recs[1].session_id, recs[1].version + 1)])
    assert results[0] is None and isinstance(results[1], VersionConflict)
    assert {r.session_id for r in store.list()} == {r.session_id for r in recs[1:]}


class NoBatches:
    """A store with single-record writes only (as etcd is here)."""

    def __init__(self, fail_from: int):
        self.calls, self.fail_from = 0, fail_from

    def cas(self, *_a) -> None:
        self.calls += 1
        if self.calls == 2:
            raise VersionConflict("moved")
        if self.calls >= self.fail_from:
            raise StoreError("store unavailable")


def test_one_by_one_a_store_failure_ends_the_batch_and_a_conflict_does_not():
    rec = synthetic(0)[0]
    store = NoBatches(fail_from=3)
    results = cas_many(store, [(rec, _volatile(rec))] * 5)
    assert results[0] is None and isinstance(results[1], VersionConflict)
    assert all(type(e) is StoreError for e in results[2:]) and store.calls == 3


def test_floors_in_one_transaction_are_only_raised_and_a_value_out_of_range_is_its_own(store):
    """``set_floors`` (a batch of TERMINATEs, review k16r2 #3): one
    transaction; a floor is never lowered; a floor sqlite3 cannot bind
    (OverflowError) is that floor's error, not the batch's (review k16r2 #2)."""
    a, b, c = sorted(r.session_id for r in store.list())[:3]
    store.set_floor(b, 1000)
    results = set_floors(store, [(a, 50), (b, 20), (c, 1 << 64)])
    assert results[0] is None and results[1] is None and isinstance(results[2], StoreError)
    assert (store.get_floor(a), store.get_floor(b)) == (50, 1000)
    assert set_floors(store, []) == []


def test_a_version_past_the_stores_integers_is_refused_before_any_write(store):
    """Review k16r2 #2: a stored version at 2^63 - 1 (damaged, hostile):
    its next version is a StoreError of its own, the batch's others are
    written."""
    recs = sorted(store.list(), key=lambda r: r.session_id)
    top = dataclasses.replace(recs[0], version=(1 << 63) - 1)
    results = cas_many(store, [(top, _volatile(top)), (recs[1], _volatile(recs[1]))])
    assert isinstance(results[0], StoreError) and results[1] is None
