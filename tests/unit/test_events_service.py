"""The events file as a service uses it: reopened on SIGUSR1 (logrotate),
`events --follow -n N` (only new events after the last N, across a
rotation), human times in ISO-8601 UTC, GatewayStarted's listen address."""

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time

from click.testing import CliRunner

from jvpn.events import EventLog, read
from jvpn.gateway.listener import ANY, listen_name, open_listener
from jvpn.service import defer_reopen, reopen_on_signal
from jvpn_cli.main import cli
from kits.daemon_kit import events_of, make_gateway

JVPN_XDP = os.path.join(os.path.dirname(sys.executable), "jvpn-xdp")


def _wait_for(cond, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond() and time.monotonic() < deadline:
        time.sleep(0.005)
    assert cond()


def test_reopen_writes_to_a_new_file_after_logrotate_renamed_it(tmp_path):
    f = tmp_path / "e.jsonl"
    log = EventLog("gw", f)
    log.emit("X", "BEFORE")
    f.rename(tmp_path / "e.jsonl-20261130")  # logrotate's rename ("create" mode)
    log.emit("X", "STILL_OLD")  # the open descriptor follows the rename
    log.reopen()
    log.emit("X", "AFTER")
    log.close()
    assert [e["reason_code"] for e in read(tmp_path / "e.jsonl-20261130")] == [
        "BEFORE", "STILL_OLD"]
    assert [e["reason_code"] for e in read(f)] == ["AFTER"]
    assert f.stat().st_mode & 0o777 == 0o600


def test_reopen_refuses_a_symlink_put_in_the_files_place(tmp_path, capsys):
    """Root must not append where a planted symlink points: the line waits,
    stderr says why, nothing is written through the link."""
    f, target = tmp_path / "e.jsonl", tmp_path / "elsewhere"
    log = EventLog("gw", f, err=sys.stderr)
    f.rename(tmp_path / "e.jsonl.old")
    target.write_text("")
    f.symlink_to(target)
    log.reopen()
    log.emit("X", "WAITS")
    assert log.write_errors >= 1
    log.close()
    assert target.read_text() == ""
    assert "events file" in capsys.readouterr().err


def test_sigusr1_reopens(tmp_path):
    f = tmp_path / "e.jsonl"
    log = EventLog("gw", f)
    old = signal.getsignal(signal.SIGUSR1)
    try:
        reopen_on_signal(log)
        f.rename(tmp_path / "e.jsonl.1")
        os.kill(os.getpid(), signal.SIGUSR1)
        _wait_for(f.exists)  # reopened by a thread the handler started
    finally:
        signal.signal(signal.SIGUSR1, old)
    log.emit("X", "NEW")
    log.close()
    assert [e["reason_code"] for e in read(f)] == ["NEW"]


def test_sigusr1_during_the_start_is_kept_and_reopens_once_the_log_exists(tmp_path):
    f = tmp_path / "e.jsonl"
    old = signal.getsignal(signal.SIGUSR1)
    try:
        asked = defer_reopen()
        log = EventLog("gw", f)  # opened, then logrotate moves it and signals, mid-start
        f.rename(tmp_path / "e.jsonl.1")
        os.kill(os.getpid(), signal.SIGUSR1)  # the default action would end pytest
        assert asked.is_set() and not f.exists()
        reopen_on_signal(log, asked=asked)
        _wait_for(f.exists)
    finally:
        signal.signal(signal.SIGUSR1, old)
    log.emit("X", "NEW")
    log.close()
    assert [e["reason_code"] for e in read(f)] == ["NEW"]


def test_human_output_shows_iso_utc_times_and_json_keeps_the_number(tmp_path):
    f = tmp_path / "e.jsonl"
    log = EventLog("gw", f, clock_ms=lambda: 1_764_462_451_123)
    log.emit("ReattachResult", "REATTACH_ACCEPT", 1)
    log.close()
    human = CliRunner().invoke(cli, ["events", "--file", str(f)])
    assert human.output.startswith("2025-11-30T00:27:31.123Z ReattachResult"), human.output
    raw = CliRunner().invoke(cli, ["events", "--file", str(f), "--json"])
    assert json.loads(raw.output)["ts_ms"] == 1_764_462_451_123


def test_lines_limits_the_plain_listing(tmp_path):
    f = tmp_path / "e.jsonl"
    log = EventLog("gw", f)
    for i in range(5):
        log.emit("X", "N", version=i)
    log.close()
    out = CliRunner().invoke(cli, ["events", "--file", str(f), "--json", "-n", "2"])
    assert [json.loads(x)["version"] for x in out.output.splitlines()] == [3, 4]


class _Follower:
    """`jvpn-xdp events --follow --json` in a process of its own; its lines
    arrive in a queue (a read that cannot hang the test)."""

    def __init__(self, f, *args):
        self.proc = subprocess.Popen(
            [JVPN_XDP, "events", "--file", str(f), "--json", "--follow", *args],
            stdout=subprocess.PIPE, text=True)
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.put(line)

    def versions(self, n: int) -> list[int]:
        return [json.loads(self.lines.get(timeout=10))["version"] for _ in range(n)]

    def wait_open(self, f) -> None:
        """Until the process has ``f`` open (it has read what was there)."""
        fds = f"/proc/{self.proc.pid}/fd"

        def has_it() -> bool:
            try:
                return any(os.readlink(f"{fds}/{fd}") == str(f) for fd in os.listdir(fds))
            except OSError:
                return False
        _wait_for(has_it, timeout=20)

    def nothing_more(self) -> bool:
        time.sleep(0.5)
        return self.lines.empty()

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


def test_follow_prints_the_last_ten_then_only_new_events_across_rotation(tmp_path):
    f = tmp_path / "e.jsonl"
    log = EventLog("gw", f, max_bytes=4096, keep=1)  # about 29 lines a file
    for i in range(20):
        log.emit("X", "N", version=i)
    follower = _Follower(f)
    try:
        assert follower.versions(10) == list(range(10, 20))  # tail's default: the last 10
        assert follower.nothing_more()
        for i in range(20, 60):  # two rotations (tail -F: one at a time is seen)
            log.emit("X", "N", version=i)
            assert follower.versions(1) == [i]
        assert (tmp_path / "e.jsonl.1").exists()
    finally:
        follower.stop()
        log.close()


def test_follow_with_zero_lines_prints_only_new_events(tmp_path):
    f = tmp_path / "e.jsonl"
    log = EventLog("gw", f)
    for i in range(3):
        log.emit("X", "N", version=i)
    follower = _Follower(f, "-n", "0")
    try:
        follower.wait_open(f)
        assert follower.nothing_more()
        log.emit("X", "N", version=99)
        assert follower.versions(1) == [99]
    finally:
        follower.stop()
        log.close()


def test_gateway_started_names_its_address_not_a_tuple(tmp_path):
    events = EventLog("gw-test")
    gw = make_gateway(tmp_path, events=events)
    gw.start()
    try:
        [started] = events_of(events, "GatewayStarted")
        assert started["listen"] == "127.0.0.1:51820"
    finally:
        gw.stop()


def test_listen_names_for_both_families():
    assert listen_name(("0.0.0.0", 51900)) == "0.0.0.0:51900"
    assert listen_name(("::", 51900, 0, 0)) == "[::]:51900"
    sock = open_listener(ANY, 0, 1 << 16, warn=lambda _line: None)
    try:
        port = sock.getsockname()[1]
        assert listen_name(sock.getsockname()) in (f"[::]:{port}", f"0.0.0.0:{port}")
    finally:
        sock.close()
