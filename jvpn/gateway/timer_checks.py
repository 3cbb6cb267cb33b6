"""The gateway's timers, session by session (a mixin of
jvpn/gateway/daemon.py's Gateway; its tick calls ``run_due_timers``, which
takes the control lock a batch at a time). Issue 15: the tick looks only
at the sessions whose timers may be due (the session table's ``timers``,
jvpn/gateway/timer_queue.py); each
one looked at is scheduled again at the earliest time any of its timers
can fire, from what it then holds:

  jvpn/gateway/timers.py      lifetime, transportless TTL, silence, windows
  jvpn/gateway/key_timers.py  key expiry (time and messages), the overlap's
                              end, a retried write, the idle AEAD drop
  jvpn/gateway/key_nudge.py   the DEGRADED session's rekey nudges

Each is a lower bound (``last_rx_ms`` moves without the lock, and only
forward; it is on the timer clock: ``Live.heard_ms``): a session looked
at early is rescheduled, never late. Each says which clock its times are
on (review k21r3 F2): the records' deadlines on the wall clock, silences
and paces on the timer clock; the queue waits for both on the timer clock
and holds only the wall clock's on its backstop (timer_queue.py).
Anything that changes a session under the lock (the table's writes)
touches it, and a reload's new policy touches them all (once).

A mass of timers due at once (many clients silent together: issue 15,
"Silent clients make a storm") runs a batch at a time: the batch's
transitions are one store transaction (the session table's
``transition_batch``, jvpn/gateway/timer_writes.py), and the control lock
is released between batches, so that the operator socket, a control
message (a reattach of one of those sessions) and a stop are served
during the storm; a tick stops after its time slice and the rest stay due
for the next. A tick's batches pop what was due at the tick's start, each
session at most once (review k16r2 #1: a failed write is retried next tick,
not every batch); one session's error is its own (review k16r2 #2); key
expiry is a batch transition (review k16r2 #3)."""

from __future__ import annotations

import functools
import time

from jvpn.gateway import key_timers
from jvpn.gateway.table import Live
from jvpn.gateway.timer_writes import Due
from jvpn.gateway.timers import due_at, due_timer
from jvpn.policy import Policy
from jvpn.session import State
from jvpn.store.group_commit import GROUP_MAX

TIMER_BATCH = GROUP_MAX  # sessions looked at (and transitions committed) per lock hold
TIMER_SLICE_S = 0.5  # a tick's batches at most this long: the rest wait for the next tick
TIMER_YIELD_S = 0.001  # between batches: the lock is not fair, its waiters need the gap


class _Tick:
    """One tick's time (its batches pop what was due then) and the sessions
    its batches looked at."""

    def __init__(self, now: int, timer: int):
        self.now, self.timer, self.seen = now, timer, set()

    def first_time(self, sids: list[int], timers) -> list[int]:
        """Those not looked at yet this tick; the others wait for the next."""
        again = [sid for sid in sids if sid in self.seen]
        for sid in again:
            timers.schedule(sid, None, self.timer + 1)
        fresh = [sid for sid in sids if sid not in self.seen]
        self.seen.update(fresh)
        return fresh


class TimerChecks:
    def run_due_timers(self) -> None:
        """The due sessions' timers, a batch per hold of the control lock,
        until none is due, the gateway stops or the tick's slice is spent."""
        deadline = time.monotonic() + TIMER_SLICE_S
        tick = _Tick(self.clock_ms(), self.table.timer_ms())
        while True:
            with self.control:
                full = self._contained_batch(tick)
            if not full or self._stop.is_set() or time.monotonic() >= deadline:
                return
            self._stop.wait(TIMER_YIELD_S)

    def _contained_batch(self, tick: _Tick) -> bool:
        """One batch (lock held); True if it was full (more may be due)."""
        try:
            return self._timer_batch(tick)
        except Exception as e:  # noqa: BLE001 - contained and reported, as each step
            self.incidents.report("timer", e)
            return False

    def _timer_batch(self, tick: _Tick) -> bool:
        """The sessions due at the tick's time (review k16r2 #1: not the
        clock's now, which moves during the tick: a session whose write
        failed is due again at now + 1, after the tick's time), each at
        most once per tick (one touched again between batches waits for
        the next tick)."""
        sids = self.table.timers.pop_due(tick.now, limit=TIMER_BATCH, timer=tick.timer)
        batch = [live for live in map(self.table.get, tick.first_time(sids, self.table.timers))
                 if live is not None]
        try:
            ended = [(live.record.session_id, live.record.version) for live in batch
                     if live.confirmed and live.record.state is State.TERMINATED]
            if ended:  # ended by a step outside the timers: forgotten here, in one write
                self._contained(self.table.forget_batch, ended,
                                functools.partial(self.incidents.report, "timer"))
            due = [d for d in map(self._contained_due, batch) if d is not None]
            self._contained(self._transitions, due)
            expiries = {d.live.record.session_id: d for d in due if d.key_expiry is not None}
            for d in expiries.values():  # fail closed where it was not written
                self._contained(key_timers.settle, self.table, d.live, d.key_expiry)
            for live in batch:  # each session's, whatever the others' did (review k16r2 #2)
                if live.record.session_id not in expiries:
                    self._contained(self._after_transition, live)
        finally:
            for live in batch:
                self._reschedule(live, tick)
        return len(sids) == TIMER_BATCH

    def _contained(self, step, *args):
        try:
            return step(*args)
        except Exception as e:  # noqa: BLE001 - one session's step ends no other's
            self.incidents.report("timer", e)
            return None

    def _contained_due(self, live: Live) -> Due | None:
        return self._contained(self._due, live)

    def _transitions(self, due: list[Due]) -> None:
        """The batch's transitions in one store transaction; a store that
        did not take it is reported once (not per session), and each of its
        sessions is looked at again next tick (its record unchanged: due)."""
        report = functools.partial(self.incidents.report, "timer")
        failed = self.table.transition_batch(due, report) if due else None
        if failed is not None:
            self.incidents.report("timer", failed)

    def _reschedule(self, live: Live, tick: _Tick) -> None:
        """The session's next due time from what it holds now (every tick
        again while its step fails: as before), never within this tick."""
        sid = live.record.session_id
        if self.table.get(sid) is live:
            at, timer_at = self._next_due(live) or (None, None)
            self.table.timers.replace(sid, None if at is None else max(at, tick.now + 1),
                                      None if timer_at is None else max(timer_at, tick.timer + 1))

    def _next_due(self, live: Live) -> tuple[int | None, int | None] | None:
        """The earliest time any of the session's timers can fire, as (wall
        clock: the records' deadlines, timer clock: silences and paces;
        review k21r3 F2): lower bounds (early is a recheck, never late);
        None: not until it changes."""
        if not live.confirmed:
            return None  # the control path's (expire_unconfirmed); confirm touches it
        now, timer_now, p = self.clock_ms(), self.table.timer_ms(), self.policy
        if live.record.state is State.TERMINATED:
            return None, timer_now + 1
        at, timer_at = due_at(live.record, live.last_rx_ms, p)  # ``at``: never None
        others = [key_timers.due_at(live, now, timer_now, p)]
        if live.record.state is State.DEGRADED:  # the two others' only state (None otherwise)
            others += [key_timers.stranded_at(live, now, timer_now, p),
                       self.rekey_nudge.due_at(live, now, timer_now, p)]
        for wall, timer in filter(None, others):
            if wall is not None and wall < at:
                at = wall
            if timer is not None and (timer_at is None or timer < timer_at):
                timer_at = timer
        return max(at, now + 1), None if timer_at is None else max(timer_at, timer_now + 1)

    @property
    def policy(self) -> Policy:
        return self._policy

    @policy.setter
    def policy(self, policy: Policy) -> None:
        """A reload's policy changes every deadline: each session is looked
        at again next tick (once per reload, not per tick)."""
        self._policy = policy
        table = getattr(self, "table", None)
        if table is not None:
            for sid in table.sessions:
                table.timers.touch(sid)

    def _due(self, live: Live) -> Due | None:
        """The session's due transition, if any."""
        if not live.confirmed:
            return None  # a handshake's session: confirmed or expired by the control path
        if self.table.get(live.record.session_id) is not live:
            return None  # forgotten by this batch (ended outside the timers)
        now, p = self.clock_ms(), self.policy
        keys = key_timers.expiry(self.table, live, now, p)
        if keys is not None:  # first: the others wait a tick (review k16r2 #3)
            return Due(live, keys[0], keys[1], {}, key_expiry=live.record)
        heard = live.heard_ms(now - self.table.timer_ms())
        stranded = key_timers.stranded(live, now, p, heard)
        if stranded is not None:  # DEGRADED, expired, binding silent (review k16r5 #1)
            return Due(live, stranded[0], stranded[1], {})
        due = due_timer(live.record, heard, now, p)
        if due is None:
            return None
        event, detail, changes = due
        return Due(live, event, detail, changes)

    def _after_transition(self, live: Live) -> None:
        """Key timers and rekey nudges, once the batch's records are written
        (a key expiry is the batch's: ``_due``)."""
        if not live.confirmed or self.table.get(live.record.session_id) is not live:
            return
        key_timers.run(self.table, live, self.clock_ms(), self.policy)
        self.rekey_nudge.tick(live, self.clock_ms(), self.policy)
