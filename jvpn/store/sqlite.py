"""The embedded store: one SQLite file under the state directory (stdlib
sqlite3, WAL). Survives a daemon restart. The file holds session secrets:
it and its WAL/SHM files are 0600 from creation, in a directory only we may
write (jvpn.files; docs/decisions.md)."""

from __future__ import annotations

import functools
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

from jvpn.files import UnsafeFile, open_private, private_dir, tighten_if_present
from jvpn.session import SessionRecord
from jvpn.store import (
    AlreadyExists,
    Cas,
    Change,
    Delete,
    Floor,
    HandshakeWrites,
    Prewritten,
    SkipsUnreadable,
    StoreError,
    Unreadable,
    VersionConflict,
    cas_one_by_one,
    check_cas,
    confirm_one_by_one,
    delete_one_by_one,
    one_by_one,
    record_from_json,
    stored_json,
)
from jvpn.store.sqlite_claims import SqliteClaims
from jvpn.store.sqlite_restore import SqliteRestore, _unsigned

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    session_id INTEGER PRIMARY KEY,   -- the u64 id, stored as its signed twin
    version INTEGER NOT NULL,
    record TEXT NOT NULL,
    secrets BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS counter_floors (
    session_id INTEGER PRIMARY KEY,   -- gateway send counters below floor may be used
    floor INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS initiations (
    peer BLOB PRIMARY KEY,            -- a peer's static public key
    timestamp_ns INTEGER NOT NULL     -- its newest accepted handshake initiation
);
CREATE TABLE IF NOT EXISTS replay_ceilings (
    session_id INTEGER PRIMARY KEY,   -- client counters delivered are below ceiling
    ceiling INTEGER NOT NULL,
    exact INTEGER NOT NULL            -- 1: settled (one above the last delivered)
);
CREATE TABLE IF NOT EXISTS changes (
    revision INTEGER PRIMARY KEY AUTOINCREMENT,
    session_id INTEGER NOT NULL,
    version INTEGER NOT NULL,
    kind TEXT NOT NULL
);
"""


BUSY_TIMEOUT_MS = 5_000  # a write waits this long for another connection's lock
CHECKPOINT_EVERY_COMMITS = 300  # the background checkpoint: after this many commits ...
CHECKPOINT_EVERY_S = 60.0  # ... or this long after one (rarely: each costs a database fsync)
WAL_CAP_PAGES = 1_000  # a WAL still longer after ours: _catch_up (SQLite's default cap)


def _own(bound, method) -> bool:
    """``bound`` is this class's ``method``, not one a subclass or a test
    put in its place (then a batch calls that one, write by write)."""
    return getattr(bound, "__func__", None) is method


def _signed(u: int) -> int:
    return u - (1 << 64) if u >= 1 << 63 else u


# SQLite's side files in WAL mode (and -journal, should a crash have left
# one from another journal mode). SQLite creates each with the mode of the
# database file (unix VFS, robust_open / findCreateFileMode), so a database
# created 0600 gives 0600 side files from their creation on.
_SIDE_FILES = ("-wal", "-shm", "-journal")


def _prepare(path: Path) -> None:
    """The state directory only we may write (created 0700), and the
    database created 0600 before SQLite opens it: SQLite itself would create
    it 0644 minus the umask, and a chmod afterwards leaves a window."""
    private_dir(path.parent)
    os.close(open_private(path, os.O_RDWR))
    for suffix in _SIDE_FILES:
        tighten_if_present(path.with_name(path.name + suffix))


class SqliteStore(SqliteClaims, SqliteRestore, SkipsUnreadable):
    def __init__(self, path: Path, checkpoint_every: tuple[int, float] = (
            CHECKPOINT_EVERY_COMMITS, CHECKPOINT_EVERY_S)):
        """``checkpoint_every``: (commits, seconds), the Checkpointer's."""
        self.path = Path(path)
        try:
            _prepare(self.path)
        except (UnsafeFile, OSError) as e:
            raise StoreError(f"cannot open the session store {self.path}: "
                             f"{e if isinstance(e, UnsafeFile) else e.strerror}") from None
        try:
            self._db = sqlite3.connect(str(self.path), isolation_level=None,
                                       check_same_thread=False,
                                       timeout=BUSY_TIMEOUT_MS / 1000)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            # freed pages (an old key ring's) are zeroed, not left in the file
            self._db.execute("PRAGMA secure_delete=ON")
            # a checkpointed WAL shrinks to nothing instead of keeping old
            # page images (old key rings) to be overwritten some day
            self._db.execute("PRAGMA journal_size_limit=0")
            # no checkpoint inline: the commit that crossed SQLite's default
            # (1000 pages) wrote and fsynced the database file under the
            # gateway's control lock (issue 15); Checkpointer does it aside
            self._db.execute("PRAGMA wal_autocheckpoint=0")
            self._db.executescript(_SCHEMA)
        except sqlite3.Error as e:
            raise StoreError(f"cannot open the session store {self.path}: {e}") from e
        self._lock = threading.Lock()
        self.checkpointer = Checkpointer(self.path, self._lock, *checkpoint_every)

    def close(self) -> None:
        self.checkpointer.stop()
        with self._lock:
            self._db.close()

    def _tx(self):
        return _Tx(self._db, self._lock, self.checkpointer.committed)

    def create(self, rec: SessionRecord, secrets: bytes) -> None:
        with self._tx() as db:
            _create(db, rec, secrets)

    @property
    def folds_handshake(self) -> bool:
        """A handshake's writes in transactions of their own: only with this
        class's own writes (a subclass that changes one of them, a test's
        failing store, gets them one by one, its own version of each)."""
        return all(getattr(type(self), m) is getattr(SqliteStore, m) for m in _FOLDED)

    def write_handshake(self, w: HandshakeWrites) -> Prewritten | None:
        """Store's handshake writes (jvpn/store ``write_handshake``): the
        claim, the record and the floor in one transaction, one fsync
        (docs/protocol.md "A handshake's durable writes")."""
        if not self.folds_handshake:
            return one_by_one(self, w)
        [result] = self.write_many([handshake_op(w)])
        if isinstance(result, StoreError):
            raise result
        return result

    def write_confirm(self, base: SessionRecord, new: SessionRecord, ceiling: int) -> None:
        """A new session's confirmation and the replay ceiling its first
        messages are delivered under, in one transaction (jvpn/store
        ``write_confirm``)."""
        if not self.folds_handshake:
            confirm_one_by_one(self, base, new, ceiling)
            return
        [result] = self.write_many([confirm_op(base, new, ceiling)])
        if isinstance(result, StoreError):
            raise result

    def write_many(self, ops: list[Callable[[sqlite3.Connection], object]]) -> list:
        """Group commit (jvpn/store/group_commit.py): every op in one
        transaction, one commit for all. An op that raises is undone alone
        and its StoreError is its result; a commit that fails raises (every
        op's writes undone).

        A batch of a handshake's ops only (``rerunnable``: a group commit's)
        runs first without savepoints (two statements per op: four of a
        handshake's twelve, issue 15): such ops rarely fail, and no
        unauthenticated message reaches them (a replayed claim returns,
        it does not raise). One that raises there undoes the whole uncommitted
        transaction, and the batch runs again from the start, in a second
        transaction, with a savepoint per op: nothing of the first pass
        outlives it. Another writer may commit between the two (the lock
        is let go between them); the ops read only the database, so the
        rerun is the batch run a moment later (review k18r2 #2). Other
        batches (the timer's compare-and-swaps, whose conflicts are common)
        take the savepoints at once: one try per record."""
        if all(getattr(op, "rerunnable", False) for op in ops):
            try:
                with self._tx() as db:
                    return _all_ops(db, ops)
            except _OpFailed:  # rolled back (_Tx); a failed BEGIN or COMMIT raises on
                pass
        with self._tx() as db:
            return _in_savepoints(db, ops)

    def cas_many(self, writes: list[Cas]) -> list[StoreError | None]:
        """jvpn/store ``cas_many``: every compare-and-swap in a savepoint of
        one transaction, one fsync (a ``cas`` changed by a subclass or on
        the object, a test's failing store, is called one by one)."""
        if not _own(self.cas, SqliteStore.cas):
            return cas_one_by_one(self, writes)
        return self.write_many([cas_op(base, new) for base, new in writes])

    def get(self, session_id: int) -> tuple[SessionRecord, bytes] | None:
        with self._lock:
            try:
                row = self._db.execute("SELECT record, secrets FROM sessions WHERE session_id=?",
                                       (_signed(session_id),)).fetchone()
            except sqlite3.Error as e:
                raise StoreError(f"session store read failed: {e}") from e
        if row is None:
            return None
        try:
            return record_from_json(row[0]), bytes(row[1])
        except Unreadable as e:
            self._skipped(f"{session_id:016x}", e)
            return None

    def cas(self, session_id: int, expected_version: int, new: SessionRecord,
            secrets: bytes | None = None) -> None:
        """``secrets``: new session secrets (a rekey's key ring) in the same
        transaction; the old value's pages are overwritten (secure_delete).
        A secrets-only write keeps the version (jvpn/store: ``check_cas``)."""
        check_cas(session_id, expected_version, new, secrets)
        with self._tx() as db:
            _cas(db, session_id, expected_version, new, secrets)

    def delete(self, session_id: int, expected_version: int | None = None) -> None:
        with self._tx() as db:
            _delete(db, session_id, expected_version)
        self.forget_old_secrets()  # the session's keys are no longer anyone's

    def delete_many(self, deletes: list[Delete]) -> list[StoreError | None]:
        """jvpn/store ``delete_many``: one transaction, one fsync, then one
        erasure of the old secrets' copies for all of them."""
        if not _own(self.delete, SqliteStore.delete):
            return delete_one_by_one(self, deletes)
        results = self.write_many([functools.partial(_delete, session_id=sid,
                                                     expected_version=version)
                                   for sid, version in deletes])
        if any(r is None for r in results):
            self.forget_old_secrets()
        return results

    def forget_old_secrets(self) -> bool:
        """Erase older copies of secrets: secure_delete zeroes freed content
        in the database file, but every committed page image also sits in
        the WAL; a TRUNCATE checkpoint writes them back into the database
        and empties the WAL file (docs/protocol.md "What is on disk")."""
        with self._lock, self.checkpointer.one_at_a_time:  # not refused for ours: busy
            try:
                # never wait for another process's reader under the gateway's
                # locks: a busy WAL stays until the next write that drops keys
                self._db.execute("PRAGMA busy_timeout=0")
                try:
                    busy, _log, _done = self._db.execute(
                        "PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
                finally:
                    self._db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            except sqlite3.Error:
                return False
        return busy == 0

    def get_floor(self, session_id: int) -> int:
        with self._lock:
            row = self._db.execute("SELECT floor FROM counter_floors WHERE session_id=?",
                                   (_signed(session_id),)).fetchone()
        return row[0] if row else 0

    def set_floor(self, session_id: int, floor: int) -> None:
        """Durable before any counter below ``floor`` is used: a restarted
        gateway resumes above it, so no AEAD nonce is ever reused."""
        with self._tx() as db:
            _set_floor(db, session_id, floor)

    def set_floor_many(self, floors: list[Floor]) -> list[StoreError | None]:
        """jvpn/store ``set_floors``: one transaction, one fsync."""
        return self.write_many([functools.partial(_set_floor, session_id=sid, floor=floor)
                                for sid, floor in floors])

    def claim_initiation(self, peer: bytes, timestamp_ns: int) -> bool:
        """One transaction: read, compare, write (BEGIN IMMEDIATE: no other
        writer in between). Timestamps are below 2**63 (the responder
        refuses others): SQLite's integers are signed."""
        with self._tx() as db:
            return _claim(db, peer, timestamp_ns)

    def get_replay_ceiling(self, session_id: int) -> tuple[int, bool]:
        with self._lock:
            try:
                row = self._db.execute(
                    "SELECT ceiling, exact FROM replay_ceilings WHERE session_id=?",
                    (_signed(session_id),)).fetchone()
            except sqlite3.Error as e:
                raise StoreError(f"session store read failed: {e}") from e
        return (row[0], bool(row[1])) if row else (0, True)

    def raise_replay_ceiling(self, session_id: int, ceiling: int) -> None:
        """Durable before a client counter at or above the old ceiling is
        delivered (never lowers it: docs/protocol.md, replay across restarts)."""
        with self._tx() as db:
            _raise_ceiling(db, session_id, ceiling)

    def settle_replay_ceiling(self, session_id: int, ceiling: int) -> None:
        """The exact ceiling, once nothing more is delivered (a clean stop, a
        handover): may lower it, so a restart does not strand the client."""
        with self._tx() as db:
            db.execute("INSERT INTO replay_ceilings VALUES (?, ?, 1) ON CONFLICT(session_id) "
                       "DO UPDATE SET ceiling=excluded.ceiling, exact=1",
                       (_signed(session_id), ceiling))

    def list(self) -> list[SessionRecord]:
        """Every session record that parses; the others are skipped and reported."""
        with self._lock:
            try:
                rows = self._db.execute(
                    "SELECT session_id, record FROM sessions ORDER BY session_id").fetchall()
            except sqlite3.Error as e:
                raise StoreError(f"session store read failed: {e}") from e
        out = []
        for sid, text in rows:
            try:
                out.append(record_from_json(text))
            except Unreadable as e:
                self._skipped(f"{_unsigned(sid):016x}", e)
        return out

    def changes(self, since_revision: int = 0) -> Iterator[Change]:
        with self._lock:
            rows = self._db.execute(
                "SELECT revision, session_id, version, kind FROM changes WHERE revision > ? "
                "ORDER BY revision", (since_revision,)).fetchall()
        for rev, sid, version, kind in rows:
            yield Change(rev, _unsigned(sid), version, kind)


# ------------------------------------------------------------ writes inside a transaction
# what one op of a batch may raise that is its own failure, not the batch's
_OP_ERRORS = (StoreError, sqlite3.Error, OverflowError, ValueError)


class _OpFailed(Exception):
    """An op of a batch without savepoints raised: the transaction is
    rolled back (_Tx) and the batch runs again, op by op."""


def _all_ops(db: sqlite3.Connection, ops: list[Callable[[sqlite3.Connection], object]]) -> list:
    try:
        return [op(db) for op in ops]
    except _OP_ERRORS as e:
        raise _OpFailed from e


def _in_savepoints(db: sqlite3.Connection,
                   ops: list[Callable[[sqlite3.Connection], object]]) -> list:
    """Each op in a savepoint: one that raises is undone alone, its
    StoreError its result."""
    results: list = []
    for op in ops:
        db.execute("SAVEPOINT op")
        try:
            results.append(op(db))
        # a value sqlite3 cannot bind (OverflowError, ValueError) is
        # that op's too: it never undoes the others (review k16r2 #2)
        except _OP_ERRORS as e:
            if not db.in_transaction:  # SQLite rolled it all back (disk full, I/O error)
                raise StoreError(f"session store write failed: {e}") from e
            db.execute("ROLLBACK TO op")
            results.append(e if isinstance(e, StoreError)
                           else StoreError(f"session store write failed: {e}"))
        db.execute("RELEASE op")
    return results


def _rerunnable(op: Callable[[sqlite3.Connection], object]) -> Callable:
    """A handshake path's op: a function of the connection alone (run
    twice, it writes what it wrote once), rarely failing (``write_many``)."""
    op.rerunnable = True
    return op


_FOLDED = ("claim_initiation", "create", "set_floor", "cas", "raise_replay_ceiling")


def _create(db: sqlite3.Connection, rec: SessionRecord, secrets: bytes) -> None:
    sid = _signed(rec.session_id)
    try:  # the primary key refuses a taken id: no SELECT first (one statement less, issue 15)
        db.execute("INSERT INTO sessions VALUES (?,?,?,?)",
                   (sid, rec.version, stored_json(rec), secrets))
    except sqlite3.IntegrityError as e:
        if e.sqlite_errorcode != sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY:
            raise
        raise AlreadyExists(f"session {rec.session_id:016x} exists") from None
    db.execute("INSERT INTO changes (session_id, version, kind) VALUES (?,?,?)",
               (sid, rec.version, "create"))


def _cas(db: sqlite3.Connection, session_id: int, expected_version: int, new: SessionRecord,
         secrets: bytes | None) -> None:
    if secrets is None:
        cur = db.execute("UPDATE sessions SET version=?, record=? WHERE session_id=? AND version=?",
                         (new.version, stored_json(new), _signed(session_id),
                          expected_version))
    else:
        cur = db.execute("UPDATE sessions SET version=?, record=?, secrets=? "
                         "WHERE session_id=? AND version=?",
                         (new.version, stored_json(new), secrets, _signed(session_id),
                          expected_version))
    if cur.rowcount != 1:
        raise VersionConflict(
            f"session {session_id:016x} is no longer at version {expected_version}")
    db.execute("INSERT INTO changes (session_id, version, kind) VALUES (?,?,?)",
               (_signed(session_id), new.version, "update"))


def _delete(db: sqlite3.Connection, session_id: int, expected_version: int | None) -> None:
    if expected_version is None:
        cur = db.execute("DELETE FROM sessions WHERE session_id=?", (_signed(session_id),))
    else:
        cur = db.execute("DELETE FROM sessions WHERE session_id=? AND version=?",
                         (_signed(session_id), expected_version))
    if cur.rowcount != 1:
        raise VersionConflict(f"session {session_id:016x}: nothing deleted")
    db.execute("DELETE FROM counter_floors WHERE session_id=?", (_signed(session_id),))
    db.execute("DELETE FROM replay_ceilings WHERE session_id=?", (_signed(session_id),))
    db.execute("INSERT INTO changes (session_id, version, kind) VALUES (?,?,?)",
               (_signed(session_id), -1, "delete"))


def _claim(db: sqlite3.Connection, peer: bytes, timestamp_ns: int) -> bool:
    """The peer's newest initiation becomes ``timestamp_ns`` if it is newer
    than the stored one (or none is stored): True. One statement in that
    case, the usual one (issue 15: the SELECT before the upsert was a sixth
    of a handshake's statements): the upsert writes only over a readable,
    older timestamp. When it wrote nothing, the row says why, read as
    before: a replay (False) or garbage (StoreError, this op fails alone,
    closed: review k18r5 F4), and nothing was written either way."""
    if not 0 <= timestamp_ns < 1 << 63:
        raise StoreError(f"initiation timestamp out of range: {timestamp_ns}")
    if db.execute(_CLAIM, (peer, timestamp_ns)).rowcount == 1:
        return True
    row = db.execute("SELECT timestamp_ns FROM initiations WHERE peer=?", (peer,)).fetchone()
    if row is not None and (type(row[0]) is not int or not 0 <= row[0] < 1 << 63):
        # garbage (a text, a negative): this peer's op fails alone, closed (review k18r5 F4)
        raise StoreError(f"initiations row of this peer unreadable: {row[0]!r:.40}")
    if row is not None and row[0] >= timestamp_ns:
        return False
    # no row, or an older readable one, and yet nothing written: not a case
    # this code knows (a changed schema, a trigger): refused, closed
    raise StoreError(f"initiation claim wrote nothing over {row!r:.40}")


# A new row, or over a readable older timestamp only: what the SELECT-then-
# upsert wrote, in one statement (typeof: a text sorts above every integer).
_CLAIM = ("INSERT INTO initiations VALUES (?, ?) ON CONFLICT(peer) "
          "DO UPDATE SET timestamp_ns=excluded.timestamp_ns "
          "WHERE typeof(timestamp_ns) = 'integer' AND timestamp_ns >= 0 "
          "AND timestamp_ns < excluded.timestamp_ns")


def _set_floor(db: sqlite3.Connection, session_id: int, floor: int) -> None:
    db.execute("INSERT INTO counter_floors VALUES (?, ?) ON CONFLICT(session_id) "
               "DO UPDATE SET floor=MAX(floor, excluded.floor)", (_signed(session_id), floor))


def _raise_ceiling(db: sqlite3.Connection, session_id: int, ceiling: int) -> None:
    db.execute("INSERT INTO replay_ceilings VALUES (?, ?, 0) ON CONFLICT(session_id) "
               "DO UPDATE SET exact=CASE WHEN excluded.ceiling > ceiling THEN 0 "
               "ELSE exact END, ceiling=MAX(ceiling, excluded.ceiling)",
               (_signed(session_id), ceiling))


def handshake_op(w: HandshakeWrites) -> Callable[[sqlite3.Connection], Prewritten | None]:
    """A handshake's writes as one op of a transaction, in the order of
    their guarantees: the claim decides (a replay writes nothing), then the
    record, then the floor reserved ahead of the first send counter."""
    def op(db: sqlite3.Connection) -> Prewritten | None:
        if not _claim(db, w.peer, w.timestamp_ns):
            return None
        _create(db, w.record, w.secrets)
        _set_floor(db, w.record.session_id, w.floor)
        return w.floor
    return _rerunnable(op)


def confirm_op(base: SessionRecord, new: SessionRecord,
               ceiling: int) -> Callable[[sqlite3.Connection], bool]:
    """A new session's confirmation as one op: the compare-and-swap of its
    record, then the replay ceiling its first messages need."""
    check_cas(base.session_id, base.version, new, None)

    def op(db: sqlite3.Connection) -> bool:
        _cas(db, base.session_id, base.version, new, None)
        _raise_ceiling(db, base.session_id, ceiling)
        return True
    return _rerunnable(op)


def cas_op(base: SessionRecord, new: SessionRecord) -> Callable[[sqlite3.Connection], None]:
    """One record's compare-and-swap as one op of a transaction (its
    conflict undoes it alone: ``write_many``)."""
    def op(db: sqlite3.Connection) -> None:
        check_cas(base.session_id, base.version, new, None)
        _cas(db, base.session_id, base.version, new, None)
    return op


class _Tx:
    """BEGIN IMMEDIATE ... COMMIT under the connection lock; any sqlite error
    rolls back and becomes a StoreError (callers fail closed)."""

    def __init__(self, db: sqlite3.Connection, lock: threading.Lock,
                 committed: Callable[[], None]):
        self.db, self.lock, self.committed = db, lock, committed

    def __enter__(self) -> sqlite3.Connection:
        self.lock.acquire()
        try:
            self.db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as e:
            self.lock.release()
            raise StoreError(f"session store unavailable: {e}") from e
        return self.db

    def _rollback(self) -> None:
        # SQLite ends the transaction itself on some errors (SQLITE_FULL,
        # SQLITE_IOERR): a ROLLBACK then raises instead (review k18r2 #3);
        # one that is issued and fails is a StoreError too (review k18r5 F3)
        try:
            if self.db.in_transaction:
                self.db.execute("ROLLBACK")
        except sqlite3.Error as e:
            raise StoreError(f"session store rollback failed: {e}") from e

    def __exit__(self, exc_type, exc, tb):
        try:
            if exc_type is None:
                try:
                    self.db.execute("COMMIT")
                except sqlite3.Error as e:
                    self._rollback()
                    raise StoreError(f"session store commit failed: {e}") from e
                self.committed()
            else:
                self._rollback()
                if isinstance(exc, sqlite3.Error):
                    raise StoreError(f"session store write failed: {exc}") from exc
        finally:
            self.lock.release()
        return False


class Checkpointer:
    """The WAL's checkpoints, on a thread and a connection of their own,
    not under the store's lock (the gateway's control lock): a PASSIVE
    checkpoint (it waits for no one, and no writer waits for it) after
    ``every_commits`` commits, or ``every_s`` after a commit not yet
    checkpointed. The WAL stays as bounded as SQLite's autocheckpoint
    kept it (also PASSIVE): about ``every_commits`` commits' pages beyond
    the last checkpoint, more only while a reader (another process) pins
    old frames, or while commits never pause (then, past WAL_CAP_PAGES,
    ``_catch_up``). ``forget_old_secrets``'s TRUNCATE checkpoint stays where it
    is; ``one_at_a_time`` keeps ours from making it busy. Commits still
    fsync the WAL (synchronous=FULL): durability does not depend on this."""

    def __init__(self, path: Path, serving_lock: threading.Lock, every_commits: int,
                 every_s: float):
        self.path, self.every_commits, self.every_s = path, every_commits, every_s
        self.serving_lock = serving_lock  # the store's: taken only by _catch_up
        self.one_at_a_time = threading.Lock()
        self.uncheckpointed = 0  # commits since the last checkpoint began
        self.runs = 0  # checkpoints done
        self.catch_ups = 0  # ... after which the WAL was past the cap (``_catch_up``)
        self.ran = threading.Event()  # set after each (a test waits on it)
        self._due, self._stopped = threading.Event(), threading.Event()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()

    def committed(self) -> None:
        """A commit on the serving connection (under the store's lock)."""
        self.uncheckpointed += 1
        if self._thread is None:
            self._start()
        if self.uncheckpointed >= self.every_commits:
            self._due.set()

    def _start(self) -> None:
        with self._start_lock:
            if self._thread is None and not self._stopped.is_set():
                self._thread = threading.Thread(target=self._run, name="sqlite-checkpoint",
                                                daemon=True)
                self._thread.start()

    def _run(self) -> None:
        try:
            db = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False,
                                 timeout=BUSY_TIMEOUT_MS / 1000)
            db.execute("PRAGMA synchronous=FULL")
        except sqlite3.Error:
            return  # none aside: the WAL grows until the next forget_old_secrets
        try:
            while not self._stopped.is_set():
                self._due.wait(self.every_s)
                self._due.clear()
                if self.uncheckpointed and not self._stopped.is_set():
                    self._checkpoint(db)
        finally:
            db.close()

    def _checkpoint(self, db: sqlite3.Connection) -> None:
        self.uncheckpointed = 0
        with self.one_at_a_time:
            try:
                db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            except sqlite3.Error:
                pass  # the next one tries again
        if self._wal_pages(db) > WAL_CAP_PAGES:
            self._catch_up(db)
        self.runs += 1
        self.ran.set()

    def _catch_up(self, db: sqlite3.Connection) -> None:
        """Commits that never paused: each landed while our checkpoint ran,
        and the WAL starts over only at a write that finds it all
        checkpointed, so it grew for ever. Past the cap, the frames our
        checkpoint left (the few since it began) are checkpointed with the
        serving connection's writes held back (its lock, the one time we
        take it), and the next write starts the WAL over."""
        with self.serving_lock, self.one_at_a_time:
            try:
                db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            except sqlite3.Error:
                return
        self.catch_ups += 1

    def _wal_pages(self, db: sqlite3.Connection) -> int:
        try:
            size = os.stat(self.path.with_name(self.path.name + "-wal")).st_size
        except OSError:
            return 0
        return size // db.execute("PRAGMA page_size").fetchone()[0]

    def stop(self) -> None:
        self._stopped.set()
        self._due.set()
        t = self._thread
        if t is not None and t is not threading.current_thread():
            t.join(BUSY_TIMEOUT_MS / 1000)
