"""The events file is bounded (issue 10 item 4, threat 4.3): unauthenticated
rejections are counted per interval instead of written one line each, the
file rotates at a size cap, a failing disk never raises into the caller, and
`follow` keeps following across a rotation (tail -F)."""

from __future__ import annotations

import io
import json
import resource
import stat
import threading
import time

from jvpn.events import EventLog, follow
from jvpn.session import Transport

INTERVAL_MS = 10_000


class Clock:
    def __init__(self):
        self.ms = 1_000_000

    def __call__(self) -> int:
        return self.ms


def _lines(path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def _spoofed(i: int) -> Transport:
    return Transport(f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}", 1024 + i % 60000)


def test_garbage_initiations_make_one_summary_line_per_interval(tmp_path):
    """2000 garbage initiations/s for 10 s used to write 20000 lines. Now one
    line per (event type, reason) per interval: the count, the distinct
    sources and a few samples. Authenticated events still go out one each."""
    f, clock = tmp_path / "e.jsonl", Clock()
    log = EventLog("gw", f, clock_ms=clock, summary_interval_ms=INTERVAL_MS)
    start = clock.ms
    for i in range(20_000):
        clock.ms = start + i // 2
        log.emit_unauthenticated("HandshakeRejected", "HANDSHAKE_FAIL", _spoofed(i),
                                 detail="bad mac1" if i % 4 else "too short")
    log.emit("ReattachResult", "REATTACH_ACCEPT", 7)  # authenticated: written at once
    assert [e["reason_code"] for e in _lines(f)] == ["REATTACH_ACCEPT"]
    clock.ms += INTERVAL_MS
    log.flush()
    log.flush()  # nothing new: nothing written
    log.close()
    lines = _lines(f)
    assert len(lines) == 2
    summary = lines[1]
    assert summary["event_type"] == "HandshakeRejected"
    assert summary["reason_code"] == "HANDSHAKE_FAIL"
    assert summary["count"] == 20_000
    assert summary["distinct_sources"] >= 4096  # counted up to a bound
    assert 1 <= len(summary["sample_sources"]) <= 4
    assert summary["details"] == {"bad mac1": 15_000, "too short": 5_000}
    assert summary["interval_ms"] >= INTERVAL_MS
    assert summary["session_id"] is None


def test_summaries_come_out_without_a_timer_and_per_reason(tmp_path):
    """The next rejection after the interval flushes the previous interval,
    so a daemon whose timer does not call flush() still gets its lines."""
    f, clock = tmp_path / "e.jsonl", Clock()
    log = EventLog("gw", f, clock_ms=clock, summary_interval_ms=INTERVAL_MS)
    for _ in range(3):
        log.emit_unauthenticated("HandshakeRejected", "HANDSHAKE_FAIL", _spoofed(1))
    log.emit_unauthenticated("ReattachResult", "AUTH_FAIL", _spoofed(2), session_id=9)
    assert not f.read_text()
    clock.ms += INTERVAL_MS
    log.emit_unauthenticated("HandshakeRejected", "HANDSHAKE_FAIL", _spoofed(3))
    got = {(e["event_type"], e["reason_code"]): e for e in _lines(f)}
    assert got[("HandshakeRejected", "HANDSHAKE_FAIL")]["count"] == 3
    assert got[("HandshakeRejected", "HANDSHAKE_FAIL")]["distinct_sources"] == 1
    assert got[("ReattachResult", "AUTH_FAIL")]["count"] == 1
    assert got[("ReattachResult", "AUTH_FAIL")]["sample_sessions"] == ["0000000000000009"]
    log.close()  # the last interval is written on close
    assert _lines(f)[-1]["count"] == 1


def test_the_events_file_rotates_at_its_cap(tmp_path):
    """No limit used to apply (~37 GB/day at the gate's admitted rate). Now
    the file rotates at max_bytes, `keep` old files stay, all 0600."""
    f = tmp_path / "e.jsonl"
    log = EventLog("gw", f, max_bytes=4096, keep=2)
    for i in range(2_000):
        log.emit("SessionStateChange", "HANDSHAKE_OK", i, _spoofed(i))
    log.close()
    files = [f, tmp_path / "e.jsonl.1", tmp_path / "e.jsonl.2"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in files)
    for p in files:
        assert p.stat().st_size <= 4096
        assert stat.S_IMODE(p.stat().st_mode) == 0o600
    newest = [e["session_id"] for p in reversed(files) for e in _lines(p)]
    assert newest[-1] == f"{1999:016x}"  # whole lines, newest last, in order
    assert [int(s, 16) for s in newest] == list(range(2_000 - len(newest), 2_000))


def _fsize_limit(nbytes: int):
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, hard))
    return soft, hard


def test_a_full_disk_never_raises_and_the_lines_are_written_later(tmp_path):
    """A failed events write (EFBIG here, ENOSPC alike) used to raise into
    the network thread. Now it is counted, reported once per interval on
    stderr, the lines wait in memory (bounded) and go out when the disk
    takes them again."""
    f, clock, err = tmp_path / "e.jsonl", Clock(), io.StringIO()
    log = EventLog("gw", f, clock_ms=clock, summary_interval_ms=INTERVAL_MS, err=err)
    log.emit("X", "BEFORE")
    saved = _fsize_limit(f.stat().st_size)
    try:
        for i in range(5):
            log.emit("X", f"DURING{i}")
            clock.ms += 10
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, saved)
    assert log.write_errors >= 1
    assert err.getvalue().count("\n") == 1 and "File too large" in err.getvalue()
    assert [e["reason_code"] for e in _lines(f)] == ["BEFORE"]
    assert [e["reason_code"] for e in log.recent][-1] == "DURING4"
    clock.ms += INTERVAL_MS
    log.emit("X", "AFTER")
    log.close()
    assert [e["reason_code"] for e in _lines(f)] == (
        ["BEFORE"] + [f"DURING{i}" for i in range(5)] + ["AFTER"])


def test_waiting_lines_and_the_recent_tail_stay_bounded(tmp_path):
    f, clock, err = tmp_path / "e.jsonl", Clock(), io.StringIO()
    log = EventLog("gw", f, clock_ms=clock, summary_interval_ms=INTERVAL_MS, err=err,
                   pending_max=100)
    log.emit("X", "BEFORE")
    saved = _fsize_limit(f.stat().st_size)
    try:
        for i in range(5_000):
            log.emit("X", "DURING", counter=i)
            clock.ms += 10  # 50 s: one report per 10 s interval
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, saved)
    assert log.lines_dropped == 4_900
    assert len(log.recent) <= 1_000
    assert 4 <= err.getvalue().count("\n") <= 6
    clock.ms += INTERVAL_MS
    log.flush()
    log.close()
    written = _lines(f)
    assert [e.get("counter") for e in written[1:]] == list(range(4_900, 5_000))


def _wait_for(cond, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not cond() and time.monotonic() < deadline:
        time.sleep(0.002)


def test_follow_keeps_following_across_a_rotation(tmp_path):
    """tail -F: after a rename-based rotation the follower reads what is
    left of the old file, then the new file from its start."""
    f = tmp_path / "e.jsonl"
    f.write_text("")
    seen, stop = [], threading.Event()

    def reader():
        for ev in follow(f, poll_s=0.005, stop=stop.is_set):
            seen.append(ev["n"])

    t = threading.Thread(target=reader)
    t.start()
    try:
        n = 0
        for _rotation in range(5):
            with open(f, "a") as w:
                for _ in range(3):
                    w.write(json.dumps({"n": n}) + "\n")
                    n += 1
            _wait_for(lambda n=n: len(seen) >= n - 1)  # the last line may still be unread
            f.rename(tmp_path / "e.jsonl.1")
            f.write_text("")
        _wait_for(lambda: len(seen) >= n)
    finally:
        stop.set()
        t.join()
    assert seen == list(range(15))


def test_follow_with_the_event_log_rotating(tmp_path):
    f = tmp_path / "e.jsonl"
    log = EventLog("gw", f, max_bytes=1024, keep=1)
    seen, stop = [], threading.Event()
    t = threading.Thread(target=lambda: seen.extend(
        e["version"] for e in follow(f, poll_s=0.005, stop=stop.is_set)))
    t.start()
    try:
        for i in range(60):  # about ten rotations
            log.emit("X", "N", version=i)
            _wait_for(lambda i=i: len(seen) > i)
    finally:
        stop.set()
        t.join()
        log.close()
    assert (tmp_path / "e.jsonl.1").exists()
    assert seen == list(range(60))


def test_follow_waits_for_a_whole_line(tmp_path):
    f = tmp_path / "e.jsonl"
    f.write_text("")
    seen, stop = [], threading.Event()
    t = threading.Thread(target=lambda: seen.extend(
        e["n"] for e in follow(f, poll_s=0.005, stop=stop.is_set)))
    t.start()
    with open(f, "a") as w:
        w.write('{"n": 1')
        w.flush()
        time.sleep(0.05)
        w.write("}\n")
    _wait_for(lambda: seen)
    stop.set()
    t.join()
    assert seen == [1]
