"""Exponential back-off with jitter for the client's retries (handshake
attempts, unanswered reattach requests). A constant interval forever is what
issue 12 found: a client whose gateway forgot it sent a request every 0.4 s
until killed. Doubling with a cap bounds the load a forgotten client puts on
a gateway; jitter keeps clients that lost their path at the same moment (a
gateway restart, a cell handover) from retrying in lockstep.

Jitter is "equal jitter" (half the step fixed, half random): the first retry
never comes later than ``base_ms`` (a lost packet is resent as soon as
before), and never earlier than half of it. ``rand`` is injected: tests
give a fixed sequence."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Backoff:
    base_ms: int
    cap_ms: int
    rand: Callable[[], float] = field(default=random.random, compare=False)

    def __post_init__(self) -> None:
        if not 0 < self.base_ms <= self.cap_ms:
            raise ValueError(f"back-off needs 0 < base ({self.base_ms}) <= cap ({self.cap_ms})")

    def step_ms(self, attempt: int) -> int:
        """The un-jittered step before retry ``attempt`` (0: the first retry)."""
        return min(self.cap_ms, self.base_ms << min(attempt, 30))

    def delay_ms(self, attempt: int) -> int:
        """How long to wait before retry ``attempt``: in [step/2, step]."""
        step = self.step_ms(attempt)
        half = step // 2
        return half + int((step - half) * min(max(self.rand(), 0.0), 1.0))
