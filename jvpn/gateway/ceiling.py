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

import threading
import time
from collections.abc import Callable

REPLAY_BLOCK = 1 << 16  # counters per ceiling write; also the most a crash can strand
RETRY_S = 1.0  # pace of retries of a failed write (covered: ahead-write, or not)
_NEVER = float("-inf")  # one object for every session's "no retry pending"


class ReplayCeiling:
    """One session's client-counter ceiling on this gateway. ``admit`` runs
    on the receive thread, ``retire``/``resume`` under the control lock."""

    __slots__ = ("_block", "_clock", "_durable", "_lock", "_raise", "_retired", "_retry_at",
                 "failures", "floor")

    def __init__(self, floor: int, durable: int, raise_to: Callable[[int], None],
                 block: int = REPLAY_BLOCK, clock: Callable[[], float] = time.monotonic):
        self.floor = floor  # above every counter delivered (or seen before us)
        self._durable = durable  # counters below it may be delivered
        self._raise, self._block, self._clock = raise_to, block, clock
        self._retry_at = _NEVER
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
        covered = counter < self._durable
        if self._clock() < self._retry_at:
            # paced, covered or not: the store is called on the receive
            # thread, and a client whose counter jumped past the block (a
            # reattach retry's skip) made every message call it while it
            # failed, stalling every session (review r14b C). Uncovered
            # ones are dropped meanwhile (fail closed).
            return covered
        try:
            self._raise(counter + self._block)
        except Exception:  # noqa: BLE001 - any failure means "not durable"
            self.failures += 1
            self._retry_at = self._clock() + RETRY_S
            return covered
        self._durable = max(self._durable, counter + self._block)
        return True

    def retire(self) -> int:
        """Nothing is delivered after this returns (no write in flight).
        Returns the exact ceiling: one above every counter delivered."""
        with self._lock:
            self._retired = True
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
