"""Lifecycle and security events: one JSON object per line.

Base fields (the preview's event format): ts_ms, event_type, session_id,
reason_code, node_id, policy_version, and transport_id / version where they
apply. The XDP program's sampled security events join the same stream
(event_type "XdpSecurityDrop"). Quiet by default: nothing per packet.

Bounded (threat 4.3, issue 10 item 4), because anyone can make the gateway
reject packets:

- Rejections of what could not be authenticated are counted, not written
  one by one (:meth:`EventLog.emit_unauthenticated`): one summary line per
  (event type, reason) per interval, with the count, the distinct sources
  and a few samples. What is authenticated or security-relevant for a known
  session still goes out one line each (:meth:`EventLog.emit`).
- The file rotates at ``max_bytes`` (rename to ``.1`` ... ``.keep``), so
  the events take at most ``max_bytes * (keep + 1)`` of disk.
- A write that fails (ENOSPC, EFBIG, EIO) never raises into the caller: the
  lines wait in memory (bounded), the write is retried later, and stderr
  says so once per interval.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from jvpn import client_clock
from jvpn.errors import JvpnError
from jvpn.files import PRIVATE_DIR_MODE, open_private

log = logging.getLogger(__name__)

DEFAULT_MAX_BYTES = 64 * 1024 * 1024
DEFAULT_KEEP = 2
DEFAULT_SUMMARY_INTERVAL_MS = 10_000
RECENT_MAX = 1_000  # the in-memory tail (tests, the demo)
PENDING_MAX = 10_000  # lines that wait for a failing disk
RETRY_MS = 1_000  # a failing disk is tried again no sooner than this
DISTINCT_SOURCES_MAX = 4_096  # distinct sources counted exactly up to this, per summary
SAMPLES = 4
DETAILS_MAX = 8  # distinct detail strings per summary; the rest count as "other"
DETAIL_LEN = 120
# One encoder for every line: json.dumps(sort_keys=True) builds a new
# JSONEncoder per call (≈ 1.5 µs of a ≈ 7 µs line, one line per handshake:
# issue 15). The same settings, so the same text; it keeps no state
# between calls (each encode makes its own), and lines are written under
# the log's lock anyway.
_encode_line = json.JSONEncoder(sort_keys=True).encode


def sid_hex(session_id: int | None) -> str | None:
    return None if session_id is None else f"{session_id:016x}"


class _Tally:
    """What one (event type, reason) saw in the current interval: memory is
    bounded whatever the packets say."""

    def __init__(self):
        self.count = 0
        self.sources: set[str] = set()
        self.capped = False
        self.samples: list[str] = []
        self.sessions: list[str] = []
        self.details: dict[str, int] = {}

    def add(self, transport, session_id: int | None, detail: str | None) -> None:
        self.count += 1
        if transport is not None:
            addr = getattr(transport, "addr", str(transport))
            if addr not in self.sources:
                if len(self.sources) < DISTINCT_SOURCES_MAX:
                    self.sources.add(addr)
                    if len(self.samples) < SAMPLES:
                        self.samples.append(str(transport))
                else:
                    self.capped = True
        sid = sid_hex(session_id)
        if sid is not None and sid not in self.sessions and len(self.sessions) < SAMPLES:
            self.sessions.append(sid)
        if detail is not None:
            detail = str(detail)[:DETAIL_LEN]
            if detail not in self.details and len(self.details) >= DETAILS_MAX:
                detail = "other"
            self.details[detail] = self.details.get(detail, 0) + 1

    def fields(self) -> dict:
        out = {"aggregated": True, "count": self.count, "distinct_sources": len(self.sources),
               "sample_sources": self.samples}
        if self.capped:
            out["distinct_sources_capped"] = True
        if self.sessions:
            out["sample_sessions"] = self.sessions
        if self.details:
            out["details"] = self.details
        return out


class RejectionCounter:
    """Unauthenticated rejections per (event type, reason) per interval."""

    def __init__(self, interval_ms: int):
        self.interval_ms = interval_ms
        self._start: float | None = None
        self._tallies: dict[tuple[str, str], _Tally] = {}

    def add(self, now: float, event_type: str, reason_code: str, transport=None,
            session_id: int | None = None, detail: str | None = None) -> None:
        if self._start is None:
            self._start = now
        self._tallies.setdefault((event_type, reason_code), _Tally()).add(
            transport, session_id, detail)

    def due(self, now: float) -> bool:
        return self._start is not None and now - self._start >= self.interval_ms

    def take(self, now: float) -> list[tuple[str, str, dict]]:
        """The summaries of the interval that ends now; a new one starts."""
        if self._start is None:
            return []
        span = now - self._start
        out = [(t, r, {**tally.fields(), "interval_ms": span})
               for (t, r), tally in self._tallies.items()]
        self._start, self._tallies = None, {}
        return out


class EventLog:
    def __init__(self, node_id: str, path: Path | None = None, *, policy_version: int = 0,
                 echo: TextIO | None = None, clock_ms: Callable[[], float] | None = None,
                 timer_ms: Callable[[], float] | None = None,
                 max_bytes: int = DEFAULT_MAX_BYTES, keep: int = DEFAULT_KEEP,
                 summary_interval_ms: int = DEFAULT_SUMMARY_INTERVAL_MS,
                 err: TextIO | None = None, pending_max: int = PENDING_MAX):
        """``max_bytes``, ``keep``, ``summary_interval_ms``: the gateway
        config's EventsMaxBytes, EventsKeep and EventsSummaryInterval.
        ``clock_ms``: the events' ``ts_ms`` (the wall clock); ``timer_ms``:
        the summaries' intervals and a failing file's retries and reports
        (the timer clock, never set back: a wall-clock step back held them
        for its length, a step forward let a summary out per step);
        ``clock_ms`` without one (a test's: both)."""
        self.node_id = node_id
        self.policy_version = policy_version
        self.path = Path(path) if path else None
        self._echo = echo
        self._clock_ms = clock_ms or (lambda: time.time_ns() // 1_000_000)
        self._timer_ms = timer_ms or clock_ms or client_clock.timer_ms
        self._lock = threading.Lock()
        self._rejections = RejectionCounter(summary_interval_ms)
        self._file = None
        if self.path:
            self._file = EventsFile(self.path, max_bytes=max_bytes, keep=keep,
                                    report_ms=summary_interval_ms, pending_max=pending_max,
                                    err=err)
        self.recent: deque[dict] = deque(maxlen=RECENT_MAX)
        self._listeners: list[Callable[[dict], None]] = []

    def add_listener(self, listener: Callable[[dict], None]) -> None:
        """``listener(event)`` sees every event as it is emitted, under the
        log's lock (so it must be quick, and never call back into the log):
        each ``emit`` line, and each ``emit_unauthenticated`` call one by one
        (with its ``event_type`` and ``reason_code``), not their summaries.
        The metrics count from here (jvpn/gateway/metrics.py). A listener
        that raises changes nothing: the event is written all the same."""
        self._listeners.append(listener)

    def _notify(self, ev: dict) -> None:
        for listener in self._listeners:
            try:
                listener(ev)
            except Exception:  # noqa: BLE001, S110 - an observer never stops the event stream
                pass

    @property
    def write_errors(self) -> int:
        return self._file.write_errors if self._file else 0

    @property
    def lines_dropped(self) -> int:
        return self._file.lines_dropped if self._file else 0

    def emit(self, event_type: str, reason_code: str, session_id: int | None = None,
             transport=None, version: int | None = None, **extra) -> dict:
        """One line now: for what is authenticated or security-relevant."""
        with self._lock:
            now, t = self._clock_ms(), self._timer_ms()
            self._flush_due(now, t)
            ev = self._write(now, t, event_type, reason_code, session_id, transport, version,
                             extra)
            self._notify(ev)
            return ev

    def emit_unauthenticated(self, event_type: str, reason_code: str, transport=None,
                             session_id: int | None = None, detail: str | None = None) -> None:
        """Count a rejection of something that could not be authenticated
        (anyone can send it, from any source): written as part of one
        summary line per (event type, reason) per interval."""
        with self._lock:
            now, t = self._clock_ms(), self._timer_ms()
            self._flush_due(now, t)
            self._rejections.add(t, event_type, reason_code, transport, session_id, detail)
            if self._listeners:
                self._notify({"ts_ms": now, "event_type": event_type, "reason_code": reason_code,
                              "session_id": sid_hex(session_id), "aggregated": False})

    def flush(self) -> None:
        """Write the summaries whose interval is over and retry lines a
        failing disk refused. The daemon's timer calls this every tick."""
        with self._lock:
            self._flush_due(self._clock_ms(), self._timer_ms())

    def reopen(self) -> None:
        """Close the events file and open its path again (SIGUSR1, a reload):
        after an outside tool (logrotate without copytruncate) renamed it,
        the next lines go to a new file at the path, not the renamed one.
        What waits for a failing disk is written first, to the old file."""
        with self._lock:
            if self._file:
                self._file.reopen(self._timer_ms())

    def close(self) -> None:
        with self._lock:
            now, t = self._clock_ms(), self._timer_ms()
            self._write_summaries(now, t)
            if self._file:
                self._file.close(t)
                self._file = None

    def _flush_due(self, now: float, t: float) -> None:
        """``now``: the wall clock (the lines' ts_ms); ``t``: the timer clock."""
        if self._rejections.due(t):
            self._write_summaries(now, t)
        if self._file:
            self._file.retry(t)

    def _write_summaries(self, now: float, t: float) -> None:
        for event_type, reason_code, fields in self._rejections.take(t):
            self._write(now, t, event_type, reason_code, None, None, None, fields)

    def _write(self, now, t, event_type, reason_code, session_id, transport, version,
               extra: dict) -> dict:
        ev = {"ts_ms": now, "event_type": event_type, "session_id": sid_hex(session_id),
              "reason_code": reason_code, "node_id": self.node_id,
              "policy_version": self.policy_version}
        if transport is not None:
            ev["transport_id"] = str(transport)
        if version is not None:
            ev["version"] = version
        ev.update({k: (v if isinstance(v, (int, float, str, bool, type(None), list, dict))
                       else str(v)) for k, v in extra.items()})
        line = _encode_line(ev) + "\n"
        if self._file:
            self._file.write(line, t)
        if self._echo:
            try:
                self._echo.write(line)
            except (OSError, ValueError):
                pass  # a closed or broken stdout must not stop the gateway
        self.recent.append(ev)
        return ev


class EventsFile:
    """The events file: append-only, 0600 from creation (jvpn.files),
    rotated at ``max_bytes`` by renaming, never raising on a write error.

    The caller serialises calls (EventLog's lock). ``now`` is in ms, on
    the timer clock (it only paces the retries and the reports)."""

    def __init__(self, path: Path, *, max_bytes: int = DEFAULT_MAX_BYTES,
                 keep: int = DEFAULT_KEEP, report_ms: int = DEFAULT_SUMMARY_INTERVAL_MS,
                 pending_max: int = PENDING_MAX, err: TextIO | None = None):
        self.path, self.max_bytes, self.keep = path, max_bytes, keep
        self._report_ms, self._err = report_ms, err
        self._pending: deque[bytes] = deque()
        self._pending_max = pending_max
        self.write_errors = self.lines_dropped = 0
        self._retry_at = self._reported_at = None
        self._last_error = ""
        self._torn = False  # a failed write may have left half a line
        # Opened here, so that a symlink or a foreign file in its place stops
        # the start with a clear message (jvpn.files), not a later write.
        self._fd: int | None = _open_events_file(path)
        self._size = os.fstat(self._fd).st_size

    def write(self, line: str, now: float) -> None:
        if len(self._pending) >= self._pending_max:
            self._pending.popleft()  # the oldest waiting line goes first
            self.lines_dropped += 1
        self._pending.append(line.encode())
        if self._retry_at is None or now >= self._retry_at:
            self._drain(now)

    def retry(self, now: float) -> None:
        if self._pending and self._retry_at is not None and now >= self._retry_at:
            self._drain(now)

    def close(self, now: float) -> None:
        if self._pending:
            self._drain(now)
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def reopen(self, now: float) -> None:
        """The path opened anew (the same checks as at start: 0600, no
        symlink, no other user's file). A refusal or failure is said on
        stderr and retried with the next line, as a failed write is."""
        self.close(now)
        try:
            self._fd = _open_events_file(self.path)
            self._size = os.fstat(self._fd).st_size
            self._torn = False  # a half line left by a failed write stays in the old file
        except (OSError, JvpnError) as e:
            self.write_errors += 1
            self._last_error = getattr(e, "strerror", None) or str(e)
            self._retry_at = now + RETRY_MS
            self._report(now)

    def _drain(self, now: float) -> None:
        try:
            while self._pending:
                self._append(self._pending[0])
                self._pending.popleft()
        except (OSError, JvpnError) as e:
            self.write_errors += 1
            self._last_error = getattr(e, "strerror", None) or str(e)
            self._retry_at = now + RETRY_MS
            self._report(now)
            return
        if self._retry_at is not None:
            self._retry_at = None
            self._say(f"writing again; {self.lines_dropped} lines were dropped in all")

    def _append(self, data: bytes) -> None:
        if self._fd is None:
            self._fd = _open_events_file(self.path)
            self._size = os.fstat(self._fd).st_size
        if self._torn:  # end the half line a failed write left, so the next parses
            self._write_all(b"\n")
            self._torn = False
        if self._size and self._size + len(data) > self.max_bytes:
            self._rotate()
        self._write_all(data)

    def _write_all(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                n = os.write(self._fd, view)
            except OSError:
                self._torn = len(view) < len(data) or self._torn
                raise
            self._size += n
            view = view[n:]

    def _rotate(self) -> None:
        """events.jsonl -> .1 -> .2 ... -> .keep (the oldest is replaced).
        Rename, not copy: a follower keeps its descriptor on the old file."""
        os.close(self._fd)
        self._fd = None
        if self.keep < 1:
            self.path.unlink(missing_ok=True)
        for i in range(self.keep - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{i}")
            if os.path.lexists(older):
                os.rename(older, self.path.with_name(f"{self.path.name}.{i + 1}"))
        if self.keep >= 1:
            os.rename(self.path, self.path.with_name(f"{self.path.name}.1"))
        self._fd = _open_events_file(self.path)
        self._size = 0

    def _report(self, now: float) -> None:
        if self._reported_at is not None and now - self._reported_at < self._report_ms:
            return
        self._reported_at = now
        self._say(f"write failed ({self._last_error}): {self.write_errors} failures, "
                  f"{len(self._pending)} lines waiting, {self.lines_dropped} dropped; retrying")

    def _say(self, text: str) -> None:
        line = f"jvpn: events file {self.path}: {text}"
        if self._err is None:  # the daemon's log (jvpn/logs.py): stderr, with a level
            log.warning("%s", line)
            return
        try:
            print(line, file=self._err, flush=True)
        except (OSError, ValueError):
            pass


def _open_events_file(path: Path) -> int:
    """Append-only, 0600 from creation (jvpn.files): the events name
    sessions and clients' addresses. A symlink or another user's file in its
    place is refused: root must not append where it points."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR_MODE)
    return open_private(path, os.O_WRONLY | os.O_APPEND)


MAX_LINE = 1 << 20  # an event line is a few hundred bytes: past 1 MiB it is not one of ours


def follow(path: Path, from_start: bool = True, poll_s: float = 0.2,
           stop: Callable[[], bool] = lambda: False, last: int | None = None,
           note: Callable[[str], None] = lambda _text: None):
    """Yield event dicts from a JSON-lines file, then keep following it,
    across rotations (tail -F): when the name points to a new file, the rest
    of the old one is read, then the new one from its start; a file
    truncated in place (copytruncate) is read again from its start. ``last``:
    begin with the file's last ``last`` lines (tail -n), not its start;
    ``from_start=False``: with none of what it holds now. ``note``: told
    (one line) of a truncation and of a dropped over-long line."""
    f = open(path, "rb")  # noqa: SIM115 (swapped on rotation)
    lines = _Lines(path, note)
    try:
        if last is not None:
            f.seek(_start_of_last_lines(f, last))
        elif not from_start:
            f.seek(0, 2)
        while not stop():
            chunk = f.readline(MAX_LINE)  # bounded: a line with no newline cannot fill memory
            if chunk:
                yield from lines.feed(chunk)
                continue
            if _truncated(path, f):
                note(f"{path}: truncated in place: following it from its start")
                f.seek(0)
                lines.reset()  # a partial line of the old content would spoil the first new one
                continue
            newer = _rotated(path, f)
            if newer is None:
                time.sleep(poll_s)
                continue
            while chunk := f.readline(MAX_LINE):  # the rest of the old file
                yield from lines.feed(chunk)
            f.close()
            f = newer
            lines.reset()
    finally:
        f.close()


class _Lines:
    """Whole lines out of the chunks of a file still being written: a line
    waits for its newline (the writer may be mid-line), up to MAX_LINE;
    longer, it is dropped, said once, and skipped to its newline."""

    def __init__(self, path: Path, note: Callable[[str], None]):
        self.path, self.note = path, note
        self.reset()

    def reset(self) -> None:
        self.buf, self.skipping = b"", False

    def feed(self, chunk: bytes):
        """The event of the line ``chunk`` completes, if any (0 or 1)."""
        whole = chunk.endswith(b"\n")
        if self.skipping:
            self.skipping = not whole
            return
        self.buf += chunk
        if whole:
            line, self.buf = self.buf, b""
            if (ev := _parse_line(line)) is not None:
                yield ev
        elif len(self.buf) >= MAX_LINE:
            self.note(f"{self.path}: dropped a line of over {MAX_LINE} bytes with no newline")
            self.buf, self.skipping = b"", True


def read(path: Path, last: int | None = None):
    """Yield the event dicts the file holds now (its last ``last`` lines
    only, if given); a line that does not parse is skipped."""
    with open(path, "rb") as f:
        if last is not None:
            f.seek(_start_of_last_lines(f, last))
        for line in f:
            if (ev := _parse_line(line)) is not None:
                yield ev


TAIL_BLOCK = 64 * 1024


def _start_of_last_lines(f, n: int) -> int:
    """The offset where the last ``n`` lines of ``f`` begin (the whole
    file when it has fewer), read backwards in blocks, never the whole
    file. A line still being written (no newline yet) counts as one."""
    end = f.seek(0, 2)
    if n <= 0:
        return end
    pos, wanted = end, n + 1  # the newline ending the last line is not a line start
    while pos > 0:
        size = min(TAIL_BLOCK, pos)
        pos -= size
        f.seek(pos)
        block = f.read(size)
        if pos + size == end and not block.endswith(b"\n"):
            wanted -= 1  # a partial last line: one line with no newline to skip
        i = len(block)
        while (i := block.rfind(b"\n", 0, i)) >= 0:
            wanted -= 1
            if wanted == 0:
                return pos + i + 1
    return 0


def _parse_line(line: bytes) -> dict | None:
    try:
        ev = json.loads(line)
    except ValueError:
        return None  # a torn line (a write that failed) or not ours
    return ev if isinstance(ev, dict) else None


def _truncated(path: Path, f) -> bool:
    """Is the file ``f`` reads still at ``path`` and now shorter than where
    ``f`` is (truncated in place: logrotate's copytruncate, `: > file`)?"""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    cur = os.fstat(f.fileno())
    return (st.st_dev, st.st_ino) == (cur.st_dev, cur.st_ino) and cur.st_size < f.tell()


def _rotated(path: Path, f):
    """The file now at ``path`` if it is not the one ``f`` reads, else None
    (also None between the rename and the new file's creation)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    cur = os.fstat(f.fileno())
    if (st.st_dev, st.st_ino) == (cur.st_dev, cur.st_ino):
        return None
    try:
        return open(path, "rb")  # noqa: SIM115
    except FileNotFoundError:
        return None
