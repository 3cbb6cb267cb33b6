"""Review k16r2 (adversarial review of the batched timer transitions,
branch k16storm): proof-of-concept tests. Each states the property the
change should keep; those that fail on 18dca72 are the findings."""

from __future__ import annotations

import time
from collections import Counter

from test_timer_storm import PutsGate, WatchedStore, states, storm, ticks_until_none_attached

from jvpn.bench.session_memory import NOW_MS, synthetic
from jvpn.gateway import timer_checks
from jvpn.policy import default_policy
from jvpn.session import State
from jvpn.store import sqlite as sqlite_store
from kits.daemon_kit import Clock, events_of, make_gateway

BATCH = timer_checks.TIMER_BATCH
P = default_policy()


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


def test_a_failing_store_is_retried_once_per_tick_not_every_batch(tmp_path, monkeypatch):
    """Finding 1: a store that fails every commit (a full disk) and at least
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


def test_a_persistent_conflict_is_rejected_once_per_tick_not_every_batch(tmp_path, monkeypatch):
    """Finding 1b: the same loop with records another writer moved (a
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


def test_one_records_unexpected_error_ends_no_other_sessions_timers(tmp_path):
    """Finding 2: containment moved from the session to the batch. One
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


def test_a_poisoned_neighbour_does_not_keep_expired_keys_in_use(tmp_path):
    """Finding 2, its security consequence: the neighbours' keys pass
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


def test_a_key_expiry_storm_holds_the_lock_one_batch_not_one_fsync_per_session(tmp_path):
    """Finding 3: key expiry (jvpn/gateway/key_timers.py, run from
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


def test_an_ended_sessions_element_leaves_the_gate_right_after_its_commit(tmp_path, monkeypatch):
    """Finding 4: ``transition_batch`` commits the whole batch's TERMINATED
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
