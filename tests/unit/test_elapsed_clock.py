"""Durations the gateway measures inside itself (rate-limited reports, the
rate limits' token buckets, a parked handover's wait) are on the timer
clock (CLOCK_BOOTTIME, never set back), not the wall clock: a wall-clock
step (NTP, ``date -s``, an attacker steering NTP) must neither silence
them for the step's length (a step back) nor empty them at once (a step
forward). Each test steps the wall clock (``clock``) and the timer clock
(``timer``) apart. Times compared with a record's, a peer's or a client's
stay on the wall clock (docs/protocol.md, "Two clocks")."""

from __future__ import annotations

import io
import json
import resource

import pytest

from jvpn.codes import EventType, Reason
from jvpn.events import RETRY_MS, EventLog
from jvpn.gateway import operations
from jvpn.gateway.follower import HANDOFF_WAIT_MS
from jvpn.gateway.rekey_control import CONFIRM_RETRY_MS
from jvpn.gateway.supervise import INCIDENT_INTERVAL_MS
from jvpn.store import StoreError
from kits.daemon_kit import (
    CLIENT,
    PEER_INNER,
    AdmitAll,
    Clock,
    events_of,
    handshake,
    ipv4,
    make_gateway,
)
from kits.follower_kit import SID, Rig, keys_of
from kits.rekey_kit import RekeyClient, policy

HOUR = 3_600_000


def _gateway(tmp_path, **extra):
    clock, timer = Clock(), Clock(5_000_000)
    return make_gateway(tmp_path, clock=clock, timer_ms=timer, **extra), clock, timer


def _errors(gw) -> list[dict]:
    return events_of(gw.events, EventType.DAEMON_ERROR)


def _refused_write(log, path) -> None:
    """One line the disk refuses (RLIMIT_FSIZE at the file's size): it waits
    in memory for the retry."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (path.stat().st_size, hard))
    try:
        log.emit("X", "DURING")
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    assert log.write_errors == 1


def test_a_wall_clock_step_back_does_not_silence_incidents(tmp_path):
    """Main: a step back of an hour held every later report of a kind for
    the hour (now - last_ms stayed below the interval)."""
    gw, clock, timer = _gateway(tmp_path)
    gw.incidents.note("here", Reason.INTERNAL_ERROR, "first")
    clock.ms -= HOUR
    timer.ms += INCIDENT_INTERVAL_MS + 1
    gw.incidents.note("here", Reason.INTERNAL_ERROR, "second")
    assert [e["detail"] for e in _errors(gw)] == ["first", "second"]
    gw.store.close()


def test_a_wall_clock_step_forward_does_not_burst_incidents(tmp_path):
    """Main: each step forward past the interval let one more report out
    (an attacker swinging the clock: one report per swing, any rate)."""
    gw, clock, _timer = _gateway(tmp_path)
    gw.incidents.note("here", Reason.INTERNAL_ERROR, "first")
    for i in range(5):
        clock.ms += INCIDENT_INTERVAL_MS + 1
        gw.incidents.note("here", Reason.INTERNAL_ERROR, f"again {i}")
        gw.incidents.flush()
    assert [e["detail"] for e in _errors(gw)] == ["first"]
    assert gw.incidents.total == 6  # counted, reported at the next interval
    gw.store.close()


def _spoofed(gw) -> list[dict]:
    return [e for e in events_of(gw.events, "SecurityEvent")
            if e["reason_code"] == "SEC_INNER_SOURCE_SPOOFED"]


def _spoof(gw, client) -> None:
    gw.datapath.datagram(client.seal(ipv4(PEER_INNER[1])), CLIENT)


def test_a_wall_clock_step_back_does_not_silence_the_drop_counts(tmp_path):
    gw, clock, timer = _gateway(tmp_path)
    client = handshake(gw)
    _spoof(gw, client)
    gw.datapath.report_drops()
    assert len(_spoofed(gw)) == 1
    _spoof(gw, client)
    clock.ms -= HOUR
    timer.ms += INCIDENT_INTERVAL_MS + 1
    gw.datapath.report_drops()
    assert len(_spoofed(gw)) == 2, "the drop report held by a wall-clock step back"
    gw.store.close()


def test_a_wall_clock_step_forward_does_not_burst_the_drop_counts(tmp_path):
    gw, clock, _timer = _gateway(tmp_path)
    client = handshake(gw)
    _spoof(gw, client)
    gw.datapath.report_drops()
    for _ in range(3):
        _spoof(gw, client)
        clock.ms += INCIDENT_INTERVAL_MS + 1
        gw.datapath.report_drops()
    assert len(_spoofed(gw)) == 1, "a report per wall-clock step forward"
    gw.store.close()


def test_a_wall_clock_step_back_does_not_starve_the_reattach_limits(tmp_path):
    """Main: the buckets refilled by the wall clock's difference: a step
    back of an hour took 36,000 tokens (10/s) from a source's bucket, so
    its reattaches were refused for the hour (and the session's, 5/s)."""
    gw, clock, timer = _gateway(tmp_path)
    for buckets in (gw.reattach.per_source, gw.reattach.per_session):
        assert buckets.allow("k")
    clock.ms -= HOUR
    timer.ms += 1_000
    assert gw.reattach.per_source.allow("k") and gw.reattach.per_session.allow("k")
    gw.store.close()


_BUDGETS = {"reattach": lambda gw: gw.reattach.per_session,
            "probe": lambda gw: gw.probes.checks.buckets}


@pytest.mark.parametrize("budget", sorted(_BUDGETS))
def test_a_wall_clock_step_forward_does_not_refill_a_budget(tmp_path, budget):
    gw, clock, _timer = _gateway(tmp_path)
    buckets = _BUDGETS[budget](gw)
    while buckets.allow("k"):
        pass
    clock.ms += HOUR
    assert not buckets.allow("k"), f"a wall-clock step forward refilled the {budget} budget"
    gw.store.close()


def test_a_wall_clock_step_back_does_not_starve_the_probe_budget(tmp_path):
    gw, clock, timer = _gateway(tmp_path)
    buckets = _BUDGETS["probe"](gw)
    assert buckets.allow("k")
    clock.ms -= HOUR
    timer.ms += 1_000
    assert buckets.allow("k"), "the probe budget starved by a wall-clock step back"
    gw.store.close()


# ------------------------------------------------------------ a parked handover
def _parked(tmp_path):
    """gw-a parks a proven reattach of gw-b's session (gw-b alive: WAIT)."""
    rig = Rig(tmp_path)
    clock, timer = Clock(), Clock(5_000_000)
    rig.follower.clock_ms = rig.table.clock_ms = clock
    rig.table.timer_ms = timer
    rec = rig.stored(SID, owner="gw-b")
    assert rig.follower.claim(rec, keys_of(SID), b"request", CLIENT) is None
    assert SID in rig.follower.waiting
    return rig, clock, timer, HANDOFF_WAIT_MS


def _gave_up(rig) -> list[dict]:
    return [e for e in events_of(rig.table.events, EventType.REATTACH_RESULT)
            if e["reason_code"] == Reason.OWNERSHIP_CONFLICT]


def test_a_wall_clock_step_back_does_not_hold_a_parked_handover(tmp_path):
    """Main: the parked request's wait was a wall-clock deadline: a step
    back of an hour kept it (and the client's reattach unanswered) for the
    hour past its 3 s."""
    rig, clock, timer, wait_ms = _parked(tmp_path)
    try:
        clock.ms -= HOUR
        timer.ms += wait_ms + 1
        rig.follower.expire_parked()
        assert not rig.follower.waiting and len(_gave_up(rig)) == 1
    finally:
        rig.store.close()


def test_a_wall_clock_step_forward_does_not_drop_a_parked_handover(tmp_path):
    """Main: a step forward dropped the request at once, before the owner
    had its 3 s to release the session."""
    rig, clock, _timer, _wait_ms = _parked(tmp_path)
    try:
        clock.ms += HOUR
        rig.follower.expire_parked()
        assert rig.follower.waiting and not _gave_up(rig)
    finally:
        rig.store.close()


# ------------------------------------------------------------ a rekey's confirmation retry
def _rekeyed_refusing(tmp_path, monkeypatch):
    """A rekey finished by the client, its confirmation write refused once."""
    clock, timer = Clock(), Clock(5_000_000)
    gw = make_gateway(tmp_path, gate=AdmitAll(), clock=clock, timer_ms=timer, policy=policy())
    c = RekeyClient(gw)
    msg, eph = c.init()
    [(resp, _)] = c.send(msg)
    c.finish(resp, eph)
    calls = []

    def refusing(*_a, **_k):
        calls.append(1)
        raise StoreError("store unavailable (injected)")

    monkeypatch.setattr(gw.store, "cas", refusing)
    c.data()
    assert len(calls) == 1 and not c.live().keys.confirmed
    return gw, clock, timer, c, calls


def test_a_wall_clock_step_back_does_not_hold_the_rekey_confirmation(tmp_path, monkeypatch):
    """Main: the retry was paced on the wall clock: after a step back of an
    hour, no message confirmed the new epoch for the hour."""
    gw, clock, timer, c, _calls = _rekeyed_refusing(tmp_path, monkeypatch)
    monkeypatch.undo()  # the store is back
    clock.ms -= HOUR
    timer.ms += CONFIRM_RETRY_MS
    c.data()
    assert c.live().keys.confirmed, "the confirmation held by a wall-clock step back"
    gw.store.close()


def test_a_wall_clock_step_forward_does_not_retry_the_confirmation_early(tmp_path, monkeypatch):
    gw, clock, _timer, c, calls = _rekeyed_refusing(tmp_path, monkeypatch)
    clock.ms += 1_000  # the keys still young: the message reaches the confirmation
    assert c.data()
    assert len(calls) == 1, "a store write per wall-clock step forward"
    gw.store.close()


# ------------------------------------------------------------ reattach latency (figures, /metrics)
def test_a_wall_clock_step_during_a_reattach_is_not_its_latency(tmp_path):
    """Main timed a reattach by its events' wall-clock ts_ms: a step
    forward of an hour during one was a latency of an hour (the +Inf
    bucket, the sum), a step back one of 0 s."""
    clock, timer = Clock(), Clock(5_000_000)
    gw = make_gateway(tmp_path, clock=clock, timer_ms=timer,
                      events=EventLog("gw-test", clock_ms=clock))
    figures = operations.handlers(gw)["figures"]
    for sid, step, took in ((0x11, HOUR, 70), (0x22, -2 * HOUR, 50)):
        gw.events.emit(EventType.REATTACH_ATTEMPT, Reason.RECOVERY_START, sid)
        clock.ms += step
        timer.ms += took
        gw.events.emit(EventType.REATTACH_RESULT, Reason.REATTACH_ACCEPT, sid, accepted=True)
    assert figures({})["reattach_latency"] == {"count": 2, "sum_s": 0.12}
    gw.store.close()


# ------------------------------------------------------------ the event log's intervals
SUMMARY_MS = 1_000


def _log(tmp_path=None):
    clock, timer = Clock(), Clock(5_000_000)
    path = tmp_path / "e.jsonl" if tmp_path is not None else None
    log = EventLog("gw", path, clock_ms=clock, timer_ms=timer, summary_interval_ms=SUMMARY_MS,
                   err=io.StringIO())
    return log, clock, timer


def _reject(log) -> None:
    log.emit_unauthenticated(EventType.HANDSHAKE_REJECTED, Reason.AUTH_FAIL, CLIENT)


def _summaries(log) -> list[dict]:
    return [e for e in log.recent if e.get("aggregated")]


def test_a_wall_clock_step_back_does_not_hold_the_rejection_summaries():
    """Main: the summary of unauthenticated rejections (what anyone can
    make the gateway count) waited for the wall clock to come back."""
    log, clock, timer = _log()
    _reject(log)
    clock.ms -= HOUR
    timer.ms += SUMMARY_MS
    log.flush()
    assert [s["count"] for s in _summaries(log)] == [1]


def test_a_wall_clock_step_forward_does_not_burst_the_rejection_summaries():
    """Main: each step forward ended the interval: a summary line per step
    (a clock swinging each tick: one per tick, not per interval)."""
    log, clock, _timer = _log()
    for _ in range(5):
        _reject(log)
        clock.ms += HOUR
        log.flush()
    assert not _summaries(log)


def test_a_wall_clock_step_back_does_not_hold_a_failing_files_retry(tmp_path):
    """Main: a line the disk refused waited for its retry by the wall clock:
    a step back kept it in memory (dropped past pending_max) for the step."""
    log, clock, timer = _log(tmp_path)
    log.emit("X", "BEFORE")
    path = tmp_path / "e.jsonl"
    _refused_write(log, path)
    clock.ms -= HOUR
    timer.ms += RETRY_MS
    log.flush()
    written = [json.loads(line)["reason_code"] for line in path.read_text().splitlines()]
    log.close()
    assert written == ["BEFORE", "DURING"]
