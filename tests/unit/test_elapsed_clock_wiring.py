"""The timer clock as the gateway is built for real, and the clocks never
mixed (review k21r5 of k21clk2). tests/unit/test_elapsed_clock.py injects
both clocks (``clock_ms`` and ``timer_ms``), so it cannot see what runs
when neither is given (`jvpn gateway up`: jvpn/gateway/build.py passes no
clock to the Gateway or its EventLog), nor /metrics' tally; and its timer
clock starts far below its wall clock, so a deadline set on one clock and
compared with a reading of the other passes its step-back tests. Here: the
defaults are the CLOCK_BOOTTIME one, the /metrics tally is on the gateway's
timer clock, and each interval of the event log is checked with the timer
clock on the side of the wall clock where a mix-up shows."""

from __future__ import annotations

import io
import json
import time
import types

from test_elapsed_clock import _refused_write

from jvpn import client_clock
from jvpn import events as events_module
from jvpn.codes import EventType, Reason
from jvpn.events import RETRY_MS, EventLog
from jvpn.gateway import daemon as daemon_module
from jvpn.gateway.metrics import MetricsServer
from jvpn.ratelimit import KeyedBuckets
from kits.daemon_kit import CLIENT, Clock, make_gateway

HOUR = 3_600_000
SUMMARY_MS = 1_000


def _wall(monkeypatch, module) -> Clock:
    """``module``'s wall clock (``time.time_ns``) on a virtual clock: the
    real one stepped as the test says, the module's other uses of ``time``
    unchanged."""
    wall = Clock()
    fake = types.SimpleNamespace(**{n: getattr(time, n) for n in dir(time)
                                    if not n.startswith("_")})
    fake.time_ns = lambda: wall.ms * 1_000_000
    monkeypatch.setattr(module, "time", fake)
    return wall


# ------------------------------------------------------------ as built: no clock given
def test_a_gateway_given_no_clock_measures_on_the_boottime_clock(tmp_path, monkeypatch):
    """`gateway up` gives the Gateway no clock: its timer clock must be
    CLOCK_BOOTTIME (jvpn.client_clock.timer_ms), not the wall clock (a
    ``timer_ms or clock_ms`` falling back to the gateway's own wall clock
    passes every test that injects one). What reads it (the buckets, the
    incidents, the parked wait...) is test_elapsed_clock's."""
    wall = _wall(monkeypatch, daemon_module)
    gw = make_gateway(tmp_path)
    try:
        before = client_clock.timer_ms()
        read = gw.timer_ms()
        after = client_clock.timer_ms()
        assert before <= read <= after, "the gateway's timer clock is not CLOCK_BOOTTIME"
        wall.ms -= HOUR
        assert gw.timer_ms() >= read, "the timer clock followed a wall-clock step back"
    finally:
        gw.store.close()


def test_an_event_log_given_no_clock_paces_its_summaries_on_the_timer_clock(monkeypatch):
    """build.py gives the EventLog no clock: its summaries' interval must
    be the timer clock's (client_clock.timer_ms), its lines' ts_ms the
    wall clock's."""
    timer = Clock(5_000_000)
    monkeypatch.setattr(client_clock, "timer_ms", timer)
    wall = _wall(monkeypatch, events_module)
    log = EventLog("gw", summary_interval_ms=SUMMARY_MS, err=io.StringIO())
    log.emit_unauthenticated(EventType.HANDSHAKE_REJECTED, Reason.AUTH_FAIL, CLIENT)
    wall.ms -= HOUR
    timer.ms += SUMMARY_MS
    log.flush()
    summaries = [e for e in log.recent if e.get("aggregated")]
    assert [(s["count"], s["interval_ms"], s["ts_ms"]) for s in summaries] == [
        (1, SUMMARY_MS, wall.ms)]


def test_the_metrics_tally_times_a_reattach_on_the_gateways_timer_clock(tmp_path):
    """/metrics' histogram (MetricsServer.attach), as `figures`' is in
    test_elapsed_clock: a wall-clock step during a reattach is not its
    latency, the gateway's timer clock is."""
    clock, timer = Clock(), Clock(5_000_000)
    gw = make_gateway(tmp_path, clock=clock, timer_ms=timer,
                      events=EventLog("gw-test", clock_ms=clock))
    server = MetricsServer(("127.0.0.1", 0))
    try:
        server.attach(gw, "lo")
        gw.events.emit(EventType.REATTACH_ATTEMPT, Reason.RECOVERY_START, 0x11)
        clock.ms += HOUR
        timer.ms += 70
        gw.events.emit(EventType.REATTACH_RESULT, Reason.REATTACH_ACCEPT, 0x11, accepted=True)
        assert server.tally.figures()["latency_sum_s"] == 0.07
    finally:
        server.close()
        gw.store.close()


# ------------------------------------------------------------ the event log's clocks not mixed
def _log(tmp_path=None, *, timer_ahead: bool):
    """``timer_ahead``: the timer clock reads hours past the wall clock (a
    deadline set on the timer clock and compared with the wall clock's
    reading after a step back is then not yet due: a mix-up holds it);
    else far behind (one compared after a step forward is due at once)."""
    clock = Clock()
    timer = Clock(clock.ms + 10 * HOUR if timer_ahead else 5_000_000)
    path = tmp_path / "e.jsonl" if tmp_path is not None else None
    log = EventLog("gw", path, clock_ms=clock, timer_ms=timer, summary_interval_ms=SUMMARY_MS,
                   err=io.StringIO())
    return log, clock, timer


def _written(path) -> list[str]:
    return [json.loads(line)["reason_code"] for line in path.read_text().splitlines()]


def test_a_summarys_interval_is_measured_on_the_timer_clock():
    """The summary's ``interval_ms`` field: the timer clock's span (the
    interval's start and end on one clock), whichever way the wall stepped."""
    for timer_ahead, step in ((True, -HOUR), (False, HOUR)):
        log, clock, timer = _log(timer_ahead=timer_ahead)
        log.emit_unauthenticated(EventType.HANDSHAKE_REJECTED, Reason.AUTH_FAIL, CLIENT)
        clock.ms += step
        timer.ms += SUMMARY_MS
        log.flush()
        assert [s["interval_ms"] for s in log.recent if s.get("aggregated")] == [SUMMARY_MS]


def test_a_wall_clock_step_forward_does_not_retry_a_failing_file_early(tmp_path):
    """The retry of a refused line waits RETRY_MS of the timer clock: a step
    forward of the wall clock is no reason to try the disk again."""
    log, clock, timer = _log(tmp_path, timer_ahead=False)
    path = tmp_path / "e.jsonl"
    log.emit("X", "BEFORE")
    _refused_write(log, path)
    clock.ms += HOUR
    log.flush()
    assert _written(path) == ["BEFORE"], "retried by a wall-clock step forward"
    timer.ms += RETRY_MS
    log.flush()
    assert _written(path) == ["BEFORE", "DURING"]
    log.close()


def test_a_refused_reopen_is_retried_on_the_timer_clock(tmp_path):
    """SIGUSR1's reopen refused (a symlink in the file's place): the lines
    after it wait RETRY_MS of the timer clock, through a wall-clock step back."""
    log, clock, timer = _log(tmp_path, timer_ahead=False)
    path = tmp_path / "e.jsonl"
    log.emit("X", "BEFORE")
    path.rename(tmp_path / "e.old")
    path.symlink_to(tmp_path / "elsewhere")
    log.reopen()
    assert log.write_errors == 1
    log.emit("X", "AFTER")
    path.unlink()  # the operator removes the symlink
    clock.ms -= HOUR
    timer.ms += RETRY_MS
    log.flush()
    assert _written(path) == ["AFTER"], "the reopen's retry held by the wall clock"
    log.close()


# ------------------------------------------------------------ a clock read lower than before
def test_a_bucket_read_by_a_clock_that_went_back_owes_no_tokens():
    """KeyedBuckets took ``(now - last) * rate`` as the refill: a clock read
    lower than the last reading (a wall clock stepped back, which a
    ReattachServer or ProbeCheck built without ``timer_ms`` falls back to;
    a test's clock) owed rate tokens per second of the step, so one step
    back of an hour refused a source for the hour. A clock going back adds
    nothing and takes nothing."""
    clock = Clock(5_000_000)
    buckets = KeyedBuckets(10, 20, lambda: clock.ms / 1000)
    assert buckets.allow("k")
    clock.ms -= HOUR
    assert buckets.allow("k"), "a step back took tokens"
    clock.ms += 1  # read again after the step: the refill counts from here
    assert sum(buckets.allow("k") for _ in range(30)) == 18


def test_a_bucket_read_by_a_swinging_clock_mints_no_tokens():
    """Review k21rall L1: with a clock read lower refilling nothing but
    kept as the last reading, each swing forward refilled the same span
    again: a clock swinging 200 ms back and forth at one instant of real
    time let 40 of 40 tries through a bucket of burst 20 at 10/s. At most
    the burst and what the clock's furthest reading refills (2 tokens)."""
    clock = Clock(5_000_000)
    buckets = KeyedBuckets(10, 20, lambda: clock.ms / 1000)
    allowed = 0
    for i in range(40):
        clock.ms += -200 if i % 2 else 200
        allowed += buckets.allow("k")
    assert allowed <= 20 + 2, f"{allowed} of 40 through a bucket of 20 (+ 0.2 s of refill)"
