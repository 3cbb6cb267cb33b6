"""What a service manager (or logrotate) asks of a running daemon by
signal, beyond stop and reload: SIGUSR1 = reopen the events file.

The handler only starts a thread: reopening takes the event log's lock,
which the interrupted main thread may hold (a signal lands between any two
bytecodes), so doing it inside the handler could deadlock."""

from __future__ import annotations

import logging
import signal
import threading

log = logging.getLogger(__name__)

REOPEN_SIGNAL = signal.SIGUSR1


def reopen_on_signal(*event_logs, signum: int = REOPEN_SIGNAL) -> None:
    """On ``signum``, each of ``event_logs`` (jvpn.events.EventLog) closes
    its file and opens its path again."""

    def reopen_all() -> None:
        for events in event_logs:
            try:
                events.reopen()
            except Exception as e:  # noqa: BLE001 - a reopen must never end the daemon
                log.warning("reopening the events file failed: %s", e)
        log.info("events file reopened (%s)", signal.Signals(signum).name)

    def handle(_signum, _frame) -> None:
        threading.Thread(target=reopen_all, name="jvpn-reopen", daemon=True).start()

    signal.signal(signum, handle)
