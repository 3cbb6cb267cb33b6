"""What a service manager (or logrotate) asks of a running daemon by
signal, beyond stop and reload: SIGUSR1 = reopen the events file.

The handler only starts a thread: reopening takes the event log's lock,
which the interrupted main thread may hold (a signal lands between any two
bytecodes), so doing it inside the handler could deadlock."""

from __future__ import annotations

import logging
import signal
import sys
import threading

log = logging.getLogger(__name__)

REOPEN_SIGNAL = signal.SIGUSR1
# How long a thread may hold the GIL while another waits (CPython's default
# is 5 ms). Our daemons' packet threads wait on sockets; a thread busy with
# CPU work (a handshake's crypto, a discovery, a page of `sessions`) kept a
# packet that had arrived waiting up to 5 ms per hand-over: a reattach's
# round trips paid it each time (docs/benchmarks.md "bench reattach: where
# the milliseconds went"). Shorter turns cost a little throughput of the
# busy thread, which nothing here is bound by.
PACKET_THREAD_TURN_S = 0.0005


def prompt_packet_threads(turn_s: float = PACKET_THREAD_TURN_S) -> None:
    """First thing `gateway up` / `client up` do: short GIL turns."""
    sys.setswitchinterval(turn_s)


def defer_reopen(signum: int = REOPEN_SIGNAL) -> threading.Event:
    """First thing `gateway up` / `client up` do: until reopen_on_signal
    takes over, ``signum`` is only remembered in the returned event. Its
    default action is to end the process, and a start may wait long (an
    etcd store, a DNS answer) while logrotate sends it."""
    asked = threading.Event()
    signal.signal(signum, lambda *_: asked.set())
    return asked


def reopen_on_signal(*event_logs, signum: int = REOPEN_SIGNAL,
                     asked: threading.Event | None = None) -> None:
    """On ``signum``, each of ``event_logs`` (jvpn.events.EventLog) closes
    its file and opens its path again. ``asked`` (defer_reopen's event): a
    signal that came during the start reopens once now, as the file may
    have been opened before logrotate moved it."""

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
    if asked is not None and asked.is_set():
        handle(signum, None)
