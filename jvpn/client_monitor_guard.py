"""The client's monitor step is what sends heartbeats and keepalives,
probes the candidates, retries a reattach and runs the rekey timers: a step
that raised used to end the monitor thread, and the agent looked up while
its session died (review r14b B). Each step's unexpected error is now
contained and reported (a rate-limited ``DaemonError``, ``where``
``client-monitor``, as the gateway's loops report theirs); steps failing
MONITOR_FAILURES_MAX times in a row end the session loudly
(``INTERNAL_ERROR``): a client that cannot monitor its session says so
rather than keep a dead tunnel up."""

from __future__ import annotations

from jvpn.codes import EventType, Reason

MONITOR_FAILURES_MAX = 20  # failed steps in a row (about 1 s at 50 ms): the client gives up
FAILURE_REPORT_MS = 10_000  # at most one report per interval, with the count since the last


class ClientMonitorGuard:
    """Mixed into Client (the monitor thread's alone): ``guarded_step``
    runs ``monitor_step``."""

    step_failures_in_a_row = 0
    step_failures_unreported = 0
    step_failure_reported_ms: int | None = None

    def guarded_step(self, woke: bool) -> None:
        try:
            self.monitor_step(woke)
        except Exception as e:  # noqa: BLE001 - the monitor must outlive one bad step
            self._step_failed(f"{type(e).__name__}: {e}")
        else:
            self.step_failures_in_a_row = 0

    def _step_failed(self, line: str) -> None:
        self.step_failures_in_a_row += 1
        self.step_failures_unreported += 1
        now, last = self.clock_ms(), self.step_failure_reported_ms
        if last is None or now - last >= FAILURE_REPORT_MS:
            self._report_step_failures(line, now)
        if self.step_failures_in_a_row == MONITOR_FAILURES_MAX:
            self.session_over(Reason.INTERNAL_ERROR, f"the client's monitor failed "
                              f"{MONITOR_FAILURES_MAX} steps in a row: {line}")

    def _report_step_failures(self, line: str, now: int) -> None:
        try:
            self.events.emit(EventType.DAEMON_ERROR, Reason.INTERNAL_ERROR, self.session_id,
                             where="client-monitor", count=self.step_failures_unreported,
                             detail=line[:300])
        except Exception:  # noqa: BLE001 - reporting must never be what ends the loop
            return
        self.step_failures_unreported, self.step_failure_reported_ms = 0, now
