"""Issue 10 item 16, files the daemon creates: the events file and the
session store (with its WAL and shared-memory files) are 0600 from the
moment they exist, whatever the umask, without a chmod afterwards; the state
directory is created 0700 and refused when group or others may write it."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from jvpn.errors import JvpnError
from jvpn.events import EventLog
from jvpn.session import new_session
from jvpn.store import StoreError
from jvpn.store.sqlite import SqliteStore

NOBODY = 65534
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")


def _mode(p: Path) -> int:
    return stat.S_IMODE(os.lstat(p).st_mode)


@pytest.fixture
def open_umask_no_chmod(monkeypatch):
    """The worst case for "created, then chmod'ed": umask 0, and no chmod
    afterwards can repair what creation got wrong."""
    monkeypatch.setattr(os, "chmod", lambda *a, **k: None)
    monkeypatch.setattr(os, "fchmod", lambda *a, **k: None)
    old = os.umask(0)
    yield
    os.umask(old)


# ---------------------------------------------------------------- events file

def test_events_file_is_created_0600(tmp_path, open_umask_no_chmod):
    path = tmp_path / "logs" / "events.jsonl"
    log = EventLog("gw", path)
    log.emit("X", "OK")
    log.close()
    assert _mode(path) == 0o600
    assert _mode(path.parent) == 0o700


def test_events_file_through_a_planted_symlink_is_refused(tmp_path):
    target = tmp_path / "victim"
    target.write_text("precious\n")
    (tmp_path / "events.jsonl").symlink_to(target)  # root would append to the victim
    with pytest.raises(JvpnError, match="symlink"):
        EventLog("gw", tmp_path / "events.jsonl")
    assert target.read_text() == "precious\n"


def test_events_file_left_loose_is_tightened_and_appended(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_text('{"old": 1}\n')
    path.chmod(0o644)  # an older version created it with the umask
    log = EventLog("gw", path)
    log.emit("X", "OK")
    log.close()
    assert _mode(path) == 0o600
    assert path.read_text().startswith('{"old": 1}\n') and len(path.read_text().splitlines()) == 2


# ---------------------------------------------------------------- session store

def _write_something(store: SqliteStore) -> None:
    store.create(new_session(1, 0), b"secret" * 4)
    store.set_floor(1, 100)


def test_store_db_wal_and_shm_are_0600_from_the_start(tmp_path, open_umask_no_chmod):
    state = tmp_path / "state"
    store = SqliteStore(state / "sessions.db")
    _write_something(store)
    db = state / "sessions.db"
    made = sorted(p.name for p in state.iterdir())
    assert {"sessions.db", "sessions.db-wal", "sessions.db-shm"} <= set(made), made
    for name in made:
        assert _mode(state / name) == 0o600, (name, oct(_mode(state / name)))
    assert _mode(state) == 0o700
    store.close()
    assert _mode(db) == 0o600


@pytest.mark.parametrize("mode", [0o777, 0o775, 0o757, 0o1777], ids=oct)
def test_state_dir_writable_by_group_or_others_is_refused(tmp_path, mode):
    state = tmp_path / "state"
    state.mkdir()
    state.chmod(mode)  # others could plant sessions.db-wal, or swap sessions.db
    with pytest.raises(StoreError) as exc:
        SqliteStore(state / "sessions.db")
    message = str(exc.value)
    assert "\n" not in message and str(state) in message and f"chmod 700 {state}" in message
    assert not (state / "sessions.db").exists()


def test_state_dir_readable_by_others_is_accepted(tmp_path):
    state = tmp_path / "state"
    state.mkdir(mode=0o755)  # the files in it are 0600: names are all others see
    _write_something(SqliteStore(state / "sessions.db"))


def test_planted_symlink_for_the_store_or_its_wal_is_refused(tmp_path):
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    elsewhere = tmp_path / "elsewhere.db"
    for name in ("sessions.db", "sessions.db-wal"):
        link = state / name
        link.symlink_to(elsewhere)
        with pytest.raises(StoreError, match="symlink"):
            SqliteStore(state / "sessions.db")
        link.unlink()
    assert not elsewhere.exists()


def test_store_files_left_loose_are_tightened(tmp_path):
    state = tmp_path / "state"
    store = SqliteStore(state / "sessions.db")
    _write_something(store)
    store.close()
    (state / "sessions.db").chmod(0o644)
    store = SqliteStore(state / "sessions.db")
    assert store.get_floor(1) == 100
    assert _mode(state / "sessions.db") == 0o600
    store.close()


@needs_root
def test_state_dir_or_store_owned_by_another_user_is_refused(tmp_path):
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    os.chown(state, NOBODY, NOBODY)
    with pytest.raises(StoreError, match=f"uid {NOBODY}"):
        SqliteStore(state / "sessions.db")
    os.chown(state, 0, 0)
    (state / "sessions.db").touch(mode=0o600)
    os.chown(state / "sessions.db", NOBODY, NOBODY)  # it could read every session key
    with pytest.raises(StoreError, match=f"uid {NOBODY}"):
        SqliteStore(state / "sessions.db")
