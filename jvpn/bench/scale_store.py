"""Synthetic sessions for `bench scale` (issue 15): N ATTACHED sessions of
this gateway, with their secrets, counter floors and replay ceilings, in a
fresh SQLite store, written in bulk; and the peers file that configures
the peer of each (a restored session lives only while its peer's key and
inner address are configured: jvpn/gateway/revocation.py).

Keys are real but cheap: one seed's secrets expanded per session by the
product's own HKDF (:func:`jvpn.keys.derive_session_keys`, the session id
in its info), so every session has its own keys and the bench can rebuild
any session's keys from the seed and its index. Each peer's public key is
a hash of the seed and the index (never used for a handshake here).
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from jvpn import keys as jkeys
from jvpn.keys import KeyRing, SessionKeys
from jvpn.session import SessionRecord, State, Transport
from jvpn.store import record_to_json
from jvpn.store.sqlite import SqliteStore

SID_BASE = 0x5CA1 << 48  # the synthetic sessions' ids: SID_BASE | (index + 1)
INNER_BASE = 0x0A000002  # 10.0.0.2 on, one per session (the gateway is 10.0.0.1/8)
MAX_SESSIONS = 0x00FFFFFD  # what 10.0.0.0/8 holds beyond the gateway and broadcast
FLOOR = 1024  # the gateway's send counters resume here
CEILING = 1  # client counters delivered so far: none (exact)
CHUNK = 20_000  # sessions per transaction


@dataclass(frozen=True)
class Seed:
    """What every synthetic session's secrets are derived from."""

    k1: bytes
    k2: bytes
    handshake_hash: bytes

    @classmethod
    def new(cls) -> Seed:
        return cls(jkeys.generate_private(), jkeys.generate_private(),
                   hashlib.sha256(jkeys.generate_private()).digest())

    def session_keys(self, sid: int) -> SessionKeys:
        return jkeys.derive_session_keys(sid, self.k1, self.k2, self.handshake_hash)

    def peer_key(self, i: int) -> bytes:
        return hashlib.sha256(self.k1 + i.to_bytes(8, "big")).digest()


def session_id(i: int) -> int:
    return SID_BASE | (i + 1)


def inner_addr(i: int) -> str:
    a = (INNER_BASE + i).to_bytes(4, "big")
    return ".".join(str(b) for b in a)


def binding(i: int) -> Transport:
    """Some client address (198.18.0.0/15, the benchmark range) and port."""
    return Transport(f"198.18.{(i >> 8) & 255}.{i & 255}", 40000 + ((i >> 16) & 0x3FFF))


def record(seed: Seed, i: int, node_id: str, now_ms: int) -> SessionRecord:
    """Session ``i``: ATTACHED, owned by ``node_id``, bound, keys made now."""
    return SessionRecord(session_id=session_id(i), state=State.ATTACHED, version=3,
                         created_ms=now_ms, last_change_ms=now_ms, binding=binding(i),
                         owner=node_id, inner_addr=inner_addr(i),
                         handshake_ns=now_ms * 1_000_000 + i,
                         peer_key=jkeys.encode(seed.peer_key(i)), keys_ms=now_ms)


def _signed(u: int) -> int:
    """The store's column for a u64 id (its signed twin)."""
    return u - (1 << 64) if u >= 1 << 63 else u


def _rows(seed: Seed, first: int, n: int, node_id: str, now_ms: int) -> list[tuple]:
    out = []
    for i in range(first, first + n):
        rec = record(seed, i, node_id, now_ms)
        secrets = KeyRing(seed.session_keys(rec.session_id)).pack()
        out.append((_signed(rec.session_id), rec.version, record_to_json(rec), secrets))
    return out


def _chunk_op(rows: list[tuple]) -> Callable[[sqlite3.Connection], int]:
    """One chunk's writes as one op of one transaction: what a handshake and
    its confirmation write per session (record and secrets, the change
    row, the counter floor, the replay ceiling), with executemany."""
    def op(db: sqlite3.Connection) -> int:
        db.executemany("INSERT INTO sessions VALUES (?,?,?,?)", rows)
        db.executemany("INSERT INTO changes (session_id, version, kind) VALUES (?,?,'create')",
                       [(r[0], r[1]) for r in rows])
        db.executemany("INSERT INTO counter_floors VALUES (?, ?)", [(r[0], FLOOR) for r in rows])
        db.executemany("INSERT INTO replay_ceilings VALUES (?, ?, 1)",
                       [(r[0], CEILING) for r in rows])
        return len(rows)
    return op


def write_sessions(store: SqliteStore, seed: Seed, n: int, node_id: str, now_ms: int,
                   progress: Callable[[int], None] = lambda _done: None,
                   chunk: int = CHUNK) -> None:
    """Sessions 0 .. n-1 into ``store``, one transaction per ``chunk``
    (the store's own group commit: :meth:`SqliteStore.write_many`)."""
    if not 0 < n <= MAX_SESSIONS:
        raise ValueError(f"between 1 and {MAX_SESSIONS} sessions, not {n}")
    for first in range(0, n, chunk):
        [result] = store.write_many([_chunk_op(_rows(seed, first, min(chunk, n - first),
                                                     node_id, now_ms))])
        if isinstance(result, Exception):
            raise result
        progress(first + result)


def peer_lines(seed: Seed, n: int) -> Iterator[str]:
    for i in range(n):
        yield (f"[Peer]\nPublicKey = {jkeys.encode(seed.peer_key(i))}\n"
               f"AllowedIPs = {inner_addr(i)}/32\n")


def write_peers(path: Path, seed: Seed, n: int) -> None:
    """The peers file: session ``i``'s peer, its key and inner address."""
    with open(path, "w") as f:
        f.writelines(peer_lines(seed, n))
