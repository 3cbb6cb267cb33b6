"""The timelines `bench reattach` and `bench handoff` give a slow trial
(jvpn/bench/stall_trace.py, issue 15): every observation on the trial's
monotonic axis, lost probes found from the sequence, the gate's sampled
drops folded, the stalled trials picked, and the wire's parser."""

from __future__ import annotations

import json
import socket
import struct
import subprocess
import sys
from pathlib import Path

from jvpn.bench.net import PROBER, PROBER_PAUSE_S, prober_pause_figures, read_probes
from jvpn.bench.stall_trace import (
    Trial,
    counter_delta,
    is_stall,
    pause_in_gap_ms,
    pause_marks,
    render,
    stalls,
    timeline,
    write_trace,
)
from jvpn.bench.wire_log import WireLog, parse
from jvpn.gate import abi
from jvpn.lab.addresses import PORT
from jvpn.lab.wait import wait_until

OFFSET = 1_000_000.0  # wall clock = monotonic + OFFSET, in seconds


def trial(gap_ms: float | None = 30.0) -> Trial:
    # the change began at 99.990 s and was done at 100.000 s (monotonic)
    return Trial(3, "wifi down", 99.990, t0=100.0, offset_s=OFFSET, gap_ms=gap_ms)


def wall_ms(mono_s: float) -> int:
    return round((mono_s + OFFSET) * 1000)


def test_events_land_on_the_trials_axis_through_the_wall_offset():
    ev = {"ts_ms": wall_ms(100.012), "event_type": "ReattachAttempt",
          "reason_code": "RECOVERY_START", "node_id": "client", "seq": 7}
    [entry] = [e for e in timeline(trial(), [], {"client": [ev]}) if e["who"] == "client"]
    assert entry["t_ms"] == 12.0
    assert entry["what"] == "ReattachAttempt RECOVERY_START"
    assert entry["seq"] == 7 and "node_id" not in entry


def test_events_outside_the_window_are_left_out():
    early = {"ts_ms": wall_ms(99.5), "event_type": "A", "reason_code": "X"}
    late = {"ts_ms": wall_ms(101.5), "event_type": "B", "reason_code": "X"}
    got = timeline(trial(gap_ms=30.0), [], {"gateway": [early, late]})
    assert [e["who"] for e in got] == ["bench", "bench"]  # the change's two marks only


def test_a_run_of_sampled_xdp_drops_is_one_entry():
    drops = [{"ts_ms": wall_ms(100.010 + i / 1000), "event_type": "XdpSecurityDrop",
              "reason_code": "DROP_WRONG_BINDING", "transport_id": "10.0.0.2:5"}
             for i in range(5)]
    [entry] = [e for e in timeline(trial(), [], {"gateway": drops}) if e["who"] == "gateway"]
    assert entry["count"] == 5 and entry["t_ms"] == 10.0 and entry["until_ms"] == 14.0


def test_lost_probes_and_the_measured_echo():
    samples = [(1, 99.980, 99.9803), (2, 100.001, 100.0012),  # before; one right after t0...
               (6, 100.025, 100.029)]  # ... then 3 lost, then the measured one's neighbour
    got = timeline(trial(), samples, {})
    whats = [e["what"] for e in got if e["who"] == "probe"]
    assert whats[0] == "last echo before the change"
    assert "3 probes lost (seq 3..5" in whats[2]
    first = next(e for e in got if e["what"].startswith("first echo"))
    assert first["seq"] == 2 and first["sent_ms"] == 1.0


def test_marks_are_already_monotonic():
    got = timeline(trial(), [], {}, [(100.020, "wire", "PATH_CHALLENGE gateway -> client")])
    [entry] = [e for e in got if e["who"] == "wire"]
    assert entry["t_ms"] == 20.0


def test_stalls_are_the_slow_trials_and_those_that_never_recovered():
    assert is_stall(None) and is_stall(50.1) and not is_stall(50.0)
    quick, slow, lost = trial(4.0), trial(210.0), trial(None)
    got = stalls([quick, slow, lost], [], {})
    assert [r["gap_ms"] for r in got] == [210.0, None]


def test_counter_delta_lists_what_moved():
    assert counter_delta({"pass_data": 10, "drop_wrong_binding": 2},
                         {"pass_data": 15, "drop_wrong_binding": 2, "pass_control": 1}) == {
        "pass_data": 5, "pass_control": 1}
    assert counter_delta(None, {"pass_data": 1}) is None


def test_the_trace_directory(tmp_path):
    log = tmp_path / "probe.txt"
    log.write_text("1 2 3\n")
    write_trace(tmp_path / "out", [trial(4.0), trial(120.0)], [], {}, {"probe.txt": log})
    lines = (tmp_path / "out" / "trials.jsonl").read_text().splitlines()
    assert [json.loads(x)["gap_ms"] for x in lines] == [4.0, 120.0]
    text = (tmp_path / "out" / "stalls.txt").read_text()
    assert text.startswith("trial 3 (wifi down): 120.0 ms") and "(t0)" in text
    assert (tmp_path / "out" / "probe.txt").read_text() == "1 2 3\n"
    assert render(json.loads(lines[0])).count("\n") == 3  # a header and the two marks


def frame(src: tuple[str, int], dst: tuple[str, int], payload: bytes) -> bytes:
    udp = struct.pack("!HHHH", src[1], dst[1], 8 + len(payload), 0) + payload
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0,
                     socket.inet_aton(src[0]), socket.inet_aton(dst[0]))
    return bytes(12) + b"\x08\x00" + ip + udp


def test_the_wire_parser_says_direction_transport_and_type():
    c2s = frame(("10.0.0.2", 4000), ("10.9.9.9", PORT), bytes([abi.MSG_REATTACH_REQ, 1]))
    s2c = frame(("10.9.9.9", PORT), ("10.0.0.2", 4000), bytes([abi.MSG_DATA, 1]))
    other = frame(("10.0.0.2", 4000), ("10.9.9.9", PORT + 1), bytes([abi.MSG_DATA]))
    assert parse(c2s) == ("c2s", "10.0.0.2:4000", abi.MSG_REATTACH_REQ)
    assert parse(s2c) == ("s2c", "10.0.0.2:4000", abi.MSG_DATA)
    assert parse(other) is None


def test_the_probers_own_pauses_inside_a_gap():
    t = trial(30.0)  # the gap: 100.000 .. 100.030
    pauses = [(99.950, 99.990), (100.010, 100.050), (100.200, 100.300)]
    assert pause_in_gap_ms(t, pauses) == 20.0  # only 100.010 .. 100.030 is inside
    [(at, who, what)] = pause_marks([(100.010, 100.050)])
    assert (at, who) == (100.010, "prober") and "40.0 ms" in what
    figures = prober_pause_figures([t, trial(4.0)], pauses)
    assert figures["prober_pauses"] == 3 and figures["prober_pause_max_ms"] == 100.0
    assert figures["trials_with_prober_pause"] == []  # the trials' extra is set by the bench
    t.extra["prober_pause_ms"] = pause_in_gap_ms(t, pauses)
    assert prober_pause_figures([t], pauses)["trials_with_prober_pause"] == [3]


def test_the_prober_keeps_its_echoes_and_writes_them_when_it_stops(tmp_path):
    """PROBER against a local echo: the first echo is in its log at once
    (start_prober waits for it), the rest when it stops, in read_probes'
    format; its pauses file exists. The test is the echo server."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    log = tmp_path / "probe.txt"
    prober = subprocess.Popen([sys.executable, "-c", PROBER, "127.0.0.1", str(port), "30",
                               str(log), str(PROBER_PAUSE_S)])
    try:
        for _ in range(50):  # answer 50 probes, then stop it
            msg, src = sock.recvfrom(100)
            sock.sendto(msg, src)
        wait_until(lambda: log.exists() and log.stat().st_size > 0, "the first echo", 10)
        assert len(read_probes(log)) == 1  # the rest waits for the stop
        Path(str(log) + ".stop").touch()
        prober.wait(10)
    finally:
        prober.kill()
        sock.close()
    got = read_probes(log)
    assert 40 <= len(got) <= 50 and [s[0] for s in got] == sorted(s[0] for s in got)
    assert all(sent <= back for _n, sent, back in got)
    assert Path(str(log) + ".pauses").exists()


def test_the_wire_log_says_when_data_starts_on_a_transport_not_every_packet():
    """A dual send alternates two transports packet by packet: one entry each."""
    log = WireLog.__new__(WireLog)  # no capture socket: frames are handed in
    log.entries, log._data_seen = [], {}
    gw = ("10.9.9.9", PORT)
    old, new = ("10.0.0.2", 4000), ("10.0.0.3", 4001)
    for i in range(10):  # 1 ms apart, alternating
        log._frame(frame(old if i % 2 else new, gw, bytes([abi.MSG_DATA])), 1.0 + i / 1000)
    log._frame(frame(new, gw, bytes([abi.MSG_PATH_RESPONSE])), 1.011)
    log._frame(frame(old, gw, bytes([abi.MSG_DATA])), 1.5)  # back after 490 ms without
    assert [what for _t, what in log.entries] == [
        "data client -> gateway via 10.0.0.3:4001", "data client -> gateway via 10.0.0.2:4000",
        "PATH_RESPONSE client -> gateway (10.0.0.3:4001)",
        "data client -> gateway via 10.0.0.2:4000"]
