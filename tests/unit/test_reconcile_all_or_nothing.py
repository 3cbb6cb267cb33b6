"""Issue 15 review: a restart's reconcile is all or nothing. One record that
does not read costs that session only; a pass that does not end (a page
read, a batch of elements, more sessions of ours than MaxSessions) fails the
start and removes nothing; others' standbys come after our sessions and do
not count against MaxSessions."""

from __future__ import annotations

import os
import sqlite3
import threading

import pytest

from jvpn.codes import Reason
from jvpn.gate import abi
from jvpn.gate.batch import BatchNotWritten, ElementBatch
from jvpn.gate.element import GateFull, RuntimeSlots
from jvpn.gate.kernel import XdpGate
from jvpn.gateway.ownership import LocalOwnership
from jvpn.gateway.reconcile import TooManySessions
from jvpn.keys import derive_session_keys
from jvpn.session import Event, Transport, apply, new_session
from jvpn.store import StoreError
from jvpn.store.sqlite import SqliteStore
from kits.daemon_kit import AdmitAll, events_of, make_gateway


@pytest.fixture(autouse=True)
def _private_umask():
    old = os.umask(0o077)
    yield
    os.umask(old)


def _store(path, sids, owner: str = "gw-test", store: SqliteStore | None = None) -> SqliteStore:
    store = store or SqliteStore(path)
    for sid in sids:
        rec, _tr = apply(new_session(sid, 1, owner=owner), Event.ATTACH_OK, 1,
                         binding=Transport("192.0.2.1", 1000 + sid % 50000))
        store.create(rec.with_(inner_addr="10.99.0.2"), derive_session_keys(
            sid, bytes([sid % 256]) * 32, b"\x06" * 32, b"\x07" * 32).pack())
        store.set_floor(sid, 100 + sid)
    return store


SIDS = list(range(1000, 1020))  # 20 sessions, in id order


def _unreadable(gw) -> list[dict]:
    return [e for e in gw.events.recent if e["event_type"] == "DaemonError"
            and e["reason_code"] == Reason.STORE_RECORD_UNREADABLE]


# ------------------------------------------------------------ one record, one session
@pytest.mark.parametrize("column, value", [("secrets", "'garbage'"), ("secrets", "5")])
def test_one_record_with_garbage_secrets_costs_that_session_only(tmp_path, column, value):
    store = _store(tmp_path / "s.db", SIDS)
    store._db.execute(f"UPDATE sessions SET {column}={value} WHERE session_id=1003")
    gw = make_gateway(tmp_path, store=store, gate=AdmitAll())
    gw.reconcile()
    assert set(gw.table.sessions) == set(SIDS) - {1003}
    assert len(_unreadable(gw)) == 1
    assert events_of(gw.events, "Reconciled")[0]["sessions"] == 19


def test_the_reconciled_event_says_its_cpu_seconds_beside_its_wall_seconds(tmp_path):
    """`bench scale` reports both (reconcile_cpu_s): on a shared machine the
    wall time moves with the others' load, the process's CPU time far less."""
    gw = make_gateway(tmp_path, store=_store(tmp_path / "s.db", SIDS), gate=AdmitAll())
    gw.reconcile()
    [done] = events_of(gw.events, "Reconciled")
    assert done["sessions"] == 20
    assert isinstance(done["cpu_s"], float) and done["cpu_s"] >= 0
    assert isinstance(done["seconds"], float) and done["seconds"] >= 0


def test_a_floor_or_ceiling_stored_as_text_costs_that_session_only(tmp_path):
    store = _store(tmp_path / "s.db", SIDS)
    store._db.execute("UPDATE counter_floors SET floor='many' WHERE session_id=1004")
    store.raise_replay_ceiling(1005, 7)
    store._db.execute("UPDATE replay_ceilings SET ceiling='x' WHERE session_id=1005")
    got = {s.record.session_id: s for s in store.restorable(page=3)}
    assert set(got) == set(SIDS)
    assert isinstance(got[1004].problem, StoreError) and isinstance(got[1005].problem, StoreError)
    assert [sid for sid, s in got.items() if s.problem is None] == \
        [sid for sid in SIDS if sid not in (1004, 1005)]


# ------------------------------------------------------------ a pass that does not end
class FailingDb:
    """The store's connection, its ``n``-th restorable page read failing."""

    def __init__(self, db: sqlite3.Connection, n: int):
        self.db, self.n, self.pages = db, n, 0

    def execute(self, sql, *args):
        if "ORDER BY s.session_id LIMIT" in sql:
            self.pages += 1
            if self.pages == self.n:
                raise sqlite3.OperationalError("disk I/O error")
        return self.db.execute(sql, *args)


class SmallPages:
    """The store as the gateway sees it, its restorable read 5 records a page."""

    def __init__(self, store: SqliteStore):
        self._store = store

    def __getattr__(self, name):
        return getattr(self._store, name)

    def restorable(self):
        return self._store.restorable(page=5)


def _first_run(tmp_path, gate) -> SqliteStore:
    store = _store(tmp_path / "s.db", SIDS)
    make_gateway(tmp_path, store=store, gate=gate).reconcile()
    assert gate.ids() == set(SIDS)
    return store


def test_a_page_read_failure_fails_the_start_and_leaves_the_gate_alone(tmp_path):
    gate = AdmitAll()
    store = _first_run(tmp_path, gate)
    store._db = FailingDb(store._db, n=2)
    gw = make_gateway(tmp_path, store=SmallPages(store), gate=gate)
    with pytest.raises(StoreError) as e:
        gw.start()
    assert "\n" not in str(e.value) and "disk I/O error" in str(e.value)
    assert gate.ids() == set(SIDS)  # not one element removed
    assert events_of(gw.events, "Reconciled") == []


# ------------------------------------------------------------ MaxSessions
def test_more_sessions_of_ours_than_max_sessions_fails_the_start_naming_both(tmp_path):
    gate = AdmitAll()
    store = _first_run(tmp_path, gate)
    gate.max_sessions = 6
    gw = make_gateway(tmp_path, store=store, gate=gate)
    with pytest.raises(TooManySessions) as e:
        gw.reconcile()
    line = str(e.value)
    assert "\n" not in line and "20 sessions" in line and "MaxSessions (6)" in line
    assert "--max-sessions" in line
    assert gate.ids() == set(SIDS) and len(store.list()) == 20  # nothing removed
    assert events_of(gw.events, "Reconciled") == []


class OwnsByName(LocalOwnership):
    """A cluster's ownership as reconcile asks it: the record's owner."""

    def owns(self, rec) -> bool:
        return rec.owner == self.node_id


def test_our_sessions_come_before_standbys_which_take_no_element(tmp_path):
    """Other gateways' sessions are remote entries (their own map,
    docs/cluster.md): at MaxSessions of ours, every one of them is still
    stood by, and none takes an element."""
    others, ours = [10, 11, 12, 13, 14], [100, 101, 102, 103, 104, 105]  # others first by id
    store = _store(tmp_path / "s.db", ours)
    _store(None, others, owner="gw-other", store=store)
    gate = AdmitAll()
    gate.max_sessions = 6
    gw = make_gateway(tmp_path, store=store, gate=gate)
    gw.ownership = OwnsByName("gw-test")
    gw.reconcile()
    assert set(gw.table.sessions) == set(ours)
    assert set(gw.table.standby) == set(others)
    assert gate.ids() == set(ours) and set(gate.model.remote) == set(others)


def test_standbys_do_not_count_against_max_sessions_at_a_handshake(tmp_path):
    store = _store(tmp_path / "s.db", [10, 11], owner="gw-other")
    gate = AdmitAll()
    gate.max_sessions = 1
    gw = make_gateway(tmp_path, store=store, gate=gate)
    gw.ownership = OwnsByName("gw-test")
    gw.reconcile()
    assert len(gw.table.standby) == 2 and not gw.table.full()


# ------------------------------------------------------------ a batch the maps refuse
class PartlyWritingMaps:
    """Maps whose batch update writes ``k`` elements, then fails."""

    def __init__(self, k: int):
        self.k, self.held = k, {}

    def list_sessions(self):
        return list(self.held.items())

    def get_session(self, sid):
        return self.held.get(sid)

    def put_sessions(self, items):
        for sid, element in items[:self.k]:
            self.held[sid] = element
        raise GateFull("the sessions map is full")


def test_a_batch_written_in_part_reports_exactly_what_landed():
    maps = PartlyWritingMaps(k=3)
    batch = ElementBatch(maps, flush_every=100)
    for sid in range(1, 6):
        batch.put(sid, abi.Session(rt_slot=sid))
    with pytest.raises(BatchNotWritten) as e:
        batch.flush()
    assert "2 of 5" in str(e.value)
    assert set(batch.written) == {1, 2, 3} and batch.unwritten == [4, 5]
    assert batch.flushed == 3 and batch.pending == {}


class RefusingBatchGate(AdmitAll):
    """A gate whose batch, at its end, is not written: XdpGate.batched."""

    def batched(self):
        gate = self

        class Batch:
            def __enter__(self):
                return None

            def __exit__(self, *exc):
                if exc[0] is None:
                    raise BatchNotWritten(f"2 of {len(gate.ids())} session elements not written")
                return False

        return Batch()


def test_a_batch_not_written_fails_the_start_and_removes_nothing(tmp_path):
    gate = RefusingBatchGate()
    store = _store(tmp_path / "s.db", SIDS)
    gw = make_gateway(tmp_path, store=store, gate=gate)
    with pytest.raises(BatchNotWritten):
        gw.reconcile()
    assert events_of(gw.events, "Reconciled") == []


class FailsMidPass(AdmitAll):
    """A gate whose batch is refused at the ``n``-th element write of the
    pass (a flush inside one session's put: the batch's, not that session's)."""

    def __init__(self, n: int):
        super().__init__()
        self.n, self.writes = n, 0

    def _write(self, *a, **k):
        self.writes += 1
        if self.writes == self.n:
            raise BatchNotWritten("4096 of 4096 session elements not written: map full")
        super()._write(*a, **k)


def test_a_batch_refused_mid_pass_fails_the_start_not_one_session(tmp_path):
    gate = AdmitAll()
    store = _first_run(tmp_path, gate)
    failing = FailsMidPass(n=0)  # armed below
    for sid in SIDS:  # the first run's elements, in the gate that fails
        failing.put(store.get(sid)[0], derive_session_keys(
            sid, bytes([sid % 256]) * 32, b"\x06" * 32, b"\x07" * 32))
    failing.n = failing.writes + 7
    gw = make_gateway(tmp_path, store=store, gate=failing)
    with pytest.raises(BatchNotWritten):
        gw.reconcile()
    assert failing.ids() == set(SIDS)  # nothing removed
    assert events_of(gw.events, "Reconciled") == []


def test_the_kernel_gate_frees_the_slots_of_new_elements_not_written():
    gate = XdpGate.__new__(XdpGate)  # its maps faked: no pins needed for the batch
    gate.maps = PartlyWritingMaps(k=2)
    gate.slots = RuntimeSlots(16)
    gate._element_lock, gate._batch = threading.Lock(), None
    store_recs = {sid: apply(new_session(sid, 1), Event.ATTACH_OK, 1,
                             binding=Transport("192.0.2.1", 1000))[0] for sid in range(1, 6)}
    with pytest.raises(BatchNotWritten), gate.batched():
        for sid, rec in store_recs.items():
            gate.put(rec, derive_session_keys(sid, b"\x05" * 32, b"\x06" * 32, b"\x07" * 32),
                     first=True)
    assert set(gate.maps.held) == {1, 2}
    assert set(gate.slots.slot_of) == {1, 2}  # the three that did not land gave theirs back


def test_the_kernel_gate_writes_nothing_more_when_the_block_raises():
    gate = XdpGate.__new__(XdpGate)
    gate.maps = PartlyWritingMaps(k=5)
    gate.slots = RuntimeSlots(16)
    gate._element_lock, gate._batch = threading.Lock(), None
    rec = apply(new_session(1, 1), Event.ATTACH_OK, 1, binding=Transport("192.0.2.1", 1000))[0]
    with pytest.raises(StoreError), gate.batched():
        gate.put(rec, derive_session_keys(1, b"\x05" * 32, b"\x06" * 32, b"\x07" * 32),
                 first=True)
        raise StoreError("session store read failed: disk I/O error")  # not masked
    assert gate.maps.held == {} and gate.slots.slot_of == {}
