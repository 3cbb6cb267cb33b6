"""A value built at most once per ``max_age_s`` and shared by every reader
in that time: the metrics endpoint's snapshot (jvpn/gateway/metrics.py).

Anyone on the host can scrape, and a build reads the session table: without
this, each scrape (and each of several at once) would take the control lock
and walk every session. Readers that arrive during a build wait for it and
share its result rather than start their own, so the work (and the control
lock's hold) per ``max_age_s`` does not grow with the number of scrapers.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class Shared(Generic[T]):
    def __init__(self, build: Callable[[], T], max_age_s: float,
                 clock: Callable[[], float] = time.monotonic):
        self._build, self.max_age_s, self._clock = build, max_age_s, clock
        self._lock = threading.Lock()  # one build at a time; the others wait and share it
        self._value: T | None = None
        self._built_at: float | None = None

    def get(self) -> T:
        with self._lock:
            now = self._clock()
            if self._built_at is None or not 0 <= now - self._built_at < self.max_age_s:
                # a failed build keeps nothing: the next reader tries again
                self._value, self._built_at = self._build(), now
            return self._value
