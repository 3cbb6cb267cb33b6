"""Counts that only the event stream knows: handshakes by result, cookie
replies, reattach results and the latency of the accepted ones, rekeys by
result and suspected key compromises (issue 13). An
``EventLog`` listener (jvpn/events.py): nothing in the control path counts
for it; it reads the events the daemon emits anyway. Read by /metrics
(jvpn/gateway/metrics.py) and by the operator socket's ``figures``
(`jvpn-xdp top`)."""

from __future__ import annotations

import threading
from collections import Counter, OrderedDict
from collections.abc import Callable

from jvpn.codes import EventType, Reason

# reattach latency (seconds): a path challenge's round trip, lab to WAN
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
PENDING_MAX = 4_096  # reattach attempts awaiting their result (oldest forgotten first)
# the key lifecycle's events by their result (with their reason code: a
# refusal's may be KEY_EXPIRED too, so the result keeps them apart)
REKEY_RESULTS = {EventType.KEY_ROTATED: "rotated", EventType.REKEY_DENIED: "denied",
                 EventType.KEY_EXPIRED: "expired"}


class EventTally:
    """Counts kept from the event stream (an ``EventLog`` listener): called
    under the log's lock, so it only adds. A reattach's latency is timed
    on ``timer_ms`` (the gateway's timer clock, read as each event is
    emitted), not by the events' wall-clock ``ts_ms``: a step of the wall
    clock during a reattach was one latency of the step's size. No default
    clock: the caller names the one (review k21r5: a default could go back
    to the wall clock and only a caller that gave none would see it)."""

    def __init__(self, timer_ms: Callable[[], int]) -> None:
        self.timer_ms = timer_ms
        self._lock = threading.Lock()
        self.handshakes: Counter[str] = Counter()
        self.cookie_replies = 0
        self.reattaches: Counter[str] = Counter()
        self.buckets = [0] * (len(LATENCY_BUCKETS) + 1)  # the last: +Inf
        self.latency_sum_s = 0.0
        self._attempts: OrderedDict[str, int] = OrderedDict()  # session id -> timer_ms
        self.rekeys: Counter[tuple[str, str]] = Counter()  # (result, reason code)
        self.key_compromises = 0

    def __call__(self, ev: dict) -> None:
        kind, reason = ev.get("event_type"), ev.get("reason_code")
        with self._lock:
            if kind == EventType.SESSION_STATE_CHANGE and reason == Reason.HANDSHAKE_OK:
                self.handshakes[reason] += 1
            elif kind in (EventType.HANDSHAKE_REJECTED, EventType.HANDSHAKE_FAILED):
                self.handshakes[str(reason)] += 1
            elif kind == EventType.HANDSHAKE_COOKIE:
                self.cookie_replies += 1
            elif kind == EventType.REATTACH_ATTEMPT:
                self._attempt(ev)
            elif kind == EventType.REATTACH_RESULT:
                self._result(ev, str(reason))
            elif kind == EventType.SESSION_TERMINATED:
                self._attempts.pop(ev.get("session_id"), None)
            elif kind in REKEY_RESULTS:
                self.rekeys[(REKEY_RESULTS[kind], str(reason))] += 1
            elif kind == EventType.SECURITY_KEY_COMPROMISE_SUSPECTED:
                self.key_compromises += 1

    def _attempt(self, ev: dict) -> None:
        """One per entry into RECOVERING (the path challenge sent): the
        latest one is what an accept ends (an earlier one expired)."""
        sid = ev.get("session_id")
        if sid is None:
            return
        self._attempts.pop(sid, None)
        self._attempts[sid] = self.timer_ms()
        if len(self._attempts) > PENDING_MAX:
            self._attempts.popitem(last=False)

    def _result(self, ev: dict, reason: str) -> None:
        self.reattaches[reason] += 1
        started = self._attempts.pop(ev.get("session_id"), None)
        if started is None or reason != Reason.REATTACH_ACCEPT:
            return  # a refusal before any challenge, or after: no switch to time
        seconds = max(0.0, (self.timer_ms() - started) / 1000)
        self.latency_sum_s += seconds
        i = next((i for i, le in enumerate(LATENCY_BUCKETS) if seconds <= le),
                 len(LATENCY_BUCKETS))
        self.buckets[i] += 1

    def figures(self) -> dict:
        with self._lock:
            cumulative, total = [], 0
            for le, n in zip((*LATENCY_BUCKETS, float("inf")), self.buckets, strict=True):
                total += n
                cumulative.append((le, total))
            rekeys = [[result, code, n] for (result, code), n in sorted(self.rekeys.items())]
            return {"handshakes": dict(self.handshakes), "cookie_replies": self.cookie_replies,
                    "reattaches": dict(self.reattaches), "latency_buckets": cumulative,
                    "latency_sum_s": self.latency_sum_s, "rekeys": rekeys,
                    "key_compromises_suspected": self.key_compromises}
