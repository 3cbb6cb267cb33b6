"""The daemon's threads, supervised."""

from __future__ import annotations

import threading
from collections.abc import Callable

INCIDENT_INTERVAL_MS = 10_000


class Supervisor:
    def __init__(self, stop: threading.Event):
        self.stop = stop
        self._threads: dict[str, threading.Thread] = {}

    def start(self, name: str, target: Callable[[], None]) -> None:
        t = threading.Thread(target=target, name=f"jvpn-{name}", daemon=True)
        t.start()
        self._threads[name] = t

    def dead(self) -> list[str]:
        return [n for n, t in self._threads.items() if not t.is_alive()]

    def join(self, timeout_s: float) -> None:
        for t in self._threads.values():
            t.join(timeout=timeout_s)
