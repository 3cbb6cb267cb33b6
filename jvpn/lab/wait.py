"""The one way labs, tests and benchmarks wait: poll a condition until it
holds, fail with what was awaited (and the logs), early when the process
that should make it true has exited."""

from __future__ import annotations

import time
from collections.abc import Callable


class WaitTimeout(AssertionError):
    """What was awaited did not happen (an AssertionError: a test failure, not an error)."""


def wait_until(cond: Callable[[], object], what: str, timeout: float = 30.0, *,
               proc=None, logs: Callable[[], str] = lambda: "", interval: float = 0.05,
               clock: Callable[[], float] = time.monotonic,
               sleep: Callable[[float], None] = time.sleep) -> float:
    """Poll ``cond`` every ``interval`` s until it is true and return the
    seconds that took; raise :class:`WaitTimeout` after ``timeout`` s, or as
    soon as ``proc`` (a Popen) has exited, with ``logs()`` in the message."""
    start = clock()
    while True:
        if cond():
            return clock() - start
        if proc is not None and proc.poll() is not None:
            raise WaitTimeout(f"{what}: process exited\n{logs()}")
        if clock() - start >= timeout:
            raise WaitTimeout(f"timed out waiting for {what}\n{logs()}")
        sleep(interval)
