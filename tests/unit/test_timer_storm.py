"""Issue 15, "Silent clients make a storm": many sessions due for a timer
transition at once (all silent for heartbeat_volatile_ms) are committed a
batch per store transaction (one fsync), their events after the commit; a
batch the store did not take changes nothing and is reported once; and
the control lock is free between batches (the operator, a reattach, a
stop are served during the storm). Review k16r2: a failed or conflicting
write is tried once per session per tick; one record's error is its own;
key expiry is the batch's; an ended element leaves right after the commit."""

from __future__ import annotations

import math
import threading
import time
from collections import Counter

import pytest

from jvpn.bench.session_memory import NOW_MS, install, synthetic
from jvpn.gate import abi
from jvpn.gate.userspace import UserspaceGate
from jvpn.gateway import timer_checks
from jvpn.policy import default_policy
from jvpn.session import State
from jvpn.store import StoreError
from jvpn.store import sqlite as sqlite_store
from jvpn.store.sqlite import SqliteStore
from kits.daemon_kit import Clock, events_of, make_gateway

P = default_policy()
BATCH = timer_checks.TIMER_BATCH


class _FailingCommit:
    """A transaction whose commit fails (a full or failing disk): the real
    transaction is rolled back, the caller sees the store's error."""

    def __init__(self, tx):
        self.tx = tx

    def __enter__(self):
        return self.tx.__enter__()

    def __exit__(self, *_exc):
        self.tx.__exit__(RuntimeError, RuntimeError("injected"), None)  # rolls back
        raise StoreError("session store commit failed: disk I/O error (injected)")


class WatchedStore(SqliteStore):
    """Counts transactions (each is one fsync), can make them slow or make
    their commits fail, and calls ``on_transaction`` as each begins."""

    def __init__(self, path):
        super().__init__(path)
        self.transactions = 0
        self.floor_writes = 0
        self.fail_commits = False
        self.delay_s = 0.0
        self.on_transaction = lambda: None

    def set_floor(self, session_id: int, floor: int) -> None:
        self.floor_writes += 1  # a send counter's reservation (not a timer's write)
        super().set_floor(session_id, floor)

    def _tx(self):
        self.transactions += 1
        self.on_transaction()
        time.sleep(self.delay_s)
        tx = super()._tx()
        return _FailingCommit(tx) if self.fail_commits else tx


class PutsGate(UserspaceGate):
    """Counts the element writes."""

    def __init__(self):
        super().__init__()
        self.puts = 0

    def put(self, *args, **kwargs) -> None:
        self.puts += 1
        super().put(*args, **kwargs)


def storm(tmp_path, n: int, **gateway):
    """A gateway serving ``n`` idle ATTACHED sessions (records in its
    store), looked at once; then silent past heartbeat_volatile_ms.
    ``gateway``: more of make_gateway's arguments (a socket)."""
    clock = Clock(NOW_MS)
    store, gate = WatchedStore(tmp_path / "s.db"), PutsGate()
    for i in range(n):
        rec, ring, _inner = synthetic(i)
        store.create(rec, ring.pack())
    gw = make_gateway(tmp_path, clock=clock, store=store, gate=gate, **gateway)
    gw.entitled = lambda live: True  # synthetic peers: all configured
    install(gw.table, n)
    gw.tick()  # new sessions: each looked at once, none due
    clock.ms += P.heartbeat_volatile_ms + 1
    store.transactions, gate.puts = 0, 0
    return gw, store, gate


def ticks_until_none_attached(gw, most: int = 50) -> None:
    """A tick does a slice of the storm's batches (the rest: next tick)."""
    for _ in range(most):
        gw.tick()
        if State.ATTACHED not in states(gw):
            return


def states(gw) -> set[State]:
    return {live.record.state for live in gw.sessions.values()}


def stored_states(store) -> set[State]:
    return {rec.state for rec in store.list()}


def test_a_storm_is_one_transaction_per_batch_and_events_follow_each_commit(tmp_path):
    n = 2 * BATCH + 5
    gw, store, gate = storm(tmp_path, n)
    changes_at_transaction: list[int] = []
    store.on_transaction = lambda: changes_at_transaction.append(
        len(events_of(gw.events, "SessionStateChange")))
    ticks_until_none_attached(gw)
    assert states(gw) == stored_states(store) == {State.VOLATILE}
    assert store.transactions <= math.ceil(n / BATCH)
    # no batch's events before its commit: batch k began after exactly
    # the earlier batches' events
    assert changes_at_transaction == [k * BATCH for k in range(len(changes_at_transaction))]
    assert len(events_of(gw.events, "SessionStateChange")) == n
    assert gate.puts == n  # every element followed its record


def test_a_batch_the_store_did_not_take_changes_nothing_and_is_reported_once(tmp_path):
    n = BATCH // 2
    gw, store, gate = storm(tmp_path, n)
    versions = {sid: live.record.version for sid, live in gw.sessions.items()}
    reported = gw.incidents.total
    store.fail_commits = True
    gw.tick()
    assert states(gw) == stored_states(store) == {State.ATTACHED}
    assert {sid: live.record.version for sid, live in gw.sessions.items()} == versions
    assert gate.puts == 0
    assert not events_of(gw.events, "SessionStateChange")
    assert not events_of(gw.events, "TransitionRejected")  # not one per session
    assert gw.incidents.total == reported + 1  # the batch, once
    store.fail_commits = False
    gw.clock_ms.ms += 1
    gw.tick()  # retried next tick: the sessions are still due
    assert states(gw) == stored_states(store) == {State.VOLATILE}
    assert store.transactions == 2


def test_a_conflict_is_that_records_alone(tmp_path):
    gw, store, _gate = storm(tmp_path, 8)
    lone = next(iter(gw.sessions.values())).record
    store.cas(lone.session_id, lone.version, lone.__class__(**{
        **{f: getattr(lone, f) for f in lone.__dataclass_fields__}, "version": lone.version + 5}))
    gw.tick()
    rejected = events_of(gw.events, "TransitionRejected")
    assert [e["session_id"] for e in rejected] in ([lone.session_id],
                                                   [f"{lone.session_id:016x}"])
    assert sum(live.record.state is State.VOLATILE for live in gw.sessions.values()) == 7


@pytest.mark.parametrize("delay_s", [0.01])
def test_the_control_lock_is_free_between_batches(tmp_path, delay_s):
    """A control request (here: the lock taken as the operator socket and
    a reattach take it) waits one batch, not the storm."""
    n = 4 * BATCH
    gw, store, _gate = storm(tmp_path, n)
    store.delay_s = delay_s  # a slow disk: each transaction takes a while
    served_after: list[int] = []

    def request() -> None:
        with gw.control:
            served_after.append(store.transactions)

    waiter = threading.Thread(target=request)

    def first_transaction() -> None:
        if not waiter.is_alive() and not served_after:
            waiter.start()  # asks for the lock while the first batch holds it
            time.sleep(0.05)  # (it is waiting before the batch commits)
    store.on_transaction = first_transaction
    ticks_until_none_attached(gw)
    waiter.join(5)
    assert states(gw) == {State.VOLATILE}
    assert served_after and served_after[0] < store.transactions, (
        f"served after {served_after} of {store.transactions} transactions")


def test_a_storm_of_ends_is_one_transaction_per_batch_and_one_for_its_deletes(tmp_path):
    """VOLATILE past volatile_to_degraded_ms with recovery_expiry_terminates:
    each batch's TERMINATED records in one transaction, their deletes in one more."""
    n = BATCH + 3
    gw, store, _gate = storm(tmp_path, n)
    ticks_until_none_attached(gw)
    gw.policy = P.__class__(**{**P.as_dict(), "recovery_expiry_terminates": True})
    gw.clock_ms.ms += P.volatile_to_degraded_ms + 1
    store.transactions = 0
    for _ in range(20):
        gw.tick()
        if not gw.sessions:
            break
    assert not gw.sessions and not store.list()
    assert len(events_of(gw.events, "SessionTerminated")) == n
    # each batch: its records, the TERMINATEs' send-counter floors (a
    # restored session's first send), its deletes: one transaction each
    assert store.transactions <= 3 * math.ceil(n / BATCH) and store.floor_writes == 0
    assert len([m for m, _to in gw.sock.sent if m[0] == abi.MSG_TERMINATE]) == n


def test_a_gate_write_that_fails_for_one_session_leaves_the_others_followed(tmp_path):
    """The batch is committed: every other record's element and event
    follow; the one whose element write failed is reported (as before)."""
    gw, store, gate = storm(tmp_path, 6)
    unlucky = sorted(gw.sessions)[2]
    real_put = gate.put

    def put(rec, *args, **kwargs):
        if rec.session_id == unlucky:
            raise OSError(28, "No space left on device (injected)")
        real_put(rec, *args, **kwargs)
    gate.put = put
    reported = gw.incidents.total
    gw.tick()
    assert stored_states(store) == {State.VOLATILE}
    assert gate.puts == 5
    assert len(events_of(gw.events, "SessionStateChange")) == 5
    assert gw.incidents.total == reported + 1


# ------------------------------------------------------------ review k16r2
class _RealTime(Clock):
    """The test clock, moving with real time from the moment it is made
    real (the gateway's clock does: each batch and each 1 ms yield between
    batches take real milliseconds)."""

    def __call__(self) -> int:
        return self.ms + int((time.monotonic() - self.t0) * 1000)


def _clock_moves_with_each_transaction(gw, _store) -> None:
    clock = gw.clock_ms
    clock.t0 = time.monotonic()
    clock.__class__ = _RealTime


def _count_record_writes(monkeypatch) -> Counter:
    """Compare-and-swap attempts per session (each of a batch's savepoints
    and each single ``cas`` run jvpn/store/sqlite.py ``_cas``)."""
    tries: Counter = Counter()
    real = sqlite_store._cas

    def counted(db, session_id, *args, **kwargs):
        tries[session_id] += 1
        return real(db, session_id, *args, **kwargs)
    monkeypatch.setattr(sqlite_store, "_cas", counted)
    return tries


def test_a_failing_store_is_tried_once_per_session_per_tick_not_every_batch(tmp_path, monkeypatch):
    """Review k16r2 #1: a store that fails every commit (a full disk) and at least
    one batch of due sessions. Each failed batch's sessions are due again
    at now + 1 ms, the next batch (>= 1 ms later) pops the same sessions,
    and the tick retries them for its whole 0.5 s slice: the same records
    hammered tens to hundreds of times a tick, the control lock held for
    ~0.5 s of every ~0.6 s, one DaemonError per batch. Before (8456ec6):
    one attempt per session per tick; the docs say "its sessions are due
    again next tick"."""
    n = BATCH
    gw, store, _gate = storm(tmp_path, n)
    tries = _count_record_writes(monkeypatch)
    _clock_moves_with_each_transaction(gw, store)
    store.fail_commits = True
    reported = gw.incidents.total
    t0 = time.monotonic()
    gw.tick()
    took = time.monotonic() - t0
    assert states(gw) == {State.ATTACHED}
    most, incidents = max(tries.values()), gw.incidents.total - reported
    assert most <= 1, (f"one tick wrote one session's record {most} times "
                       f"({store.transactions} transactions, {incidents} incidents, {took:.2f} s)")


def test_a_persistent_conflict_is_rejected_once_per_session_per_tick(tmp_path, monkeypatch):
    """Review k16r2 #1b: the same loop with records another writer moved (a
    takeover's writes, an operator's): each batch emits a
    TransitionRejected per session, and the batch of conflicting sessions
    comes back every ~1 ms, so one tick floods the event log with the
    same rejection hundreds of times per session."""
    n = BATCH
    gw, store, _gate = storm(tmp_path, n)
    for live in gw.sessions.values():
        rec = live.record
        store.cas(rec.session_id, rec.version, rec.with_(version=rec.version + 5))
    tries = _count_record_writes(monkeypatch)
    _clock_moves_with_each_transaction(gw, store)
    gw.tick()
    rejected = len(events_of(gw.events, "TransitionRejected"))
    assert max(tries.values()) <= 1 and rejected <= n, (
        f"one tick: {rejected} TransitionRejected for {n} sessions, "
        f"{max(tries.values())} writes of one record")


def _storm_with_a_poisoned_record(tmp_path, n: int, poisoned: int):
    """``storm`` with session ``poisoned`` at the highest version SQLite
    holds (2^63 - 1, a damaged or hostile store value: nothing bounds a
    restored record's version): its next version does not fit the
    store's integer column, and sqlite3 raises OverflowError, which is
    neither a StoreError nor an sqlite3.Error."""
    clock = Clock(NOW_MS)
    store, gate = WatchedStore(tmp_path / "s.db"), PutsGate()
    for i in range(n):
        rec, ring, _inner = synthetic(i)
        if i == poisoned:
            rec = rec.with_(version=(1 << 63) - 1)
        store.create(rec, ring.pack())
    gw = make_gateway(tmp_path, clock=clock, store=store, gate=gate)
    gw.entitled = lambda live: True
    for i in range(n):
        rec, ring, inner = synthetic(i)
        if i == poisoned:
            rec = rec.with_(version=(1 << 63) - 1)
        gw.table.install(rec, ring, inner, first_counter=1, stored_ceiling=(0, True),
                         gate_window=True)
    gw.tick()
    clock.ms += P.heartbeat_volatile_ms + 1
    return gw, store


def test_one_records_unexpected_error_leaves_the_batchs_other_transitions_committed(tmp_path):
    """Review k16r2 #2: containment moved from the session to the batch. One
    record whose write raises something other than a StoreError (here
    OverflowError from sqlite3) escapes ``write_many``/``cas_many``/
    ``transition_batch``: the whole transaction is rolled back, and every
    other session of its batch (up to 127) loses its transition AND its
    key timers (``_after_transition`` is skipped: key expiry, the overlap's
    end, the idle AEAD drop). The poisoned session is due again at now + 1
    with its neighbours, so the same batch fails every tick. Before
    (8456ec6) each session's check was contained alone: the 7 others went
    VOLATILE and their keys kept being timed."""
    n = 8
    gw, _store = _storm_with_a_poisoned_record(tmp_path, n, poisoned=3)
    for _ in range(5):
        gw.clock_ms.ms += 200
        gw.tick()
    volatile = sum(live.record.state is State.VOLATILE for live in gw.sessions.values())
    assert volatile == n - 1, (f"{volatile} of {n - 1} unpoisoned sessions went VOLATILE "
                               f"after 5 ticks ({gw.incidents.total} incidents)")


def test_a_poisoned_neighbour_leaves_the_other_sessions_keys_expiring(tmp_path):
    """Review k16r2 #2, its security consequence: the neighbours' keys pass
    keys.reject_after_ms and the key timer never runs for them (no
    KeyExpired, the sessions not ended): the data path checks only the
    previous epoch's expiry at use (jvpn/gateway/datapath.py
    ``_under_expired``), so data under the current, expired keys is still
    delivered and sealed for as long as the poisoned record stays."""
    n = 8
    gw, _store = _storm_with_a_poisoned_record(tmp_path, n, poisoned=3)
    gw.clock_ms.ms += P.reject_after_ms + 1
    for _ in range(5):
        gw.clock_ms.ms += 200
        gw.tick()
    expired = {e["session_id"] for e in events_of(gw.events, "KeyExpired")}
    assert len(expired) >= n - 1, (f"{len(expired)} KeyExpired of {n - 1} sessions past "
                                   f"reject_after_ms; still served: {len(gw.sessions)}")


class _CountedHolds:
    """The control lock, counting the store's transactions in each hold."""

    def __init__(self, lock, store):
        self.lock, self.store, self.holds, self._at = lock, store, [], []

    def __enter__(self):
        self.lock.__enter__()
        self._at.append(self.store.transactions)
        return self

    def __exit__(self, *exc):
        self.holds.append(self.store.transactions - self._at.pop())
        return self.lock.__exit__(*exc)


def test_a_key_expiry_storm_holds_the_lock_for_three_transactions_per_batch(tmp_path):
    """Review k16r2 #3: key expiry (jvpn/gateway/key_timers.py, run from
    ``_after_transition`` inside the batch's hold) is still one store
    transaction per session, plus its end's delete (``forget``) and the
    TERMINATE's send-counter floor: a batch of 128 sessions whose keys
    expire together (N clients that keep their path alive but never
    rekey, or clients that all attached after one restart) holds the
    control lock for hundreds of fsyncs, and the 0.5 s slice is only
    checked between batches. The docs name key expiry as not batched; not
    that the lock (operator socket, reattach, stop) then waits for all of
    them."""
    gw, store, _gate = storm(tmp_path, BATCH)
    for live in gw.sessions.values():  # alive: only the keys age
        live.last_rx_ms = gw.clock_ms.ms
    gw.clock_ms.ms += P.reject_after_ms - P.heartbeat_volatile_ms
    for live in gw.sessions.values():
        live.last_rx_ms = gw.clock_ms.ms
    counted = _CountedHolds(gw.control, store)
    gw.control = counted
    store.transactions = 0
    gw.tick()
    assert len(events_of(gw.events, "KeyExpired")) == BATCH
    assert max(counted.holds) <= 3, (f"one hold of the control lock: {max(counted.holds)} "
                                     f"store transactions (holds: {counted.holds})")


def test_an_ended_sessions_element_leaves_the_gate_right_after_the_batch_commit(
        tmp_path, monkeypatch):
    """Review k16r2 #4: ``transition_batch`` commits the whole batch's TERMINATED
    records, then follows them one by one; each follow (``_project``)
    tells the client TERMINATE, and a restored session's first send
    reserves its counter floor with its own store transaction. So the
    last session's element stays in the gate, and the data thread (no
    control lock) keeps delivering under its old record, for the 127 other
    sessions' floor fsyncs after its record ended in the store (TTL,
    max_lifetime). Before (8456ec6): each session's element left right
    after its own commit. A crash in the window: the restart's reconcile
    removes it (as for a single commit), so it is only the live window."""
    n = BATCH
    gw, store, gate = storm(tmp_path, n)
    ticks_until_none_attached(gw)
    gw.policy = P.__class__(**{**P.as_dict(), "recovery_expiry_terminates": True})
    gw.clock_ms.ms += P.volatile_to_degraded_ms + 1
    removed_after: dict[int, int] = {}
    committed_in: dict[int, int] = {}
    real_remove, real_cas = gate.remove, sqlite_store._cas

    def cas(db, session_id, *args, **kwargs):
        committed_in[session_id] = store.transactions
        return real_cas(db, session_id, *args, **kwargs)
    monkeypatch.setattr(sqlite_store, "_cas", cas)

    def remove(sid, *args, **kwargs):
        removed_after.setdefault(sid, store.transactions)
        real_remove(sid, *args, **kwargs)
    gate.remove = remove
    store.transactions = store.floor_writes = 0
    gw.tick()
    assert len(removed_after) == n
    # store transactions between a record's commit and its element's removal
    waited = max(removed_after[sid] - committed_in[sid] for sid in removed_after)
    assert waited <= 1, (f"an ended session's element left the gate {waited} store "
                         f"transactions after its record's commit ({store.floor_writes} "
                         "floor writes)")


def test_a_gate_that_fails_to_remove_one_ended_element_ends_every_other_session(tmp_path):
    """Review k16r2 #2 (forget_batch): one element removal that raises
    (OSError from the gate) is reported; every other ended session leaves
    the gate and the tables, and every record (its own too) leaves the store."""
    n = 6
    gw, store, gate = storm(tmp_path, n)
    ticks_until_none_attached(gw)
    gw.policy = P.__class__(**{**P.as_dict(), "recovery_expiry_terminates": True})
    gw.clock_ms.ms += P.volatile_to_degraded_ms + 1
    unlucky = sorted(gw.sessions)[2]
    real_remove = gate.remove

    def remove(sid, *args, **kwargs):
        if sid == unlucky:
            raise OSError(16, "Device or resource busy (injected)")
        real_remove(sid, *args, **kwargs)
    gate.remove = remove
    reported = gw.incidents.total
    gw.tick()
    assert not gw.sessions and not store.list()
    ended = {e["session_id"] for e in events_of(gw.events, "SessionTerminated")}
    assert len(ended) == n - 1 and f"{unlucky:016x}" not in ended  # its follow: reported
    assert gw.incidents.total > reported
