"""The timer queue under a wall clock stepped back an hour for half of each
period and set right (an NTP spoofer), over active sessions: each looked
at every heartbeat window (its due time: its last receive + 2 s + 1, each
its own phase). Total pops and the peak per tick over 60 s of 100 ms ticks
(review k21r3, docs/benchmarks.md), the most sessions held on the wall
clock too (the backstop) and the queue's CPU time. A queue
that takes a due time on each clock (review k21r3 F2: ``replace(sid, at,
timer_at)``) gets the silence on the timer clock and the session's
lifetime (8 h on) on the wall clock; an older one the silence on the wall
clock's reckoning, as its callers gave it.

    python scripts/clock_oscillation.py ROOT   (ROOT: a checkout's top)"""

from __future__ import annotations

import importlib
import inspect
import random
import sys
import time

HOUR, TICK, SESSIONS, TICKS, HEARTBEAT = 3_600_000, 100, 20_000, 600, 2_000


def run(timer_queue, period_ticks: int) -> tuple[int, int, int]:
    rng = random.Random(1)
    q, wall0 = timer_queue.TimerQueue(), 10 * HOUR
    two_clocks = "timer_at" in inspect.signature(q.replace).parameters
    lifetime = wall0 + 8 * HOUR
    held = getattr(q, "held_on_the_wall_clock", None) or (lambda: len(q._backstop._at))  # older

    def reschedule(sid: int, wall: int, timer: int, silent_until: int) -> None:
        if two_clocks:  # the silence on the timer clock, the record's deadline on the wall's
            q.replace(sid, lifetime, timer_at=silent_until)
        else:  # the silence on the wall clock's reckoning, as main's callers gave it
            q.replace(sid, wall + silent_until - timer)

    q.pop_due(wall0, timer=0)
    phase = [rng.randrange(0, HEARTBEAT) for _ in range(SESSIONS)]
    for sid in range(SESSIONS):
        reschedule(sid, wall0, 0, 1 + phase[sid])
    pops = peak = most_held = 0
    for i in range(1, TICKS + 1):
        timer = i * TICK
        back = period_ticks and (i // (period_ticks // 2)) % 2 == 1
        wall = wall0 + timer - (HOUR if back else 0)
        got = q.pop_due(wall, timer=timer)
        pops, peak = pops + len(got), max(peak, len(got))
        for sid in got:  # its last receive: its phase in the heartbeat window
            last_rx = timer - (timer - phase[sid]) % HEARTBEAT
            reschedule(sid, wall, timer, last_rx + HEARTBEAT + 1)
        most_held = max(most_held, held())
    return pops, peak, most_held


def main() -> None:
    sys.path.insert(0, sys.argv[1])
    timer_queue = importlib.import_module("jvpn.gateway.timer_queue")
    print(timer_queue.__file__)  # the checkout measured
    for period in (0, 40, 10, 2):
        t0 = time.process_time()
        pops, peak, held = run(timer_queue, period)
        cpu = time.process_time() - t0
        print(f"period {period * TICK} ms: pops {pops}, peak per tick {peak}, "
              f"held on the wall clock at most {held}, cpu {cpu:.2f} s")


if __name__ == "__main__":
    main()
