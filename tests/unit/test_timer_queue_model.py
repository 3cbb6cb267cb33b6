"""Review k21r4: the timer queue's two heaps merged in ``pop_due`` (review
k21r3: a touch first, then earliest first across the queue's heap and the
wall-clock backstop, under a limit). Random schedules, touches, nudges,
replaces and discards, their due times on the wall clock, the timer clock
or both (review k21r3 F2), against a wall clock stepped back and forward
(both clocks injected, seeded): no session is popped twice in one tick, a
popped one is no longer due, every session still due comes out once both
clocks have run far enough, the superseded entries stay bounded and no
session is held on the wall clock that is not due."""

import random

import pytest

from jvpn.gateway.timer_queue import TimerQueue

SIDS = 40


def _due(r: random.Random, wall: int, timer: int, low: int = 0) -> tuple:
    """A due time on the wall clock, the timer clock or both (review k21r3
    F2: a record's deadline and a silence), ``low`` ms from now at the least."""
    at, timer_at = wall + r.randrange(low, 20_000), timer + r.randrange(low, 20_000)
    x = r.random()
    return (at, None) if x < 0.4 else (None, timer_at) if x < 0.6 else (at, timer_at)


def _churn(t: TimerQueue, r: random.Random, wall: int, timer: int, nudged: set) -> None:
    sid, op = r.randrange(SIDS), r.random()
    if op < 0.35:
        t.schedule(sid, *_due(r, wall, timer, low=-2_000))
    elif op < 0.5:
        t.touch(sid)
    elif op < 0.6:
        t.nudge(sid)  # taken in at the next tick
        nudged.add(sid)
    elif op < 0.85:
        t.replace(sid, *((None, None) if r.random() < 0.2 else _due(r, wall, timer)))
    else:
        t.discard(sid)


def _step(r: random.Random, wall: int) -> int:
    x = r.random()
    if x < 0.06:
        return wall - r.randrange(2_000, 3_600_000)  # stepped back: the backstop fills
    if x < 0.12:
        return wall + r.randrange(2_000, 3_600_000)  # set right, or ahead
    return wall


def _tick(t: TimerQueue, r: random.Random, wall: int, timer: int) -> None:
    limit = None if r.random() < 0.5 else r.randrange(1, 6)
    out = t.pop_due(wall, limit, timer)
    assert len(out) == len(set(out)), f"popped twice in one tick: {out}"
    assert limit is None or len(out) <= limit
    assert all(t.due_time(s) is None for s in out), "popped, still due"
    for s in out:
        if r.random() < 0.8:  # the caller's check: due again later
            t.replace(s, *_due(r, wall, timer))


@pytest.mark.parametrize("seed", range(60))
def test_two_heaps_lose_nothing_and_pop_nothing_twice(seed):
    r = random.Random(seed)
    t = TimerQueue()
    wall, timer, nudged = 10**9, 0, set()
    for _ in range(2_000):
        if r.random() < 0.5:
            _churn(t, r, wall, timer, nudged)
            continue
        nudged.clear()
        d = r.randrange(0, 3_000)
        timer, wall = timer + d, _step(r, wall + d)
        _tick(t, r, wall, timer)
        assert t.stale() <= 2 * len(t) + 1_024 + SIDS
        assert t.held_on_the_wall_clock() <= len(t)
    due = len(t) + sum(t.due_time(s) is None for s in nudged)
    drained = []
    for _ in range(100):  # both clocks on by ~3 h a tick: everything due comes out
        timer, wall = timer + 10_000_000, wall + 10_000_000
        drained += t.pop_due(wall, None, timer)
    assert len(t) == 0, "a session never due again"
    assert len(drained) == len(set(drained)) == due
