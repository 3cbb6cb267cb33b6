"""The sessions' timers by due time (issue 15): the gateway's tick looks at
the sessions whose timers may be due, not at every session.

Each session has at most one live entry: the earliest time any of its
timers can fire (jvpn/gateway/timers.py ``due_at``, key_timers.py and
key_nudge.py ``due_at``: lower bounds, so a session looked at early is
simply rescheduled, never late). Whatever changes a session under the
control lock (the session table's writes: a commit, new keys, a
quarantine, a confirmation) marks it due at once; the tick runs it and
schedules its next time from what it then holds. A heap with lazy
deletion: a superseded entry stays until it surfaces and is skipped; the
heap is rebuilt when those outnumber the live ones.

Due times are on the gateway's clock, the wall clock (the records' times
are): a step back of J would delay every entry computed before it by J, so
a tick that sees the clock go back marks every session due (once per step).
The data thread cannot write the heap (the tick pops it under the control
lock): it ``nudge``s a session, taken in at the next tick."""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from contextlib import contextmanager

NOW = 0  # "at the next tick": earlier than any clock


class TimerQueue:
    def __init__(self):
        self._heap: list[tuple[int, int]] = []  # (due ms, session id), stale ones included
        self._due: dict[int, int] = {}  # session id -> its live entry's due ms
        self._latest: int | None = None  # the latest clock a tick saw
        self._nudged: list[int] = []  # touched from another thread (append, pop: atomic)
        self._filling = False  # ``filling``: due times only, the heap built at the end

    def __len__(self) -> int:
        return len(self._due)

    def due_time(self, sid: int) -> int | None:
        return self._due.get(sid)

    def touch(self, sid: int) -> None:
        """Something changed the session: its timers are looked at next tick."""
        self.schedule(sid, NOW)

    def schedule(self, sid: int, at: int) -> None:
        """Due at ``at`` at the latest (an earlier entry stands)."""
        current = self._due.get(sid)
        if current is None or at < current:
            self._set(sid, at)

    def replace(self, sid: int, at: int | None) -> None:
        """After its check: due next at ``at`` (None: only when touched)."""
        if at is None:
            self._due.pop(sid, None)
        else:
            self._set(sid, at)

    def discard(self, sid: int) -> None:
        self._due.pop(sid, None)

    def nudge(self, sid: int) -> None:
        """``touch`` from a thread that holds no control lock (the data path)."""
        self._nudged.append(sid)

    def pop_due(self, now: int, limit: int | None = None) -> list[int]:
        """The sessions due at ``now`` (at most ``limit``, earliest first),
        removed (the caller replaces them); the rest stay due."""
        while self._nudged:
            self.touch(self._nudged.pop())
        if self._latest is not None and now < self._latest:
            self._all_due()  # the clock went back: every due time is too late
        self._latest = now
        heap, due, out = self._heap, self._due, []
        while heap and heap[0][0] <= now and (limit is None or len(out) < limit):
            at, sid = heapq.heappop(heap)
            if due.get(sid) == at:
                del due[sid]
                out.append(sid)
        return out

    @contextmanager
    def filling(self) -> Iterator[None]:
        """Many sessions scheduled at once (a restart's reconcile, under the
        control lock): their due times are recorded, the heap is built once
        at the end (one heapify, not a push per change: two per restored
        session, issue 15). Nothing pops meanwhile (the caller holds the lock)."""
        self._filling = True
        try:
            yield
        finally:
            self._filling = False
            self.compact()

    def compact(self) -> None:
        """The heap rebuilt from the live entries: after a restart moved
        every restored session from "now" to its own time (reconcile), the
        superseded entries would all surface at the first tick's first pop,
        a walk of them all under the control lock (a second at 1M)."""
        self._heap = [(at, sid) for sid, at in self._due.items()]
        heapq.heapify(self._heap)

    def stale(self) -> int:
        """Entries superseded, still in the heap (the cost of a pop's walk)."""
        return len(self._heap) - len(self._due)

    def _all_due(self) -> None:
        self._due = dict.fromkeys(self._due, NOW)
        self._heap = [(NOW, sid) for sid in self._due]
        heapq.heapify(self._heap)

    def _set(self, sid: int, at: int) -> None:
        self._due[sid] = at
        if self._filling:
            return
        heapq.heappush(self._heap, (at, sid))
        if len(self._heap) > 2 * len(self._due) + 1024:  # mostly superseded entries
            self._heap = [(t, s) for s, t in self._due.items()]
            heapq.heapify(self._heap)
