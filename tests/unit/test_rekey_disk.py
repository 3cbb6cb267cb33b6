"""A dropped epoch's keys leave the disk (docs/protocol.md "What is on
disk"): neither sessions.db nor its WAL holds any key of an epoch the
gateway no longer accepts, once the overlap ended or the session was
deleted (SQLite: journal_size_limit=0, a TRUNCATE checkpoint after a write
that drops keys)."""

from __future__ import annotations

from jvpn.keys import SessionKeys
from kits.rekey_kit import RekeyClient, gateway

FIELDS = ("data_c2s", "data_s2c", "hdr_c2s", "hdr_s2c", "reattach")


def _on_disk(tmp_path, keys: SessionKeys) -> list[str]:
    """Which of ``keys``' byte strings are in the database or its WAL."""
    found = []
    for name in ("s.db", "s.db-wal"):
        path = tmp_path / name
        raw = path.read_bytes() if path.exists() else b""
        found += [f"{name}:{f}" for f in FIELDS if getattr(keys, f) in raw]
    return found


def test_a_dropped_epoch_is_in_neither_the_database_nor_its_wal(tmp_path):
    gw, clock = gateway(tmp_path, rekey_overlap_ms=1_000)
    c = RekeyClient(gw)
    history = [c.ring.current]
    for _ in range(3):
        history.append(c.rekey())
        clock.ms += 1_000
        gw.tick()
        assert c.stored_ring().previous is None  # the overlap is over
    for old in history[:-1]:
        assert _on_disk(tmp_path, old) == [], f"epoch {old.epoch}"
    assert _on_disk(tmp_path, history[-1])  # the live epoch is stored (the check can see keys)


def test_a_commit_inside_the_previous_overlap_drops_that_epoch_from_disk(tmp_path):
    """An operator's rekey inside the overlap ends it at its commit: the
    epoch before goes from the disk too. (A committed, unconfirmed epoch is
    never replaced: review R1 #2, tests/unit/test_rekey_hijack.py.)"""
    gw, _clock = gateway(tmp_path)
    c = RekeyClient(gw)
    first = c.ring.current
    c.rekey()
    assert c.stored_ring().previous == first  # inside epoch 1's overlap
    c.rekey()  # asked by the operator
    assert c.stored_ring().previous.epoch == 1
    assert _on_disk(tmp_path, first) == []


def test_a_deleted_session_leaves_no_keys_on_disk(tmp_path):
    gw, _clock = gateway(tmp_path)
    c = RekeyClient(gw)
    keys = c.ring.current
    assert _on_disk(tmp_path, keys)
    gw.table.forget(c.sid)
    assert gw.store.get(c.sid) is None
    assert _on_disk(tmp_path, keys) == []


def test_a_reader_in_another_connection_delays_the_erasure_without_blocking(tmp_path):
    """A checkpoint a reader holds up returns at once (False); the next
    write that drops keys erases them."""
    import sqlite3  # noqa: PLC0415 - this test's second connection only

    gw, clock = gateway(tmp_path, rekey_overlap_ms=1_000)
    c = RekeyClient(gw)
    old = c.ring.current
    reader = sqlite3.connect(str(tmp_path / "s.db"), isolation_level=None)
    reader.execute("BEGIN")
    reader.execute("SELECT count(*) FROM sessions").fetchone()  # holds a read snapshot
    c.rekey()
    clock.ms += 1_000
    gw.tick()
    assert c.stored_ring().previous is None
    assert gw.store.forget_old_secrets() is False  # busy: no wait
    reader.execute("COMMIT")
    reader.close()
    assert gw.store.forget_old_secrets() is True
    assert _on_disk(tmp_path, old) == []
