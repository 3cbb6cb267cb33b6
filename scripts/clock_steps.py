"""The gateway's timers through a wall-clock fault, over N idle ATTACHED
sessions (review k20r5 F2; jvpn/gateway/timer_queue.py).

Not a test: a measurement for docs/benchmarks.md. A gateway with its wall
clock and its timer clock apart (the tests' injected clocks, no sockets),
N sessions installed as a restart's reconcile does, each looked at once;
then 10 ticks of one of:

  step   the wall clock stepped forward 60 s (an NTP step, ``date -s``, a
         VM resumed), then both clocks 100 ms a tick: 1 s in all, less than
         the heartbeat's 2 s, so no session is due for anything
  swing  the wall clock 1.5 s forward, then back, each tick, the timer
         clock 100 ms a tick: no deadline is passed

It prints the sessions looked at (``due_timer`` calls), the transitions
decided (none is right) and the ticks' CPU time. The records are not in
the store, so a decided transition's write fails and is retried: the
decisions are the figure, not the states. ``--root``: another checkout
(main) to measure side by side, run with this venv.

    nice -n 15 .venv/bin/python scripts/clock_steps.py step --sessions 20000
    nice -n 15 .venv/bin/python scripts/clock_steps.py step --sessions 20000 --root /path/to/main
"""

from __future__ import annotations

import argparse
import collections
import sys
import tempfile
import time
from pathlib import Path


def _use(root: str | None) -> Path:
    """The checkout whose jvpn is measured (the editable install's finder
    would take this one's otherwise)."""
    if root is None:
        return Path(__file__).resolve().parents[1]
    sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in repr(f).lower()
                        and "editable" not in type(f).__module__.lower()]
    sys.path.insert(0, root)
    return Path(root)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=("step", "swing"))
    ap.add_argument("--sessions", type=int, default=20_000)
    ap.add_argument("--root")
    args = ap.parse_args()
    root = _use(args.root)
    sys.path.insert(0, str(root / "tests"))
    import jvpn  # noqa: PLC0415
    from jvpn.bench.session_memory import NOW_MS, install  # noqa: PLC0415
    from jvpn.gate.userspace import UserspaceGate  # noqa: PLC0415
    from jvpn.gateway import timer_checks  # noqa: PLC0415
    from kits.daemon_kit import Clock, make_gateway  # noqa: PLC0415

    assert Path(jvpn.__file__).is_relative_to(root), jvpn.__file__

    class RoomyGate(UserspaceGate):
        def put(self, *_a, **_k) -> None:  # no elements: more than the model's 64k slots
            pass

    clock, timer = Clock(NOW_MS), Clock(10_000_000)
    gw = make_gateway(Path(tempfile.mkdtemp()), clock=clock, timer_ms=timer, gate=RoomyGate())
    install(gw.table, args.sessions)
    gw.entitled = lambda live: True
    seen: collections.Counter = collections.Counter()
    real = timer_checks.due_timer

    def counted(*a):
        due = real(*a)
        seen.update(["looked at"] + ([due[0].name] if due else []))
        return due
    timer_checks.due_timer = counted
    while seen["looked at"] < args.sessions:  # the first look at each
        gw.tick()
    seen.clear()
    t0 = time.process_time()
    if args.mode == "step":
        clock.ms += 60_000
        for _ in range(10):
            timer.ms += 100
            gw.tick()
            clock.ms += 100
    else:
        for i in range(10):
            clock.ms += 1_500 if i % 2 == 0 else -1_500
            timer.ms += 100
            gw.tick()
    cpu = time.process_time() - t0
    print(f"{args.mode} sessions={args.sessions} {dict(seen)} cpu_10_ticks={cpu:.2f}s")


if __name__ == "__main__":
    main()
