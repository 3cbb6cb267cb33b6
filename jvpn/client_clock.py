"""The client's clocks (review R3 #3). Every client timer (keepalives,
missing replies, reattach retries, OrphanTimeout) runs on CLOCK_BOOTTIME:
monotonic, so an NTP step or an operator setting the wall clock back can
neither stall the keepalives nor end a healthy idle session; and, unlike
CLOCK_MONOTONIC, it keeps counting while the host is suspended, so after a
resume the timers are overdue at once (a keepalive and, the replies being
missing, a reattach go out immediately) while the orphan watch sees the gap
as a pause and waits afresh (jvpn/client_orphan.py). The wall clock is used
only where the gateway compares a time with its own: the REATTACH_REQ's
timestamp and the handshake's (``stamps_ns``: the gateway refuses one more
than HANDSHAKE_AHEAD_MAX_MS ahead of its clock)."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable

_BOOTTIME = getattr(time, "CLOCK_BOOTTIME", None)  # Linux; elsewhere the monotonic clock


def timer_ms() -> int:
    """Milliseconds for the client's timers: never set back, counts suspend."""
    if _BOOTTIME is None:
        return time.monotonic_ns() // 1_000_000
    return time.clock_gettime_ns(_BOOTTIME) // 1_000_000


def wall_ms() -> int:
    """Milliseconds since the epoch, for what the gateway compares with its clock."""
    return time.time_ns() // 1_000_000


_WITHIN_MS = itertools.count(1)


def stamps_ns(wall: Callable[[], int]) -> Callable[[], int]:
    """The handshake's timestamps by the client's wall clock ``wall`` (ms):
    to the nanosecond where it is the real one (``wall_ms``); else (a
    test's clock) its milliseconds and a count within them, so that two
    initiations in one of its milliseconds are not one timestamp."""
    if wall is wall_ms:
        return time.time_ns
    return lambda: wall() * 1_000_000 + next(_WITHIN_MS)
