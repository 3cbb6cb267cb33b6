"""The daemon's threads, supervised, and the errors their loops contain.

Every loop iteration of the daemon (one datagram, one TUN packet, one timer
step, one store event) contains its own errors: nothing a peer sends, and no
failure of the store, the gate, the socket or the events file, may end a
thread. A contained error becomes a ``DaemonError`` event through
``Incidents``: at most one per kind (where, reason) per interval, with the
count, so an error storm cannot fill the disk.

A thread that still ends while the gateway runs is fatal: ``Supervisor``
reports it in one line and hands the line to the gateway's ``on_fatal`` (the
CLI stops and exits non-zero: the lease lapses, the service manager
restarts the daemon). A gateway that serves nothing but looks alive is the
worse outcome.
"""

from __future__ import annotations

import errno
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

from jvpn.codes import EventType, Reason
from jvpn.store import StoreError, Unreadable
from jvpn.tunnel import CounterUnavailable

log = logging.getLogger(__name__)

INCIDENT_INTERVAL_MS = 10_000  # at most one DaemonError per kind per interval


def one_line(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.errno is not None:
        name = errno.errorcode.get(exc.errno, str(exc.errno))
        text = f"{name}: {exc.strerror or exc}"
    else:
        text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return " ".join(text.split())[:300]


def reason_of(exc: BaseException) -> Reason:
    if isinstance(exc, Unreadable):
        return Reason.STORE_RECORD_UNREADABLE
    if isinstance(exc, StoreError):
        return Reason.STORE_UNAVAILABLE
    if isinstance(exc, CounterUnavailable):
        return Reason.COUNTER_UNAVAILABLE
    if isinstance(exc, OSError):
        return Reason.OS_ERROR
    return Reason.INTERNAL_ERROR


@dataclass
class _Tally:
    last_ms: int | None = None  # when the last event of this kind was emitted
    pending: int = 0  # occurrences since then, not yet reported
    detail: str = ""  # the latest occurrence's


class Incidents:
    """Contained errors as rate-limited ``DaemonError`` events (thread-safe).
    The first occurrence of a kind is reported at once; later ones within
    the interval are counted and reported by ``flush`` (the timer). The
    interval is measured on ``timer_ms``, the gateway's timer clock (never
    set back): a wall-clock step back held every report for its length, and
    a step forward let one out per step."""

    def __init__(self, events, timer_ms: Callable[[], int],
                 interval_ms: int = INCIDENT_INTERVAL_MS,
                 warn: Callable[[str], None] | None = None):
        self.events, self.timer_ms, self.interval_ms = events, timer_ms, interval_ms
        self.warn = warn or _stderr
        self._lock = threading.Lock()
        self._tallies: dict[tuple[str, Reason], _Tally] = {}
        self._events_failures_seen = 0
        self.total = 0  # every contained error, reported or counted

    def report(self, where: str, exc: BaseException) -> None:
        self.note(where, reason_of(exc), one_line(exc))

    def unreadable(self, key: str, detail: str) -> None:
        """A store record that does not parse (skipped by the store's read)."""
        self.note("store", Reason.STORE_RECORD_UNREADABLE, f"{key}: {detail}")

    def note(self, where: str, reason: Reason, detail: str, count: int = 1) -> None:
        now = self.timer_ms()
        with self._lock:
            self.total += count
            t = self._tallies.setdefault((where, reason), _Tally())
            t.pending, t.detail = t.pending + count, detail
            due = self._take_if_due(t, now)
        if due:
            self._emit(where, reason, due, detail)

    def flush(self) -> None:
        """Report what was counted, where the interval has passed."""
        self._events_file_failures()
        now = self.timer_ms()
        with self._lock:
            due = [(where, reason, n, t.detail) for (where, reason), t in self._tallies.items()
                   if (n := self._take_if_due(t, now))]
        for where, reason, n, detail in due:
            self._emit(where, reason, n, detail)

    def _take_if_due(self, t: _Tally, now: int) -> int:
        if not t.pending or (t.last_ms is not None and now - t.last_ms < self.interval_ms):
            return 0
        n, t.pending, t.last_ms = t.pending, 0, now
        return n

    def _events_file_failures(self) -> None:
        """Writes the events file refused (it keeps the lines and says why on
        stderr, jvpn/events.py): also in the event stream's tail and echo."""
        failures = getattr(self.events, "write_errors", 0)
        new = failures - self._events_failures_seen
        if new <= 0:
            return
        self._events_failures_seen = failures
        self.note("events", Reason.EVENTS_WRITE_FAILED,
                  f"{new} events-file writes failed (the cause is on stderr)", count=new)

    def _emit(self, where: str, reason: Reason, count: int, detail: str) -> None:
        try:
            self.events.emit(EventType.DAEMON_ERROR, reason, where=where, count=count,
                             detail=detail)
        except Exception:  # noqa: BLE001 - reporting must never be what ends a loop
            pass


class Supervisor:
    """Starts the daemon's loops as named threads; a loop that ends (returns
    or raises) while the gateway is not stopping is fatal."""

    def __init__(self, stop: threading.Event, on_death: Callable[[str, str], None]):
        self.stop, self.on_death = stop, on_death
        self._threads: dict[str, threading.Thread] = {}

    def start(self, name: str, target: Callable[[], None]) -> None:
        t = threading.Thread(target=self._run, args=(name, target), name=f"jvpn-{name}",
                             daemon=True)
        self._threads[name] = t
        t.start()

    def _run(self, name: str, target: Callable[[], None]) -> None:
        try:
            target()
            why = "it returned"
        except BaseException as e:  # noqa: BLE001 - whatever it was, the thread is gone
            why = one_line(e)
        if not self.stop.is_set():
            self.on_death(name, why)

    def alive(self) -> dict[str, bool]:
        """Every loop started, by name: running or not (`jvpn-xdp health`)."""
        return {n: t.is_alive() for n, t in self._threads.items()}

    def dead(self) -> list[str]:
        return [n for n, t in self._threads.items() if not t.is_alive()]

    def join(self, timeout_s: float) -> None:
        for t in self._threads.values():
            if t is not threading.current_thread():
                t.join(timeout=timeout_s)


def _stderr(line: str) -> None:
    log.warning("%s", line)  # the daemon's log: stderr, one line, never raising (jvpn/logs.py)
