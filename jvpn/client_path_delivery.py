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
comes only in a sealed echo of an outstanding heartbeat. The points are
kept in the order their heartbeats were sent (the sample id, the
heartbeat's header counter), not the order their echoes came: an echo held
back on the way (reordered, or by an on-path attacker) takes its place, or
is dropped when its count does not fit there; it never restarts anything
(review r14b A: swapped pairs of echoes restarted the comparison forever,
and a path carrying a tenth of the data looked clean). A new count (a
gateway restart, a handover to another cluster gateway, the session
installed again: the count is the serving daemon's) is told by the
gateway's incarnation in the echo, and restarts the comparison: never an
alarm. Pure: the caller passes the clock (ms ints); no socket is touched."""

from __future__ import annotations

from bisect import bisect_left
from collections import deque
from typing import NamedTuple

DATA_MIN_SENT = 20  # below this many sent in the window: no verdict (noise)
MARKS_KEPT = 256  # heartbeat send marks kept (a window's 40, with room)


class Point(NamedTuple):
    """One echo's: its heartbeat, when it came, the data sent before the
    heartbeat left and before the one that left a lag earlier, the count."""
    sample_id: int
    at_ms: int
    sent_before: int
    sent_lagged: int
    delivered: int


class DataDelivery:
    """``data_sent`` (the sender's), ``heartbeat`` and ``echoed`` (the
    monitor's and the receiver's) feed it; ``loss`` reads it."""

    def __init__(self, window_ms: int, lag_ms: int):
        self.window_ms, self.lag_ms = window_ms, lag_ms
        self.sent = 0  # DATA messages sent from this path's socket while active
        self.marks: deque[tuple[int, int, int]] = deque()  # (sample id, sent at ms, sent then)
        # in sample order; replaced, never changed in place: loss() reads it
        # from the monitor thread while the receive thread writes it
        self.points: list[Point] = []
        self.incarnation: int | None = None  # the points' gateway count's

    def data_sent(self, n: int) -> None:
        """``n`` DATA messages about to leave this path's socket (each once:
        a switch's dual-sent copy is counted on the active path only)."""
        self.sent += n

    def heartbeat(self, sample_id: int, now_ms: int) -> None:
        """A heartbeat is about to leave: what was sent before it."""
        self.marks.append((sample_id, now_ms, self.sent))
        while len(self.marks) > MARKS_KEPT:
            self.marks.popleft()

    def echoed(self, sample_id: int, delivered: int | None, now_ms: int,
               incarnation: int | None = None) -> None:
        """The echo of heartbeat ``sample_id`` (taken: outstanding, fresh)
        says ``delivered`` of the gateway ``incarnation``'s count. None
        delivered (an oldest gateway's echo): no check; None incarnation
        (an older gateway's): a count that fell for a newer heartbeat is
        taken for a new count."""
        if delivered is None:
            self.points = []
            return
        marks = list(self.marks)  # a copy: the monitor adds to it meanwhile
        mark = next((m for m in reversed(marks) if m[0] == sample_id), None)  # its newest
        if mark is None:
            return
        lagged = _sent_before(marks, mark[1] - self.lag_ms)
        point = Point(sample_id, now_ms, mark[2], lagged, delivered)
        points = self._placed(point, incarnation)
        if points is None:
            return
        while len(points) > 1 and now_ms - points[0].at_ms > self.window_ms:
            points.pop(0)
        self.points = points

    def _placed(self, point: Point, incarnation: int | None) -> list[Point] | None:
        """The points with ``point`` in its place, or None when it has no
        place: an echo of the previous count, or a count that does not fit
        between its neighbours' (heartbeats reordered on the way to the
        gateway: either order is true, one of them is enough)."""
        points = list(self.points)
        newest = points[-1] if points else None
        if newest is not None and point.sample_id <= newest.sample_id:
            if incarnation != self.incarnation:
                return None  # an older heartbeat's, answered by the previous count
        elif incarnation != self.incarnation or (
                incarnation is None and newest is not None and point.delivered < newest.delivered):
            self.incarnation = incarnation  # a new count: start again from here
            return [point]
        at = bisect_left(points, point.sample_id, key=lambda p: p.sample_id)
        if at < len(points) and points[at].sample_id == point.sample_id:
            return None
        if (at and points[at - 1].delivered > point.delivered) or (
                at < len(points) and points[at].delivered < point.delivered):
            return None
        points.insert(at, point)
        return points

    def restart(self) -> None:
        """The binding moved (a reattach's ACK: perhaps to another gateway,
        another count), or the path stopped being the active one (its
        marks, some of them a candidate's probes, go too)."""
        self.points = []
        self.marks.clear()

    def loss(self, now_ms: int) -> float | None:
        """The share of the data sent over the window that was not
        delivered, or None: under DATA_MIN_SENT sent, or nothing to compare."""
        # a copy: the receive thread adds to it meanwhile
        points = [p for p in self.points if now_ms - p.at_ms <= self.window_ms]
        if len(points) < 2:
            return None
        first, last = points[0], points[-1]
        sent = last.sent_lagged - first.sent_before
        if sent < DATA_MIN_SENT:
            return None
        delivered = last.delivered - first.delivered
        return max(0.0, 1.0 - delivered / sent)


def _sent_before(marks: list[tuple[int, int, int]], at_ms: int) -> int:
    """Sent before the newest heartbeat that left at or before ``at_ms``
    (no more than was sent by then: never more data counted than left)."""
    before = [m[2] for m in marks if m[1] <= at_ms]
    return before[-1] if before else 0
