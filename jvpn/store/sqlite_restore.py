"""The SQLite store's restart pass (Store.restorable): pages of one join
of the sessions with their counter floors and replay ceilings, in id order.
A mixin of :class:`jvpn.store.sqlite.SqliteStore` (its connection, lock
and ``_skipped``)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator

from jvpn.frozen import positional_maker
from jvpn.store import RESTORE_PAGE, Stored, StoreError, Unreadable, record_from_json

# Store.restorable's page: sessions with their floor and ceiling, keyset-paged
_RESTORABLE = """
SELECT s.session_id, s.record, s.secrets, f.floor, r.ceiling, r.exact FROM sessions s
LEFT JOIN counter_floors f ON f.session_id = s.session_id
LEFT JOIN replay_ceilings r ON r.session_id = s.session_id
WHERE s.session_id >= ? ORDER BY s.session_id LIMIT ?
"""

_make_stored = positional_maker(Stored)  # a restart makes one per session (jvpn/frozen.py)


def _unsigned(s: int) -> int:
    return s + (1 << 64) if s < 0 else s


def _count(value) -> int:
    """A stored counter: an integer column, never text that looks like one."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"a counter stored as {type(value).__name__}")
    return value



class SqliteRestore:
    def restorable(self, page: int = RESTORE_PAGE) -> Iterator[Stored]:
        """Store.restorable: pages of one join in id order, each read under
        the lock (a writer waits for one page, not for the whole pass)."""
        first = -(1 << 63)  # ids are stored as their signed twins
        while True:
            with self._lock:
                try:
                    rows = self._db.execute(_RESTORABLE, (first, page)).fetchall()
                except sqlite3.Error as e:
                    raise StoreError(f"session store read failed: {e}") from e
            for row in rows:
                stored = self._stored(*row)
                if stored is not None:
                    yield stored
            if len(rows) < page or rows[-1][0] == (1 << 63) - 1:
                return
            first = rows[-1][0] + 1

    def _stored(self, sid, text, secrets, floor, ceiling, exact) -> Stored | None:
        """One row of the pass: None for a record that does not parse (skipped
        and reported, as every read does); secrets, floor or ceiling that do
        not read give a Stored with its ``problem`` (that session only)."""
        try:
            rec = record_from_json(text)
        except Unreadable as e:
            self._skipped(f"{_unsigned(sid):016x}", e)
            return None
        try:
            if not isinstance(secrets, bytes):
                raise TypeError(f"secrets are {type(secrets).__name__}, not bytes")
            return _make_stored(rec, secrets, _count(floor or 0),  # Stored(...), at once
                                (_count(ceiling), bool(exact)) if ceiling is not None
                                else (0, True), None)
        except (TypeError, ValueError) as e:
            return Stored(rec, b"", problem=Unreadable(
                f"session {rec.session_id:016x}: its stored secrets, floor or ceiling "
                f"do not read ({e})"))
