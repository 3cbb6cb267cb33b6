"""The SQLite store's reads and lowerings of initiation claims (the
``initiations`` table; a claim itself is made with the handshake's other
writes: jvpn/store/sqlite.py ``_claim``). A mixin of
:class:`jvpn.store.sqlite.SqliteStore` (its connection, lock and
transactions)."""

from __future__ import annotations

import sqlite3

from jvpn.store import StoreError, check_lowering


class SqliteClaims:
    def last_initiation(self, peer: bytes) -> int:
        with self._lock:
            try:
                row = self._db.execute("SELECT timestamp_ns FROM initiations WHERE peer=?",
                                       (peer,)).fetchone()
            except sqlite3.Error as e:
                raise StoreError(f"session store read failed: {e}") from e
        return int(row[0]) if row else 0

    def lower_claim(self, peer: bytes, claimed_ns: int, lowered_ns: int) -> bool:
        """Store.lower_claim: one conditional statement, so a claim another
        gateway moved meanwhile (or a value that is no integer) is left."""
        check_lowering(claimed_ns, lowered_ns)
        with self._tx() as db:
            return db.execute(_LOWER_CLAIM, (lowered_ns, peer, claimed_ns)).rowcount == 1


# Store.lower_claim: over exactly the claimed value, an integer (typeof: a
# text '123' never matches, whatever SQLite's comparison would make of it)
_LOWER_CLAIM = ("UPDATE initiations SET timestamp_ns=? WHERE peer=? "
                "AND typeof(timestamp_ns) = 'integer' AND timestamp_ns=?")
