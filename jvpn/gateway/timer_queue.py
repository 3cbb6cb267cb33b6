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

A session's due time comes in two parts, each on its own clock (review
k21r3 F2): the records' deadlines (the lifetime, the transportless TTL,
the recovery window, key expiry: times other gateways read) on the wall
clock, ``at``; the silences and paces (the heartbeat window, the idle
AEAD drop, the stranding's silence, the message budget's rate bound, a
nudge's pace, "next tick") on the timer clock (CLOCK_BOOTTIME: never set
back), ``timer_at``. The waiting is on the timer clock. The queue keeps
its own clock, ``q``: it moves on with the timer clock, and with the wall
clock only where the wall clock leads the timer clock by more than it
ever did (a step forward: the deadlines it passed are due, those it did
not are not). A wall-clock due time is kept as the same wait on ``q``
(``at + skew``, the skew as of the last reading of the clocks), a
timer-clock one as itself on ``q`` (``q`` less the timer clock, as of the
last reading). So a wall clock that is frozen, creeping (held back by
steps no tick sees), stepped back or swinging back and forth never holds
an entry past its wait: the caller checks the deadline against the wall
clock then, and an early look is simply rescheduled by what is left
(review k20r5 F2). A step back no longer makes every session due (once per
step: a clock swinging each tick had every session looked at every other
tick); a step forward of J makes due what waits less than J, once.
A wall-clock wait taken while the wall clock lags its highest lead
(stepped back) is longer than the wall clock's by that lag, and a step
that sets the wall clock right again moves ``q`` by nothing: where the
entry's wait on ``q`` ends more than ``BACKSTOP_LAG_MS`` after its
wall-clock deadline, the deadline also waits on the wall clock itself
(``_Backstop``), so that it is late by at most ``BACKSTOP_LAG_MS``
(review k21r1: a step back of an hour, set right, held a lifetime's end an
hour). Only the wall-clock part: a silence's wait on ``q`` is exact
whatever the wall clock does, and held on the wall clock by a lagging
reading it made every session rescheduled during the lag due at once when
the clock was set right (review k21r3 F2: a sweep of every active session
at each set-right). An active session's silence comes long before its
record's deadlines: it waits on ``q`` alone, lagging or not. A pop takes
the two heaps' entries earliest first on the wall clock's reckoning, a
touch first (review k21r3: not the backstop's first, whose catch-up after
a set-right is every wall-clock deadline passed while the clock lagged).
The data thread cannot write the heap (the tick pops it under the control
lock): it ``nudge``s a session, taken in at the next tick."""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from contextlib import contextmanager

NOW = 0  # "at the next tick": earlier than any clock
# an entry on ``q`` up to this late to its wall-clock deadline (``q``: where
# the wall clock is once set right; a lag of the wall clock behind its
# highest lead on the timer clock up to this) waits on ``q`` alone (late by
# at most this much to the wall clock): the two clocks' readings apart (ms
# rounding, a thread preempted between the two reads) move the lead by
# milliseconds each tick and would put nearly every entry in the backstop
# too (_Backstop); over a second, so that a leap second (the wall clock back
# by 1 s, never set right) does not put every schedule on both heaps for
# the rest of the process
BACKSTOP_LAG_MS = 2_000


class TimerQueue:
    def __init__(self):
        self._heap: list[tuple[int, int]] = []  # (due ms on q, session id), stale ones included
        self._due: dict[int, int] = {}  # session id -> its live entry's due ms on q
        self._clock: _QueueClock | None = None  # ``q`` (None: no reading yet, q = wall)
        self._skew = 0  # q - wall clock, as of the last reading (> 0: the wall clock lags)
        self._timer_skew: int | None = None  # q - timer clock then (None: no reading yet)
        self._backstop = _Backstop()  # wall-clock deadlines a lag holds late on q
        self._nudged: list[int] = []  # touched from another thread (append, pop: atomic)
        self._filling = False  # ``filling``: due times only, the heap built at the end

    def __len__(self) -> int:
        return len(self._due)

    def due_time(self, sid: int) -> int | None:
        """On the wall clock (as of the last reading); NOW: at the next tick."""
        at = self._due.get(sid)
        return at if at is None or at == NOW else at - self._skew

    def held_on_the_wall_clock(self) -> int:
        """The sessions whose wall-clock deadline also waits on the wall
        clock (the backstop: a lag's memory and cost, none without one)."""
        return len(self._backstop)

    def touch(self, sid: int) -> None:
        """Something changed the session: its timers are looked at next tick."""
        if self._due.get(sid) != NOW:  # touched again: one entry
            self._set(sid, NOW)
        self._backstop.drop(sid)  # looked at next tick, rescheduled from what it holds

    def schedule(self, sid: int, at: int | None, timer_at: int | None = None) -> None:
        """Due at ``at`` (the wall clock) or ``timer_at`` (the timer clock)
        at the latest: an earlier entry stands, on either clock."""
        if at == NOW:
            self.touch(sid)
            return
        waited = self._waited(at, timer_at)
        current = self._due.get(sid)
        if current is None or waited < current:
            self._set(sid, waited)
            current = waited
        if self._held_late(current, at):
            self._backstop.add(sid, at, earlier_only=True)

    def replace(self, sid: int, at: int | None, timer_at: int | None = None) -> None:
        """After its check: due next at ``at`` (the wall clock: a record's
        deadline) or ``timer_at`` (the timer clock: a silence, a pace),
        whichever comes first; both None: only when touched."""
        if at is None and timer_at is None:
            self.discard(sid)
            return
        waited = self._waited(at, timer_at)
        self._set(sid, waited)
        if at is not None and waited != NOW and waited - at > BACKSTOP_LAG_MS:  # _held_late
            self._backstop.add(sid, at)
        elif self._backstop:  # its earlier wall-clock entry is superseded too
            self._backstop.drop(sid)

    def discard(self, sid: int) -> None:
        self._due.pop(sid, None)
        self._backstop.drop(sid)

    def nudge(self, sid: int) -> None:
        """``touch`` from a thread that holds no control lock (the data path)."""
        self._nudged.append(sid)

    def observe(self, wall: int, timer: int) -> None:
        """The two clocks read (``pop_due`` reads them too): ``q`` moves on,
        and the due times given until the next reading are kept by it. A
        caller scheduling timer-clock due times before the first tick
        (a restart's reconcile) reads them first."""
        self._tick(wall, timer)

    def pop_due(self, now: int, limit: int | None = None,
                timer: int | None = None) -> list[int]:
        """The sessions due at ``now`` (the wall clock; ``timer``: the timer
        clock then, None: one clock, a test's: never mix the two on one
        queue), at most ``limit``, earliest first, removed (the caller
        replaces them); the rest stay due."""
        while self._nudged:
            self.touch(self._nudged.pop())
        q = self._tick(now, now if timer is None else timer)
        if not self._backstop:  # no wall-clock deadline held late: one heap
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
        wall-clock deadline passed while it lagged, due at once)."""
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
        """``q`` now (and the skews schedules use until the next reading)."""
        if self._clock is None:
            self._clock = _QueueClock(wall, timer)
        q = self._clock.read(wall, timer)
        self._skew, self._timer_skew = q - wall, q - timer
        return q

    def _waited(self, at: int | None, timer_at: int | None) -> int:
        """The due time on ``q``: the earlier of a wall-clock due time's
        wait and a timer-clock one's. A timer-clock time before any reading
        of the clocks: due at the first tick (early is a recheck, never late)."""
        if timer_at is None:
            return at if at == NOW else at + self._skew
        if self._timer_skew is None:
            return NOW
        if at is None:
            return timer_at + self._timer_skew
        if at == NOW:
            return NOW
        waited, wall_waited = timer_at + self._timer_skew, at + self._skew
        return waited if waited < wall_waited else wall_waited

    @staticmethod
    def _held_late(waited: int, at: int | None) -> bool:
        """The wall-clock deadline ``at`` waits on the wall clock too: its
        entry's time on ``q`` is more than ``BACKSTOP_LAG_MS`` past it (the
        wall clock lags: ``q`` is where the wall clock is once set right, a
        step forward taking ``q`` with it, so on ``q`` alone it could be that
        late). Not a silence's entry due on ``q`` before the deadline's."""
        return at is not None and waited != NOW and waited - at > BACKSTOP_LAG_MS

    def _set(self, sid: int, at: int) -> None:
        self._due[sid] = at
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
    """The wall-clock deadlines set while the wall clock lagged its highest
    lead (a step back) whose entries on ``q`` come too late after them, by
    their wall-clock time: due when the wall clock reaches it, too (a step
    setting it right makes them due, not their longer wait on ``q``). Empty
    while the wall clock does not lag: nothing per schedule then but a dict
    miss; while it lags, only the sessions whose next look is a record's
    deadline (an active one's is its silence, on ``q``)."""

    __slots__ = ("_at", "_heap")

    def __init__(self):
        self._heap: list[tuple[int, int]] = []  # (wall-clock ms, session id), stale ones too
        self._at: dict[int, int] = {}  # session id -> its live backstop's wall-clock ms

    def add(self, sid: int, wall_at: int, earlier_only: bool = False) -> None:
        """Its entry at ``wall_at`` (``earlier_only``: unless it has an earlier one)."""
        if earlier_only and self._at.get(sid, wall_at + 1) <= wall_at:
            return
        self._at[sid] = wall_at
        heapq.heappush(self._heap, (wall_at, sid))
        if len(self._heap) > 2 * len(self._at) + 1024:  # mostly superseded entries
            self._heap = [(t, s) for s, t in self._at.items()]
            heapq.heapify(self._heap)

    def __bool__(self) -> bool:
        return bool(self._at)

    def __len__(self) -> int:
        return len(self._at)

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
