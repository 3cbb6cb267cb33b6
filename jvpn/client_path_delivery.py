"""Does the active path carry data, not just heartbeats? (docs/protocol.md
"Measuring the active path: data delivered"). A middlebox that drops only
DATA (a path MTU black hole, a shaper that spares small packets, an on-path
attacker) passes every heartbeat: by its heartbeats alone the path is
perfect while the tunnel carries nothing. The gateway's heartbeat echo says
how many of the session's DATA messages it accepted so far; the client
counts the DATA messages it sent from this path's socket, and compares the
two over the loss window.

The comparison, between the oldest echoed heartbeat A and the newest B of
the window: delivered = D(B) - D(A) (the gateway's counts in their echoes);
sent = data sent from A's send until ``lag`` before B's (what was sent just
before B may arrive after it: reordering, or a data send racing the
heartbeat in another thread; data sent before A and arriving after it only
adds to delivered). Judged only with at least DATA_MIN_SENT sent, so that a
few unlucky drops of a trickle never decide.

Nothing here can be moved by anyone without the session's keys: the count
comes only in a sealed echo of an outstanding heartbeat. A count lower than
the last one (a gateway restart, a handover to another cluster gateway: the
count is the serving daemon's) restarts the comparison: never an alarm.
Pure: the caller passes the clock (ms ints); no socket is touched."""

from __future__ import annotations

from collections import deque

DATA_MIN_SENT = 20  # below this many sent in the window: no verdict (noise)
MARKS_KEPT = 256  # heartbeat send marks kept (a window's 40, with room)


class DataDelivery:
    """``data_sent`` (the sender's), ``heartbeat`` and ``echoed`` (the
    monitor's and the receiver's) feed it; ``loss`` reads it."""

    def __init__(self, window_ms: int, lag_ms: int):
        self.window_ms, self.lag_ms = window_ms, lag_ms
        self.sent = 0  # DATA messages sent from this path's socket while active
        self.marks: deque[tuple[int, int, int]] = deque()  # (sample id, sent at ms, sent then)
        # (echoed at ms, sent before the heartbeat, sent lag before it, delivered)
        self.points: deque[tuple[int, int, int, int]] = deque()

    def data_sent(self, n: int) -> None:
        """``n`` DATA messages about to leave this path's socket (each once:
        a switch's dual-sent copy is counted on the active path only)."""
        self.sent += n

    def heartbeat(self, sample_id: int, now_ms: int) -> None:
        """A heartbeat is about to leave: what was sent before it."""
        self.marks.append((sample_id, now_ms, self.sent))
        while len(self.marks) > MARKS_KEPT:
            self.marks.popleft()

    def echoed(self, sample_id: int, delivered: int | None, now_ms: int) -> None:
        """The echo of heartbeat ``sample_id`` (taken: outstanding, fresh)
        says ``delivered``; None (an older gateway's echo): no check."""
        if delivered is None:
            self.points.clear()
            return
        marks = list(self.marks)  # a copy: the monitor adds to it meanwhile
        mark = next((m for m in reversed(marks) if m[0] == sample_id), None)  # its newest
        if mark is None:
            return
        if self.points and delivered < self.points[-1][3]:
            self.points.clear()  # a new count (restart, handover): start again
        lagged = _sent_before(marks, mark[1] - self.lag_ms)
        self.points.append((now_ms, mark[2], lagged, delivered))
        while len(self.points) > 1 and now_ms - self.points[0][0] > self.window_ms:
            self.points.popleft()

    def restart(self) -> None:
        """The binding moved (a reattach's ACK: perhaps to another gateway,
        another count), or the path stopped being the active one (its
        marks, some of them a candidate's probes, go too)."""
        self.points.clear()
        self.marks.clear()

    def loss(self, now_ms: int) -> float | None:
        """The share of the data sent over the window that was not
        delivered, or None: under DATA_MIN_SENT sent, or nothing to compare."""
        # a copy: the receive thread adds to it meanwhile
        points = [p for p in list(self.points) if now_ms - p[0] <= self.window_ms]
        if len(points) < 2:
            return None
        first, last = points[0], points[-1]
        sent = last[2] - first[1]
        if sent < DATA_MIN_SENT:
            return None
        delivered = last[3] - first[3]
        return max(0.0, 1.0 - delivered / sent)


def _sent_before(marks: list[tuple[int, int, int]], at_ms: int) -> int:
    """Sent before the newest heartbeat that left at or before ``at_ms``
    (no more than was sent by then: never more data counted than left)."""
    before = [m[2] for m in marks if m[1] <= at_ms]
    return before[-1] if before else 0
