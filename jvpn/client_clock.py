"""The client's clocks (review R3 #3). Every client timer (keepalives,
missing replies, reattach retries, OrphanTimeout) runs on CLOCK_BOOTTIME:
monotonic, so an NTP step or an operator setting the wall clock back can
neither stall the keepalives nor end a healthy idle session; and, unlike
CLOCK_MONOTONIC, it keeps counting while the host is suspended, so after a
resume the timers are overdue at once (a keepalive and, the replies being
missing, a reattach go out immediately) while the orphan watch sees the gap
as a pause and waits afresh (jvpn/client_orphan.py). The wall clock is used
only where the gateway compares a time with its own: the REATTACH_REQ's
timestamp (and the handshake's, in jvpn/handshake.py)."""

from __future__ import annotations

import time

_BOOTTIME = getattr(time, "CLOCK_BOOTTIME", None)  # Linux; elsewhere the monotonic clock


def timer_ms() -> int:
    """Milliseconds for the client's timers: never set back, counts suspend."""
    if _BOOTTIME is None:
        return time.monotonic_ns() // 1_000_000
    return time.clock_gettime_ns(_BOOTTIME) // 1_000_000


def wall_ms() -> int:
    """Milliseconds since the epoch, for what the gateway compares with its clock."""
    return time.time_ns() // 1_000_000
