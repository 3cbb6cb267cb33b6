"""The operator socket's ``sessions`` answer in pages (issue 15): a million
sessions' identities are some 400 MB of JSON, more than one reply may be
(jvpn/operator.py MAX_REPLY_BYTES) and more than the daemon should build
as one string. The first request (``{"op": "sessions", "limit": N}``)
takes one snapshot of the session references (under the control lock: a
C-level copy), sorted by id, and answers its first N rows with a
``next`` cursor; each request with ``{"cursor": ..., "limit": N}``
answers the next N rows of that same snapshot; the last page has no
``next``. A snapshot not asked for within ``TTL_S`` is dropped (the
listing is then refused: ask again). ``{"after": ID, "limit": N}`` (ID: 16
hex digits) starts a new snapshot past that id: a reader that paused
longer than ``TTL_S`` resumes where it was (review k18r3 #1);
``{"cursor": ..., "close": true}`` drops a listing not read to its end
(its slot of ``MAX_OPEN`` freed at once: review k18r3 #2). Pages ask for no kernel counters
(``kernel_rx``: false): the CLI reads the runtime map itself, in batches.
Without ``limit`` and ``cursor``, the whole answer in one reply, as before.
A page's rows are made with the cyclic collector paused (jvpn/gcpause.py).
"""

from __future__ import annotations

import bisect
import re
import secrets
import threading
import time

from jvpn.gateway import snapshot
from jvpn.gateway.operator import Refused
from jvpn.gcpause import paused_gc

_BY_ID = snapshot.BY_ID  # C-level: a million keys in the first page
TTL_S = 60.0
MAX_LIMIT = 1 << 20
MAX_OPEN = 8  # listings in progress at once (each holds references, not copies)


_HEX_ID = re.compile(r"[0-9a-f]{16}")


def _after(after) -> int | None:
    """A resumed listing's last id (16 hex digits, as the rows name it)."""
    if after is None:
        return None
    if not isinstance(after, str) or not _HEX_ID.fullmatch(after):
        raise Refused("sessions: after must be a session id of 16 hex digits")
    return int(after, 16)


class SessionPages:
    def __init__(self, clock=time.monotonic):
        self.clock = clock
        self._open: dict[str, tuple[list, dict, int, float]] = {}  # cursor -> listing
        self._lock = threading.Lock()

    def page(self, gw, request: dict) -> tuple[list, str | None]:
        """(rows, next cursor or None) for this request: dicts, or with
        ``"columns": true`` lists in snapshot.COLUMNS' order (the names
        once, not in every row: issue 15)."""
        limit = request.get("limit", MAX_LIMIT)
        if type(limit) is not int or not 1 <= limit <= MAX_LIMIT:
            raise Refused(f"sessions: limit must be an integer from 1 to {MAX_LIMIT}")
        cursor = request.get("cursor")
        if request.get("close") is True:
            self._drop(cursor)
            return [], None
        lives, peers, start = self._take(gw, cursor, _after(request.get("after")))
        end = min(start + limit, len(lives))
        # the page's rows hold no cycle: the collections their making would
        # trigger walk every object made since the restart's freeze (a
        # fifth of the pages' time at 1M beside the first ticks, issue 15)
        with paused_gc():
            made = snapshot.session_values if request.get("columns") is True else \
                snapshot.sessions
            rows = made(gw, refs=(lives[start:end], peers),
                        kernel_rx=request.get("kernel_rx", True) is not False)
        return rows, self._keep(lives, peers, end) if end < len(lives) else None

    def _take(self, gw, cursor, after: int | None) -> tuple[list, dict, int]:
        now = self.clock()
        with self._lock:
            for c in [c for c, got in self._open.items() if got[3] < now]:
                del self._open[c]
            if cursor is None:
                lives, peers = snapshot.references(gw)
                lives.sort(key=_BY_ID)
                start = 0 if after is None else bisect.bisect_right(lives, after, key=_BY_ID)
                return lives, peers, start
            got = self._open.pop(cursor, None) if isinstance(cursor, str) else None
        if got is None:
            raise Refused("sessions: that listing is over or expired (more than "
                          f"{TTL_S:g} s between pages): list again")
        return got[0], got[1], got[2]

    def _drop(self, cursor) -> None:
        if isinstance(cursor, str):
            with self._lock:
                self._open.pop(cursor, None)

    def _keep(self, lives: list, peers: dict, position: int) -> str:
        cursor = secrets.token_hex(8)
        with self._lock:
            if len(self._open) >= MAX_OPEN:  # the oldest listing goes
                del self._open[min(self._open, key=lambda c: self._open[c][3])]
            self._open[cursor] = (lives, peers, position, self.clock() + TTL_S)
        return cursor
