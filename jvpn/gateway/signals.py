"""The signals `gateway up` answers: SIGTERM and SIGINT stop it, SIGHUP
reloads the peers file and the policy (jvpn/gateway/reload.py) and never
kills it. A handler only sets a flag; the main thread does the work, so a
reload never runs inside a signal handler, and a signal that arrives while
the gateway is still being built is kept, not lost and not fatal."""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Callable


class Signals:
    def __init__(self):
        self.stop = threading.Event()
        self._hup = threading.Event()
        self._wake = threading.Event()

    def install(self) -> Signals:
        """First thing `gateway up` does: from here on SIGHUP cannot kill us."""
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self.request_stop())
        signal.signal(signal.SIGHUP, lambda *_: self.request_reload())
        return self

    def request_stop(self) -> None:
        self.stop.set()
        self._wake.set()

    def request_reload(self) -> None:
        self._hup.set()
        self._wake.set()

    def run(self, reload: Callable[[], None],
            on_error: Callable[[str], None] | None = None) -> None:
        """Until a stop is asked: each SIGHUP (several at once: one) reloads.
        A reload that raises is one line (``on_error``, else stderr), never
        the end of the daemon: this is `gateway up`'s main thread."""
        while True:
            self._wake.wait()
            self._wake.clear()
            if self.stop.is_set():
                return
            if self._hup.is_set():
                self._hup.clear()
                try:
                    reload()
                except Exception as e:  # noqa: BLE001 - see above
                    (on_error or _stderr)(f"jvpn gateway: reload failed: "
                                          f"{type(e).__name__}: {' '.join(str(e).split())}")


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)
