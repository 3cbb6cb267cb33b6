"""Client counters across restarts: the replay ceiling (issue 10 item 8).

A replay window lives in memory (the userspace gate) or in a map a reboot or
a detach empties (XDP). So that a restarted gateway, or the next owner after
a crash, still refuses recorded messages, the store keeps one value per
session, the *replay ceiling* C, with this rule:

    the gateway delivers a client message (DATA, KEEPALIVE) with counter c
    only if c < C is durable in the store.

C is raised ahead in blocks, like the send counter's floor (jvpn/tunnel.py):
when c comes within a quarter block of C the data path writes C = c + block;
it waits for the store only when c >= C (once per block at most). A failed
write drops the message (fail closed) and is retried, paced: no message
calls the store within RETRY_S of a failed write, covered or not.

The writes run inline on the daemon's one UDP receive loop, so the pacing is
gateway-wide (``StoreBreaker``, one per session table, review D): after a
failed or slow write no session calls the store for a pause of max(RETRY_S,
19 times that call's duration), so a store that times out instead of
refusing (etcd partitioned: 2 s; SQLite busy: 5 s) holds the loop at most
~5% of the time whatever the number of sessions at their block's end; and
one write at a time is in flight. Covered counters pass meanwhile, uncovered
ones are dropped. The pause is capped (PAUSE_CAP_S, doubling with each
recent trip, up to the 19x rule): one slow fsync, which a local user may
cause, stalls the sessions at their block's end for seconds, not a minute
and a half (review E M2). Every call's time, slow or failed ones too, is
charged to a budget refilled at STORE_SHARE (a reserve pays one slow
call's overdraft): over any long window the loop spends at most that share
in store calls, whatever the pattern (review k16r1). After a pause, or
while the budget is spent, the sessions refused take turns, the least
recently served first, so no key holder's jumps (nor two alternating)
take every write the others need; the store waits for a waiter that is
not asking at most TURN_HOLD_S, and only to hold back those served since.

A window (re)starts at ``max(record.c2s_floor, C)``: every counter below C
counts as seen (a floor, like the window's own ``replay_top``, is one above
the highest counter seen). When nothing more can be delivered (a clean stop, a
handover: ``retire``), C is *settled* to the exact value, one above the
highest counter delivered, so a clean restart or a handover strands nobody.
After a crash C may be up to one block above what was delivered, so the
window cannot be restored exactly: the session is served again only after
its client proves the path anew (a reattach). Its element stays a
control-only standby until then, and the window starts above the counter of
the proven PATH_RESPONSE, which the client sent after the old process had
stopped delivering (docs/protocol.md).
"""

from __future__ import annotations

import heapq
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

REPLAY_BLOCK = 1 << 16  # counters per ceiling write; also the most a crash can strand
RETRY_S = 1.0  # pace of retries of a failed write (covered: ahead-write, or not)
# the most of the receive loop's time a failing or slow store may take: a
# pause of (1 - duty) / duty times the call's duration follows it (19x)
STORE_DUTY = 0.05
SLOW_S = 0.1  # a write that took longer pauses the writes too, even if it landed
# writes that land fast still cost the loop their time: at most this share of
# it over time (a budget of seconds refilled at STORE_SHARE per second, at
# most STORE_BURST_S banked). A key holder whose counters jump most of a
# block per message made every message an fsync'd write that the slow rule
# never paused (review E M1); normal traffic needs one write per ~49k
# counters (20/s at 1M packets/s: ~60 ms/s of a 3 ms fsync)
STORE_SHARE, STORE_BURST_S = 0.25, 1.0
# a slow or failed call's time is charged to the budget in full (time spent
# is time spent: a 5 s call costs 20 s of budget) but a reserve, filled by
# the budget's refill once it is full, pays what the call overdrew, so one
# slow call (a 5 s SQLite timeout, after which 1.25 s refilled during it
# and 0.5 s during the capped pause) stalls the sessions for the pause
# alone; a store slow again before the reserve refilled (review k16r1:
# every other write 5 s) waits for the budget: at most STORE_SHARE of the
# loop over time, whatever the pattern
STORE_RESERVE_S = 4.0
# the longest pause one failed or slow write causes; each further trip
# before the streak decayed doubles it, up to the 19x rule above: one slow
# write (a local user can make fsyncs slow) stalls the sessions at their
# block's end for seconds, a store that stays down, or is slow again and
# again, holds the loop ~5% of the time (review E M2). The streak forgets
# one trip per STREAK_DECAY_S without one: a write that lands fast between
# two slow ones no longer resets it (review k16r1)
PAUSE_CAP_S = 2.0
STREAK_DECAY_S = 60.0
# Turns go round: among the sessions refused a write that asked within
# TURN_HOLD_S, the one that wrote least recently (or never) writes first; a
# session that wrote more recently than some waiter waits. A key holder whose
# counters jump asks the moment the budget refills and used to take every
# write (review E M2); rotating away from only the last writer let two such
# holders alternate, and a 0.5 s hold forgot a session asking once a second
# (review k16r5). The store idles at most until the least recently served
# waiter's next ask (at most TURN_HOLD_S, for one that went quiet), and only
# for sessions that wrote more recently than it; never for one that did not.
TURN_HOLD_S = 5.0
_NEVER = float("-inf")


class StoreBreaker:
    """Every session's ceiling writes on one receive loop, gateway-wide:
    after a failed or slow write, none for a pause (``_pause``); never two
    in flight (another thread's write in progress: skip, don't wait). A
    per-session pace is not enough: each session's attempt blocks the loop
    for the store's whole timeout, and sessions take turns (review D: two
    busy sessions kept it blocked all the time in an etcd partition).
    Every call's time is charged to a budget refilled at STORE_SHARE
    (``_Budget``). Sessions refused a write queue for the next one, the
    least recently served first (``_Turns``)."""

    __slots__ = ("_budget", "_clock", "_in_flight", "_last_open", "_open_until", "_streak",
                 "_turns", "trips")

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self._clock = clock
        self._open_until = self._last_open = _NEVER
        self._in_flight = threading.Lock()
        self._budget = _Budget(clock())
        self._streak = 0  # recent trips (decays one per STREAK_DECAY_S without one)
        self._turns = _Turns()
        self.trips = 0  # failed or slow writes that paused the others

    def write(self, raise_to: Callable[[int], None], value: int,
              who: object = None) -> bool | None:
        """``raise_to(value)`` unless paused, the budget is spent, ``who``
        wrote last and another session is queued (``who``: the asking
        session, default ``raise_to``) or another write is in flight
        (None: not called, and ``who`` queues for a turn); else whether it
        landed."""
        who = raise_to if who is None else who
        now = self._clock()
        if (now < self._open_until or not self._budget.left(now)
                or not self._turns.mine(who, now)
                or not self._in_flight.acquire(blocking=False)):
            self._turns.wait(who, now)
            return None
        try:
            self._turns.served(who, now)
            return self._call(raise_to, value)
        finally:
            self._in_flight.release()

    def forget(self, who: object) -> None:
        """``who`` asks no more (its session ended): its place goes."""
        self._turns.forget(who)

    def _call(self, raise_to: Callable[[int], None], value: int) -> bool:
        started = self._clock()
        try:
            raise_to(value)
        except Exception:  # noqa: BLE001 - any failure means "not durable"
            self._tripped(self._clock() - started)
            return False
        took = self._clock() - started
        if took > SLOW_S:
            self._tripped(took)
        else:
            self._budget.spend(self._clock(), took, tripped=False)
        return True

    def _tripped(self, took: float) -> None:
        self._budget.spend(self._clock(), took, tripped=True)
        self._pause(took)

    def _pause(self, took: float) -> None:
        """max(RETRY_S, 19 x took) (a ~5% duty), capped at PAUSE_CAP_S,
        doubled for each recent trip (a store that stays down or is slow
        again and again soon gets the whole 19x)."""
        now = self._clock()
        self.trips += 1
        quiet = max(0.0, now - self._last_open)  # open time since the last pause
        forgotten = quiet / STREAK_DECAY_S  # inf before the first trip
        self._streak = (0 if forgotten >= self._streak else self._streak - int(forgotten)) + 1
        cap = PAUSE_CAP_S * 2 ** min(self._streak - 1, 32)
        pause = max(RETRY_S, min(cap, took * (1 - STORE_DUTY) / STORE_DUTY))
        self._open_until = self._last_open = now + pause


class _Budget:
    """The loop's time for store calls: refilled at STORE_SHARE per second,
    at most STORE_BURST_S banked; the overflow fills a reserve (at most
    STORE_RESERVE_S) that only pays what a slow or failed call overdrew.
    Every call is charged in full, so over any long window the calls take
    at most STORE_SHARE of it plus the two banks (review k16r1: a debt
    capped at 0.5 s let a store slow every other write hold the loop 72%
    of the time)."""

    __slots__ = ("_level", "_refilled", "_reserve")

    def __init__(self, now: float):
        self._level, self._reserve, self._refilled = STORE_BURST_S, STORE_RESERVE_S, now

    def left(self, now: float) -> bool:
        self._refill(now)
        return self._level > 0

    def spend(self, now: float, took: float, tripped: bool) -> None:
        self._refill(now)  # what the call's own time refilled
        self._level -= took
        if tripped and self._level < 0:  # paid from the reserve, as far as it goes
            paid = min(self._reserve, -self._level)
            self._reserve -= paid
            self._level += paid

    def _refill(self, now: float) -> None:
        self._level += max(0.0, now - self._refilled) * STORE_SHARE
        self._refilled = now
        if self._level > STORE_BURST_S:
            extra, self._level = self._level - STORE_BURST_S, STORE_BURST_S
            self._reserve = min(STORE_RESERVE_S, self._reserve + extra)


class _Turns:
    """Sessions refused a write (``_asked``: by their last refused ask,
    oldest first) and when sessions last wrote (``_wrote``, oldest first):
    a session may write unless a waiter wrote less recently than it (never,
    or more than TURN_HOLD_S ago, counts as least recent). Waiters that did
    not ask for TURN_HOLD_S, and writes older than that, are forgotten;
    ended sessions by ``forget``. ``_order`` keeps the waiters by their last
    write (a heap; stale entries are skipped, and compacted): each check is
    O(log n). At most one live entry per session in each."""

    __slots__ = ("_asked", "_ever", "_lock", "_order", "_seq", "_wrote")

    def __init__(self):
        self._lock = threading.Lock()
        # who -> (last refused ask, its entry's seq in _order)
        self._asked: OrderedDict[object, tuple[float, int]] = OrderedDict()
        self._wrote: OrderedDict[object, float] = OrderedDict()  # who -> last write
        self._order: list[tuple[float, int, object]] = []  # (wrote, seq, who) of waiters
        self._seq = 0  # the entry's identity, and the heap's tie-break
        # who wrote at least once (until forgotten): with writes more than
        # TURN_HOLD_S apart (a slow store) every write has lapsed, and a tie
        # with the first waiter must not go to whoever asks first (review k16r6)
        self._ever: set[object] = set()

    def mine(self, who: object, now: float) -> bool:
        with self._lock:
            self._lapse(now)
            first = self._least_recent()
            if first is None or first[2] is who:
                return True
            theirs, mine = _recent(first[0], now), _recent(self._last_write(who), now)
            if theirs == mine and who in self._ever:
                return False  # a tie: the first waiter's turn, not a writer's again
            return theirs >= mine

    def wait(self, who: object, now: float) -> None:
        with self._lock:
            entry = self._asked.pop(who, None)
            if entry is None:  # joins the round with the write it had then
                self._seq += 1
                heapq.heappush(self._order, (self._last_write(who), self._seq, who))
                entry = (now, self._seq)
            self._asked[who] = (now, entry[1])  # to the end: oldest ask first

    def served(self, who: object, now: float) -> None:
        with self._lock:
            self._asked.pop(who, None)
            self._wrote.pop(who, None)
            self._wrote[who] = now  # to the end: oldest write first
            self._ever.add(who)

    def forget(self, who: object) -> None:
        with self._lock:
            self._asked.pop(who, None)
            self._wrote.pop(who, None)
            self._ever.discard(who)

    def _last_write(self, who: object) -> float:
        return self._wrote.get(who, _NEVER)

    def _lapse(self, now: float) -> None:
        """O(1) amortized: each quiet waiter and old write is dropped once."""
        while self._asked:
            first, (asked, _seq) = next(iter(self._asked.items()))
            if now - asked <= TURN_HOLD_S:
                break
            del self._asked[first]
        while self._wrote:
            first, wrote = next(iter(self._wrote.items()))
            if now - wrote <= TURN_HOLD_S:
                break
            del self._wrote[first]

    def _least_recent(self) -> tuple[float, int, object] | None:
        """The waiter that wrote least recently (the heap's valid top)."""
        order = self._order
        if len(order) > 2 * len(self._asked) + 16:  # compact: stale entries at most half
            order[:] = [e for e in order if self._valid(e)]
            heapq.heapify(order)
        while order and not self._valid(order[0]):
            heapq.heappop(order)
        return order[0] if order else None

    def _valid(self, entry: tuple[float, int, object]) -> bool:
        """The waiter's current entry (a waiter served, or lapsed, and back
        has a newer one)."""
        _wrote, seq, who = entry
        asked = self._asked.get(who)
        return asked is not None and asked[1] == seq


def _recent(wrote: float, now: float) -> float:
    """A write older than TURN_HOLD_S counts as none (as ``_lapse`` forgets it)."""
    return _NEVER if now - wrote > TURN_HOLD_S else wrote


class ReplayCeiling:
    """One session's client-counter ceiling on this gateway. ``admit`` runs
    on the receive thread, ``retire``/``resume`` under the control lock.
    ``breaker``: the gateway's, shared by every session (default: one of
    its own on ``clock``)."""

    __slots__ = ("_block", "_breaker", "_durable", "_lock", "_raise", "_retired",
                 "failures", "floor")

    def __init__(self, floor: int, durable: int, raise_to: Callable[[int], None],
                 block: int = REPLAY_BLOCK, clock: Callable[[], float] = time.monotonic,
                 breaker: StoreBreaker | None = None):
        self.floor = floor  # above every counter delivered (or seen before us)
        self._durable = durable  # counters below it may be delivered
        self._raise, self._block = raise_to, block
        self._breaker = breaker if breaker is not None else StoreBreaker(clock)
        self._retired = False
        self._lock = threading.Lock()
        self.failures = 0  # failed ceiling writes

    def admit(self, counter: int) -> bool:
        """May an authenticated message with this counter be delivered?"""
        with self._lock:
            if self._retired:
                return False
            if counter >= self._durable - self._block // 4 and not self._cover(counter):
                return False
            self.floor = max(self.floor, counter + 1)
            return True

    def _cover(self, counter: int) -> bool:
        # paced gateway-wide, covered or not: the store is called on the
        # receive thread, and a client whose counter jumped past the block
        # (a reattach retry's skip) made every message call it while it
        # failed, stalling every session (review r14b C); sessions taking
        # turns did the same (review D). Uncovered ones are dropped while
        # paused (fail closed).
        landed = self._breaker.write(self._raise, counter + self._block, self)
        if not landed:
            self.failures += landed is False
            return counter < self._durable
        self._durable = max(self._durable, counter + self._block)
        return True

    def retire(self) -> int:
        """Nothing is delivered after this returns (no write in flight).
        Returns the exact ceiling: one above every counter delivered."""
        with self._lock:
            self._retired = True
            self._breaker.forget(self)  # asks no more (until resumed)
            self._durable = min(self._durable, self.floor)  # what a settle may write
            return self.floor

    def proven(self, floor: int) -> None:
        """A path response proven after every previous holder of the session
        stopped delivering bounds what they delivered (docs/protocol.md):
        the window may start there instead of at a ceiling that was not
        exact."""
        with self._lock:
            self.floor = floor

    def resume(self) -> None:
        with self._lock:
            self._retired = False


def start_floor(c2s_floor: int, ceiling: int) -> int:
    """Where a window starts: above a previous owner's floor and above every
    counter that may have been delivered (each one < ``ceiling``)."""
    return max(c2s_floor, ceiling, 0)
