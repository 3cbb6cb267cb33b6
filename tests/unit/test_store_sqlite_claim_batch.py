"""Review k21r4: the SQLite claim as one upsert (``_CLAIM``, a DO UPDATE
... WHERE) inside a group commit's batch. The claim decides on the
statement's row count; inside a batch that count follows other ops'
writes (a record, a floor), and a failed op reruns the batch op by op in
savepoints. These pin that a replay is a replay there too, that a garbage
row fails its op alone with nothing written, and that the rerun writes
each claim once."""

import pytest

from jvpn.session import Event, Transport, apply, new_session
from jvpn.store import AlreadyExists, HandshakeWrites, StoreError
from jvpn.store import sqlite as sqlite_store
from jvpn.store.sqlite import SqliteStore

T1 = Transport("192.0.2.10", 5555)
P, Q, R = b"p" * 32, b"q" * 32, b"r" * 32
FLOOR = 7


@pytest.fixture
def store(tmp_path):
    s = SqliteStore(tmp_path / "state" / "sessions.db")
    yield s
    s.close()


def _rec(sid):
    rec, _ = apply(new_session(sid, 0), Event.ATTACH_OK, 1, binding=T1)
    return rec


def _hs(peer, ts, sid):
    return sqlite_store.handshake_op(HandshakeWrites(peer, ts, _rec(sid), b"k%d" % sid, FLOOR))


def _stored(store, peer):
    return store._db.execute("SELECT typeof(timestamp_ns), timestamp_ns FROM initiations "
                             "WHERE peer=?", (peer,)).fetchone()


def _created(store):
    return [c.session_id for c in store.changes() if c.kind == "create"]


def test_a_replay_after_other_ops_writes_in_one_batch_is_still_a_replay(store):
    """The upsert that writes nothing must read as nothing written even
    right after another op's three writes in the same transaction (a row
    count carried over from the floor's upsert would take the replay)."""
    assert store.claim_initiation(P, 5)
    results = store.write_many([_hs(Q, 1, 5), _hs(P, 5, 6), _hs(P, 4, 7), _hs(P, 6, 8)])
    assert results == [FLOOR, None, None, FLOOR]
    assert store.get(6) is None and store.get(7) is None and store.get(8) is not None
    assert _stored(store, P) == ("integer", 6)
    assert _created(store) == [5, 8]


def test_one_initiation_twice_in_a_rerun_batch_is_claimed_once(store):
    """A batch rerun in savepoints (its second op's id is taken): the
    first pass's claims are gone with it, and the same initiation twice in
    the rerun is claimed once, its second a replay (None), nothing twice."""
    store.create(_rec(9), b"old")
    results = store.write_many([_hs(P, 5, 5), _hs(Q, 5, 9), _hs(P, 5, 6), _hs(R, 2, 7)])
    assert results[0] == FLOOR and isinstance(results[1], AlreadyExists)
    assert results[2] is None and results[3] == FLOOR
    assert store.get(6) is None and store.get(9)[1] == b"old"
    assert _stored(store, P) == ("integer", 5) and _stored(store, Q) is None
    assert _created(store) == [9, 5, 7]
    assert not store.claim_initiation(P, 5)


@pytest.mark.parametrize("garbage", ["garbage", -1, 5.5, b"\x05", 1e19, "0x10"])
def test_a_garbage_row_in_a_batch_fails_its_op_alone_and_is_left_as_it_was(store, garbage):
    """A peer whose row is unreadable: its op's result is a StoreError in
    both passes (the plain one raises, the rerun undoes it alone), its row
    is left as stored, no record of it is written, the others once."""
    store._db.execute("INSERT INTO initiations VALUES (?, ?)", (P, garbage))
    before = _stored(store, P)
    results = store.write_many([_hs(Q, 3, 5), _hs(P, 1 << 62, 6), _hs(R, 3, 7)])
    assert results[0] == FLOOR and isinstance(results[1], StoreError) and results[2] == FLOOR
    assert _stored(store, P) == before and store.get(6) is None
    assert _created(store) == [5, 7]
    with pytest.raises(StoreError):
        store.claim_initiation(P, (1 << 63) - 1)
    assert _stored(store, P) == before


def test_the_largest_timestamp_stored_bars_every_claim(store):
    """2**63 - 1 stored (SQLite's largest integer): every claim, itself
    included, is a replay in a batch as alone; one above is refused."""
    store._db.execute("INSERT INTO initiations VALUES (?, ?)", (P, (1 << 63) - 1))
    assert store.write_many([_hs(P, (1 << 63) - 1, 5), _hs(P, 0, 6)]) == [None, None]
    assert not store.claim_initiation(P, (1 << 63) - 1)
    with pytest.raises(StoreError):
        store.claim_initiation(P, 1 << 63)
    assert _stored(store, P) == ("integer", (1 << 63) - 1) and _created(store) == []
