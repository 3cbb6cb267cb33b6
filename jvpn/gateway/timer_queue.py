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
heap is rebuilt when those outnumber the live ones."""

from __future__ import annotations

import heapq

NOW = 0  # "at the next tick": earlier than any clock


class TimerQueue:
    def __init__(self):
        self._heap: list[tuple[int, int]] = []  # (due ms, session id), stale ones included
        self._due: dict[int, int] = {}  # session id -> its live entry's due ms

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

    def pop_due(self, now: int) -> list[int]:
        """The sessions due at ``now``, removed (the caller replaces them)."""
        heap, due, out = self._heap, self._due, []
        while heap and heap[0][0] <= now:
            at, sid = heapq.heappop(heap)
            if due.get(sid) == at:
                del due[sid]
                out.append(sid)
        return out

    def _set(self, sid: int, at: int) -> None:
        self._due[sid] = at
        heapq.heappush(self._heap, (at, sid))
        if len(self._heap) > 2 * len(self._due) + 1024:  # mostly superseded entries
            self._heap = [(t, s) for s, t in self._due.items()]
            heapq.heapify(self._heap)
