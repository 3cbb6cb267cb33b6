"""Review k18r2 of the handshake CPU pass (k18hs): the packed response
payload refuses an address of the wrong length; a store that ends the
transaction by itself (disk full) or returns garbage fails closed with a
StoreError, that op alone where it can; the docs name the batch as it runs."""

import ipaddress
import sqlite3
import struct
import threading

import pytest

from jvpn.gateway.admission import Admission, Admitted
from jvpn.handshake import Granted, pack_assignment
from jvpn.keys import generate_private
from jvpn.session import Event, Transport, apply, new_session
from jvpn.store import HandshakeWrites, StoreError
from jvpn.store import sqlite as sqlite_store
from jvpn.store.sqlite import SqliteStore, _Tx

T1 = Transport("192.0.2.10", 5555)
GW4 = ipaddress.IPv4Interface("10.99.0.1/24")
GW6 = ipaddress.IPv6Interface("fd99::1/64")


@pytest.fixture
def store(tmp_path):
    s = SqliteStore(tmp_path / "state" / "sessions.db")
    yield s
    s.close()


def _attached(sid):
    rec, _ = apply(new_session(sid, 0), Event.ATTACH_OK, 1, binding=T1)
    return rec


# ---------------------------------------------------------------- finding 1
def test_packed_payload_refuses_an_address_of_the_wrong_length():
    """pack_assignment/Granted take raw bytes: struct's ``4s``/``16s``
    silently truncate or zero-pad, so an IPv6 address in the IPv4 slot
    (or the reverse) becomes another, valid-looking address in the
    response. The old admission path (IPv4Interface((int(inner), p)))
    raised instead."""
    v6 = ipaddress.IPv6Address("fd99::2").packed
    v4 = ipaddress.IPv4Address("10.99.0.2").packed
    with pytest.raises((ValueError, struct.error)):
        Granted(1, v6, 24, GW4.ip.packed).pack()  # 'fd 99 00 00' = 253.153.0.0
    with pytest.raises((ValueError, struct.error)):
        pack_assignment(1, v4, 24, GW4.ip.packed, (v4, 64, GW6.ip.packed))  # zero-padded


def test_admission_refuses_a_peer_whose_inner_is_not_ipv4():
    """The admission with a peer given as an address of the wrong family
    (``peers`` also takes a bare address): main raised AddressValueError,
    k18hs answers 253.153.0.0/24 (the IPv6's first four bytes)."""
    adm = Admission(generate_private(), {}, GW4, 50, address6=GW6)
    admitted = Admitted(None, ipaddress.IPv6Address("fd99::2"))
    with pytest.raises(ValueError):
        adm._assignment(admitted, 1).pack()


# ---------------------------------------------------------------- finding 3 (pre-existing)
def _full(store):
    """A store that fails: SQLITE_FULL, which makes SQLite roll the whole
    transaction back by itself (as does SQLITE_IOERR, SQLITE_NOMEM)."""
    n = store._db.execute("PRAGMA page_count").fetchone()[0]
    store._db.execute(f"PRAGMA max_page_count={n}")


def test_a_full_disk_in_a_handshake_batch_is_a_store_error(store):
    """The first pass's op hits SQLITE_FULL; SQLite has already rolled the
    transaction back, so _Tx.__exit__'s ROLLBACK raises "cannot rollback -
    no transaction is active": a raw sqlite3.OperationalError leaves
    write_many / write_handshake instead of a StoreError (the _Tx contract:
    "any sqlite error ... becomes a StoreError (callers fail closed)").
    The savepoint pass of main fails the same way ("no such savepoint")."""
    _full(store)
    w = HandshakeWrites(b"p" * 32, 1, _attached(5), b"k" * 200_000, 7)
    with pytest.raises(StoreError):
        store.write_many([sqlite_store.handshake_op(w)])
    with pytest.raises(StoreError):
        store.write_handshake(w)


def test_a_full_disk_in_a_plain_write_is_a_store_error(store):
    """The same through the direct writes (the timer's, the operator's):
    store.create under SQLITE_FULL."""
    _full(store)
    with pytest.raises(StoreError):
        store.create(_attached(6), b"k" * 200_000)


# ---------------------------------------------------------------- finding 4 (pre-existing)
def test_a_garbage_claim_row_fails_its_own_op_not_the_batch(store):
    """A store returning garbage: one peer's initiations row holds a text
    (INTEGER affinity keeps non-numeric text as TEXT). _claim compares it
    with ``>=``: TypeError, which is not in _OP_ERRORS, so it escapes both
    passes of write_many and the group commit fails every op of the batch
    (up to 127 other peers' handshakes) each time that peer handshakes."""
    store._db.execute("INSERT INTO initiations VALUES (?, 'garbage')", (b"p" * 32,))
    results = store.write_many([
        sqlite_store.handshake_op(HandshakeWrites(b"p" * 32, 5, _attached(5), b"k", 7)),
        sqlite_store.handshake_op(HandshakeWrites(b"q" * 32, 5, _attached(6), b"l", 7))])
    assert isinstance(results[0], StoreError) and results[1] == 7
    assert store.get(6)[1] == b"l"


# ---------------------------------------------------------------- finding 5 (docs)
def test_the_group_commits_docs_name_the_batch_without_savepoints():
    """k18hs changed how a group commit's batch runs (no savepoints, then
    again with them if an op raises); the group commit's own docstring and
    docs/protocol.md still say every op runs in a savepoint."""
    from pathlib import Path

    from jvpn.store import group_commit

    root = Path(__file__).resolve().parents[2]
    protocol = " ".join((root / "docs" / "protocol.md").read_text().split())
    assert "runs each in a savepoint of one transaction" not in " ".join(
        group_commit.__doc__.split())
    assert "runs in savepoints of one transaction" not in protocol


@pytest.mark.parametrize("garbage", [-1, -(1 << 63)])
def test_an_out_of_range_claim_row_fails_closed_as_a_text_one_does(store, garbage):
    """Review k18r5 F4: a negative stored timestamp was "older than
    anything": every initiation of that peer accepted, a replay too."""
    store._db.execute("INSERT INTO initiations VALUES (?, ?)", (b"p" * 32, garbage))
    [result] = store.write_many([
        sqlite_store.handshake_op(HandshakeWrites(b"p" * 32, 5, _attached(5), b"k", 7))])
    assert isinstance(result, StoreError), result


class _FailingDb:
    """A connection whose COMMIT fails (disk I/O) while the transaction is
    still open, and whose ROLLBACK then fails too."""

    in_transaction = True

    def execute(self, sql, *a):
        if sql.startswith("BEGIN"):
            return None
        raise sqlite3.OperationalError(f"disk I/O error ({sql})")


@pytest.mark.parametrize("raise_inside", [False, True])
def test_a_failed_rollback_is_still_a_store_error(raise_inside):
    """Review k18r5 F3: a ROLLBACK that is issued and fails raised a raw
    sqlite3 error over the StoreError the callers fail closed on."""
    lock = threading.Lock()
    with pytest.raises(StoreError):
        with _Tx(_FailingDb(), lock, lambda: None):
            if raise_inside:
                raise sqlite3.OperationalError("database or disk is full")
    assert not lock.locked()


def test_a_gateway_address_of_the_wrong_length_is_refused():
    """Review k18r5 (test gap): the IPv4 gateway address's length too."""
    with pytest.raises(ValueError):
        Granted(1, bytes(4), 24, bytes(16)).pack()
