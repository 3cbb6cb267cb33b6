"""Issue 15, "Silent clients make a storm": many sessions due for a timer
transition at once (all silent for heartbeat_volatile_ms) are committed a
batch per store transaction (one fsync), their events after the commit; a
batch the store did not take changes nothing and is reported once; and
the control lock is free between batches (the operator, a reattach, a
stop are served during the storm)."""

from __future__ import annotations

import math
import threading
import time

import pytest

from jvpn.bench.session_memory import NOW_MS, install, synthetic
from jvpn.gate import abi
from jvpn.gate.userspace import UserspaceGate
from jvpn.gateway import timer_checks
from jvpn.policy import default_policy
from jvpn.session import State
from jvpn.store import StoreError
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


def storm(tmp_path, n: int):
    """A gateway serving ``n`` idle ATTACHED sessions (records in its
    store), looked at once; then silent past heartbeat_volatile_ms."""
    clock = Clock(NOW_MS)
    store, gate = WatchedStore(tmp_path / "s.db"), PutsGate()
    for i in range(n):
        rec, ring, _inner = synthetic(i)
        store.create(rec, ring.pack())
    gw = make_gateway(tmp_path, clock=clock, store=store, gate=gate)
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
