"""The embedded SQLite store: create/get/cas/delete/changes, restart survival,
concurrent compare-and-swap with exactly one winner."""


import dataclasses

import pytest

from jvpn.session import Event, State, Transport, apply, new_session
from jvpn.store import AlreadyExists, StoreError, VersionConflict
from jvpn.store import sqlite as sqlite_store
from jvpn.store.sqlite import SqliteStore
from kits.store_contract import (
    concurrent_cas_has_one_winner,
    initiation_claims_have_one_winner,
    lowering_a_claim_compares_first,
    replay_ceiling_rules,
    secrets_move_with_the_record,
)

T1, T2 = Transport("192.0.2.10", 5555), Transport("198.51.100.7", 6000)


@pytest.fixture
def store(tmp_path):
    s = SqliteStore(tmp_path / "state" / "sessions.db")
    yield s
    s.close()


def _attached(sid=0xF000000000000001):
    rec, _ = apply(new_session(sid, 0), Event.ATTACH_OK, 1, binding=T1)
    return rec


def test_create_get_roundtrip_with_high_bit_ids(store):
    rec = _attached()
    store.create(rec, b"secret")
    got, secrets = store.get(rec.session_id)
    assert got == rec and secrets == b"secret"
    with pytest.raises(AlreadyExists):
        store.create(rec, b"x")
    assert store.get(1) is None


def test_cas_moves_forward_only_from_the_expected_version(store):
    rec = _attached()
    store.create(rec, b"k")
    vol, _ = apply(rec, Event.INSTABILITY_DETECTED, 2)
    store.cas(rec.session_id, rec.version, vol)
    with pytest.raises(VersionConflict):
        store.cas(rec.session_id, rec.version, vol.with_(version=vol.version + 1))
    assert store.get(rec.session_id)[0].state is State.VOLATILE


def test_concurrent_cas_has_one_winner(store):
    concurrent_cas_has_one_winner(store, _attached(), racers=8)


def test_survives_reopen_and_records_changes(tmp_path):
    path = tmp_path / "s.db"
    s = SqliteStore(path)
    rec = _attached()
    s.create(rec, b"k")
    s.delete(rec.session_id, rec.version)
    s.create(rec.with_(session_id=5), b"k2")
    s.close()
    s = SqliteStore(path)
    assert [r.session_id for r in s.list()] == [5]
    kinds = [(c.session_id, c.kind) for c in s.changes()]
    assert kinds == [(rec.session_id, "create"), (rec.session_id, "delete"), (5, "create")]
    assert next(iter(s.changes(since_revision=2))).session_id == 5
    assert (path.stat().st_mode & 0o777) == 0o600
    s.close()


def test_initiation_claims_have_one_winner(store):
    initiation_claims_have_one_winner(store, racers=8)


def test_lowering_a_claim_compares_first(store):
    lowering_a_claim_compares_first(store)


@pytest.mark.parametrize("stored", ["9000x", "garbage", 9000.5, b"9000"])
def test_a_claim_that_is_no_integer_is_never_lowered(store, stored):
    """Only an integer equal to the record's timestamp is that claim:
    anything else is left as it is (claim_initiation fails closed on it)."""
    peer = b"q" * 32
    store._db.execute("INSERT INTO initiations VALUES (?, ?)", (peer, stored))
    assert store._db.execute("SELECT typeof(timestamp_ns) FROM initiations").fetchone() != (
        "integer",)
    assert store.lower_claim(peer, 9000, 1) is False
    [(after,)] = store._db.execute("SELECT timestamp_ns FROM initiations WHERE peer=?",
                                   (peer,)).fetchall()
    assert after == stored



@pytest.mark.parametrize(("stored", "claimed", "outcome"), [
    (None, 5, True), (4, 5, True), (0, 1, True),  # none stored, or older: claimed
    (5, 5, False), (6, 5, False), ((1 << 63) - 1, 5, False),  # not newer: a replay
    ("garbage", 5, StoreError), (-1, 5, StoreError), (5.5, 9, StoreError),
    (b"\x05", 9, StoreError),  # unreadable: fails closed, as before
])
def test_a_claim_writes_only_over_a_readable_older_timestamp(store, stored, claimed, outcome):
    """The claim in one statement when it wins (issue 15): the upsert
    writes a new row or over a readable, older timestamp only; otherwise
    the row is read and answers as the SELECT before did (a replay: False;
    a text, a negative, a real, a blob: StoreError), nothing written."""
    peer = b"p" * 32
    if stored is not None:
        store._db.execute("INSERT INTO initiations VALUES (?, ?)", (peer, stored))
    before = store._db.execute("SELECT timestamp_ns FROM initiations WHERE peer=?",
                               (peer,)).fetchone()
    if outcome is StoreError:
        with pytest.raises(StoreError):
            store.claim_initiation(peer, claimed)
    else:
        assert store.claim_initiation(peer, claimed) is outcome
    after = store._db.execute("SELECT timestamp_ns FROM initiations WHERE peer=?",
                              (peer,)).fetchone()
    assert after == ((claimed,) if outcome is True else before)


def test_replay_ceiling_rules(store):
    replay_ceiling_rules(store, _attached(0xF000000000000003))


def test_a_rekey_writes_record_and_secrets_together(store):
    secrets_move_with_the_record(store, _attached())


def test_freed_pages_are_overwritten(store):
    """An old key ring's pages do not stay in the file (secure_delete)."""
    assert store._db.execute("PRAGMA secure_delete").fetchone()[0] == 1


def _wal_size(store) -> int:
    return store.path.with_name(store.path.name + "-wal").stat().st_size


def _rewrite(store, rec, times: int, each=lambda: None):
    """``times`` compare-and-swaps of one record (a reattach makes two),
    ``each`` after each; the record written last."""
    for _ in range(times):
        new = dataclasses.replace(rec, version=rec.version + 1)
        store.cas(rec.session_id, rec.version, new)
        rec = new
        each()
    return rec


def test_no_commit_runs_a_checkpoint(tmp_path):
    """Issue 15: with SQLite's autocheckpoint, the commit that crossed 1000
    WAL pages wrote and fsynced the database file itself (the WAL started
    over: it shrank). With the checkpointer idle, no commit ever does."""
    store = SqliteStore(tmp_path / "s.db", checkpoint_every=(10**9, 3600.0))
    rec = _attached()
    store.create(rec, b"k" * 200)
    sizes = []
    _rewrite(store, rec, 1500, lambda: sizes.append(_wal_size(store)))
    store.close()
    assert sizes == sorted(sizes) and sizes[-1] > sizes[0]  # it only grew


def test_the_checkpointer_runs_aside_and_the_wal_starts_over(tmp_path):
    """Its checkpoint runs while the store's lock (a writer's) is held: not
    on a commit's path; the next write starts the WAL over."""
    store = SqliteStore(tmp_path / "s.db", checkpoint_every=(50, 3600.0))
    rec = _attached()
    store.create(rec, b"k" * 200)
    rec = _rewrite(store, rec, 49)  # the 50th commit: a checkpoint is due
    grown = _wal_size(store)
    with store._lock:  # as during a commit: the checkpoint goes on without it
        assert store.checkpointer.ran.wait(30)
    _rewrite(store, rec, 1)
    assert _wal_size(store) < grown / 4
    store.close()


def test_a_wal_past_its_cap_catches_up(tmp_path, monkeypatch):
    """Commits that never pause would leave the WAL never all checkpointed:
    past the cap, the checkpointer catches up with writes held back."""
    monkeypatch.setattr(sqlite_store, "WAL_CAP_PAGES", 0)
    store = SqliteStore(tmp_path / "s.db", checkpoint_every=(10, 3600.0))
    rec = _attached()
    store.create(rec, b"k" * 200)
    _rewrite(store, rec, 10)
    assert store.checkpointer.ran.wait(30)
    store.close()
    assert store.checkpointer.catch_ups == 1


def test_a_handshakes_writes_take_four_statements_and_a_taken_id_still_refuses(store):
    """The create reads nothing first: the primary key refuses a taken id
    (AlreadyExists, that op undone alone), and a claim that wins is its
    upsert alone, so a handshake's op is the claim's one statement, the
    record's two and the floor's (issue 15)."""
    from jvpn.store import HandshakeWrites

    rec = _attached()
    statements: list[str] = []
    store._db.set_trace_callback(statements.append)
    [first] = store.write_many([sqlite_store.handshake_op(
        HandshakeWrites(b"p" * 32, 1, rec, b"k", 7))])
    store._db.set_trace_callback(None)
    ops = [s for s in statements if s.split()[0] not in ("BEGIN", "SAVEPOINT", "RELEASE",
                                                         "COMMIT")]
    assert first == 7 and len(ops) == 4, ops
    [taken, other] = store.write_many([
        sqlite_store.handshake_op(HandshakeWrites(b"q" * 32, 1, rec, b"x", 7)),
        sqlite_store.handshake_op(HandshakeWrites(b"r" * 32, 1, _attached(5), b"y", 7))])
    assert isinstance(taken, AlreadyExists) and other == 7
    assert store.get(rec.session_id)[1] == b"k" and store.get(5)[1] == b"y"


def test_a_batch_that_fails_nowhere_takes_no_savepoints(store):
    """Two handshakes in one transaction: their eight statements between
    BEGIN and COMMIT, no savepoint per op (issue 15: four statements of a
    handshake's twelve)."""
    from jvpn.store import HandshakeWrites

    statements: list[str] = []
    store._db.set_trace_callback(statements.append)
    results = store.write_many([
        sqlite_store.handshake_op(HandshakeWrites(b"p" * 32, 1, _attached(5), b"k", 7)),
        sqlite_store.handshake_op(HandshakeWrites(b"q" * 32, 1, _attached(6), b"l", 7))])
    store._db.set_trace_callback(None)
    assert results == [7, 7]
    kinds = [s.split()[0] for s in statements]
    assert kinds[0] == "BEGIN" and kinds[-1] == "COMMIT" and len(kinds) == 10, statements


def test_an_op_that_fails_half_way_is_undone_alone_and_the_others_written_once(store):
    """A batch whose second op fails after its claim (its id is taken):
    the first pass is rolled back whole and the batch runs again op by op,
    so the failed op's claim is undone, and the others' writes are there
    once (a claim not made twice: the same initiation claims again)."""
    from jvpn.store import HandshakeWrites

    store.create(_attached(9), b"old")
    results = store.write_many([
        sqlite_store.handshake_op(HandshakeWrites(b"a" * 32, 5, _attached(5), b"k", 7)),
        sqlite_store.handshake_op(HandshakeWrites(b"b" * 32, 5, _attached(9), b"x", 7)),
        sqlite_store.handshake_op(HandshakeWrites(b"c" * 32, 5, _attached(6), b"m", 7))])
    assert results[0] == 7 and isinstance(results[1], AlreadyExists) and results[2] == 7
    assert store.last_initiation(b"a" * 32) == 5 and store.last_initiation(b"b" * 32) == 0
    assert store.get(9)[1] == b"old" and store.get(5)[1] == b"k" and store.get(6)[1] == b"m"
    assert store.get_floor(5) == 7 and store.get_floor(9) == 0
    assert not store.claim_initiation(b"a" * 32, 5)  # claimed once, in the committed pass
