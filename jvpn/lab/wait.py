"""Waiting in labs, tests and benchmarks: poll a condition until it holds."""

from __future__ import annotations

import time


def wait_until(cond, what: str, proc=None, timeout: float = 30, logs=lambda: "") -> None:
    """Poll ``cond`` until true; fail early if ``proc`` exited, with the logs."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"{what}: process exited\n{logs()}")
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}\n{logs()}")


