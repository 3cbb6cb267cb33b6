"""The timer queue under a wall clock stepped back an hour for half of each
period and set right (an NTP spoofer), over active sessions: each looked
at every heartbeat window (its due time: its last receive + 2 s + 1, each
its own phase). Total pops and the peak per tick over 60 s of 100 ms ticks
(review k21r3, docs/benchmarks.md).

    python scripts/clock_oscillation.py ROOT   (ROOT: a checkout's top)"""

from __future__ import annotations

import importlib
import random
import sys

HOUR, TICK, SESSIONS, TICKS, HEARTBEAT = 3_600_000, 100, 20_000, 600, 2_000


def run(timer_queue, period_ticks: int) -> tuple[int, int]:
    rng = random.Random(1)
    q, wall0 = timer_queue.TimerQueue(), 10 * HOUR
    q.pop_due(wall0, timer=0)
    phase = [rng.randrange(0, HEARTBEAT) for _ in range(SESSIONS)]
    for sid in range(SESSIONS):
        q.replace(sid, wall0 + 1 + phase[sid])
    pops = peak = 0
    for i in range(1, TICKS + 1):
        timer = i * TICK
        back = period_ticks and (i // (period_ticks // 2)) % 2 == 1
        wall = wall0 + timer - (HOUR if back else 0)
        got = q.pop_due(wall, timer=timer)
        pops, peak = pops + len(got), max(peak, len(got))
        for sid in got:  # its last receive: its phase in the heartbeat window
            last_rx = timer - (timer - phase[sid]) % HEARTBEAT
            q.replace(sid, wall + last_rx + HEARTBEAT + 1 - timer)
    return pops, peak


def main() -> None:
    sys.path.insert(0, sys.argv[1])
    timer_queue = importlib.import_module("jvpn.gateway.timer_queue")
    for period in (0, 40, 10, 2):
        pops, peak = run(timer_queue, period)
        print(f"period {period * TICK} ms: pops {pops}, peak per tick {peak}")


if __name__ == "__main__":
    main()
