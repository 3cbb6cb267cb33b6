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

The records' times, and so the timers' deadlines, are on the wall clock;
the waiting is on the timer clock (CLOCK_BOOTTIME: never set back). The
queue keeps its own clock, ``q``: it moves on with the timer clock, and
with the wall clock only where the wall clock leads the timer clock by
more than it ever did (a step forward: the deadlines it passed are due,
those it did not are not). A due time given on the wall clock is kept as
the same wait on ``q`` (``at + skew``, the skew as of the last tick).
So a wall clock that is frozen, creeping (held back by steps no tick
sees), stepped back or swinging back and forth never holds an entry past
its wait: the caller checks the deadline against the wall clock then,
and an early look is simply rescheduled by what is left (review k20r5
F2). A step back no longer makes every session due (once per step: a
clock swinging each tick had every session looked at every other tick);
a step forward of J makes due what waits less than J, once.
A wait taken while the wall clock lags its highest lead (stepped back)
is longer than the wall clock's by that lag, and a step that sets the
wall clock right again moves ``q`` by nothing: such an entry also waits
on the wall clock itself (``_Backstop``), so that it is late to its
wall-clock deadline by at most ``BACKSTOP_LAG_MS`` (review k21r1: a step
back of an hour, set right, held a lifetime's end an hour). The cost: while
the wall clock lags (a clock that ran ahead, set right, lags until the
restart) each schedule is a push on both heaps. A pop takes the two
heaps' entries earliest first on the wall clock's reckoning, a touch first
(review k21r3: not the backstop's first, whose catch-up after a set-right
is every session rescheduled while the clock lagged).
The data thread cannot write the heap (the tick pops it under the control
lock): it ``nudge``s a session, taken in at the next tick."""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from contextlib import contextmanager

NOW = 0  # "at the next tick": earlier than any clock
# a lag of the wall clock behind its highest lead on the timer clock up to
# this waits on ``q`` alone (late by at most this much to the wall clock):
# the two clocks' readings apart (ms rounding, a thread preempted between
# the two reads) move the lead by milliseconds each tick and would put
# nearly every entry in the backstop too (_Backstop); over a second, so
# that a leap second (the wall clock back by 1 s, never set right) does
# not put every schedule on both heaps for the rest of the process
BACKSTOP_LAG_MS = 2_000


class TimerQueue:
    def __init__(self):
        self._heap: list[tuple[int, int]] = []  # (due ms, session id), stale ones included
        self._due: dict[int, int] = {}  # session id -> its live entry's due ms
        self._clock: _QueueClock | None = None  # ``q`` (None: no tick yet, q = wall)
        self._skew = 0  # q - wall clock, as of the last tick (> 0: the wall clock lags)
        self._backstop = _Backstop()  # the entries set while it lagged, by wall-clock time
        self._nudged: list[int] = []  # touched from another thread (append, pop: atomic)
        self._filling = False  # ``filling``: due times only, the heap built at the end

    def __len__(self) -> int:
        return len(self._due)

    def due_time(self, sid: int) -> int | None:
        """On the wall clock (as of the last tick); NOW: at the next tick."""
        at = self._due.get(sid)
        return at if at is None or at == NOW else at - self._skew

    def touch(self, sid: int) -> None:
        """Something changed the session: its timers are looked at next tick."""
        self.schedule(sid, NOW)

    def schedule(self, sid: int, at: int) -> None:
        """Due at ``at`` at the latest (an earlier entry stands)."""
        at = self._waited(at)
        current = self._due.get(sid)
        if current is None or at < current:
            self._set(sid, at)

    def replace(self, sid: int, at: int | None) -> None:
        """After its check: due next at ``at`` (None: only when touched)."""
        if at is None:
            self.discard(sid)
        else:
            self._set(sid, self._waited(at))

    def discard(self, sid: int) -> None:
        self._due.pop(sid, None)
        self._backstop.drop(sid)

    def nudge(self, sid: int) -> None:
        """``touch`` from a thread that holds no control lock (the data path)."""
        self._nudged.append(sid)

    def pop_due(self, now: int, limit: int | None = None,
                timer: int | None = None) -> list[int]:
        """The sessions due at ``now`` (the wall clock; ``timer``: the timer
        clock then, None: one clock, a test's: never mix the two on one
        queue), at most ``limit``, earliest first, removed (the caller
        replaces them); the rest stay due."""
        while self._nudged:
            self.touch(self._nudged.pop())
        q = self._tick(now, now if timer is None else timer)
        if not self._backstop:  # nothing set while the wall clock lagged: one heap
            return self._pop_heap(q, limit)
        out: list[int] = []
        while limit is None or len(out) < limit:
            sid = self._pop_earliest(now, q)
            if sid is None:
                break
            out.append(sid)
        return out

    def _pop_heap(self, q: int, limit: int | None) -> list[int]:
        heap, due, out = self._heap, self._due, []
        while heap and heap[0][0] <= q and (limit is None or len(out) < limit):
            at, sid = heapq.heappop(heap)
            if due.get(sid) == at:
                del due[sid]
                out.append(sid)
        return out

    def _pop_earliest(self, wall: int, q: int) -> int | None:
        """The earliest due entry of the two heaps, on the wall clock's
        reckoning (a touched one first), removed from both; None: none due.
        Review k21r3: the backstop popped first held a touch, and entries due
        earlier, behind its catch-up after a wall clock set right (every
        session rescheduled while it lagged, due at once)."""
        at = self._live_top(q)
        back = self._backstop.top(wall)
        if at is not None and (back is None or at == NOW or at - self._skew <= back[0]):
            sid = heapq.heappop(self._heap)[1]
            del self._due[sid]
            self._backstop.drop(sid)
            return sid
        if back is None:
            return None
        sid = self._backstop.take()
        self._due.pop(sid, None)  # its ``q`` entry goes stale
        return sid

    def _live_top(self, q: int) -> int | None:
        """The due time of the heap's earliest live entry due at ``q``
        (superseded ones above it dropped); None: none due."""
        heap, due = self._heap, self._due
        while heap and heap[0][0] <= q:
            at, sid = heap[0]
            if due.get(sid) == at:
                return at
            heapq.heappop(heap)
        return None

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

    def _tick(self, wall: int, timer: int) -> int:
        """``q`` now (and the skew schedules use until the next tick)."""
        if self._clock is None:
            self._clock = _QueueClock(wall, timer)
        q = self._clock.read(wall, timer)
        self._skew = q - wall
        return q

    def _waited(self, at: int) -> int:
        """A wall-clock due time as the same wait on ``q``."""
        return at if at == NOW else at + self._skew

    def _set(self, sid: int, at: int) -> None:
        self._due[sid] = at
        if self._skew > BACKSTOP_LAG_MS and at != NOW:  # a wait longer than the wall clock's
            self._backstop.add(sid, at - self._skew)
        else:
            self._backstop.drop(sid)
        if self._filling:
            return
        heapq.heappush(self._heap, (at, sid))
        if len(self._heap) > 2 * len(self._due) + 1024:  # mostly superseded entries
            self._heap = [(t, s) for s, t in self._due.items()]
            heapq.heapify(self._heap)


class _QueueClock:
    """``q``: the timer clock's time since the first tick, plus the wall
    clock's lead on it (wall - timer) at its highest so far, so that a
    step forward counts once and a step back, a frozen or a swinging wall
    clock hold nothing. A timer clock read lower than before (a test's or a
    tool's single clock stepped back) counts as no time, and time again
    from there."""

    __slots__ = ("lead", "q", "timer")

    def __init__(self, wall: int, timer: int):
        self.q, self.timer, self.lead = wall, timer, wall - timer

    def read(self, wall: int, timer: int) -> int:
        self.q += max(timer - self.timer, 0) + max(wall - timer - self.lead, 0)
        self.timer, self.lead = timer, max(wall - timer, self.lead)
        return self.q


class _Backstop:
    """The entries set while the wall clock lagged its highest lead (a step
    back), by their wall-clock due time: due when the wall clock reaches
    it, too (a step setting it right makes them due, not their longer
    wait on ``q``). Empty while the wall clock does not lag: nothing per
    schedule then but a dict miss."""

    __slots__ = ("_at", "_heap")

    def __init__(self):
        self._heap: list[tuple[int, int]] = []  # (wall-clock ms, session id), stale ones too
        self._at: dict[int, int] = {}  # session id -> its live backstop's wall-clock ms

    def add(self, sid: int, wall_at: int) -> None:
        self._at[sid] = wall_at
        heapq.heappush(self._heap, (wall_at, sid))
        if len(self._heap) > 2 * len(self._at) + 1024:  # mostly superseded entries
            self._heap = [(t, s) for s, t in self._at.items()]
            heapq.heapify(self._heap)

    def __bool__(self) -> bool:
        return bool(self._at)

    def drop(self, sid: int) -> None:
        if self._at:
            self._at.pop(sid, None)
            if not self._at:
                self._heap = []

    def top(self, wall: int) -> tuple[int, int] | None:
        """The earliest live entry the wall clock reached (superseded ones
        above it dropped); None: none."""
        heap, at_of = self._heap, self._at
        while heap and heap[0][0] <= wall:
            at, sid = heap[0]
            if at_of.get(sid) == at:
                return heap[0]
            heapq.heappop(heap)
        return None

    def take(self) -> int:
        """The entry ``top`` gave, removed."""
        sid = heapq.heappop(self._heap)[1]
        del self._at[sid]
        if not self._at:
            self._heap = []  # its stale entries: nothing left to wait on
        return sid
