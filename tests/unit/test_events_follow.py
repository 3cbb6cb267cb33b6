"""`events --follow` (jvpn.events.follow) on a file changed under it: a
truncation in place (copytruncate) is said and read again from its start,
with no half line of the old content spoiling the first new one; a line
with no newline is held at most MAX_LINE bytes, then dropped and said."""

from __future__ import annotations

import json
import threading
import time

from click.testing import CliRunner

from jvpn.events import MAX_LINE, follow
from jvpn_cli.main import cli


def _wait_for(cond, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond() and time.monotonic() < deadline:
        time.sleep(0.005)
    assert cond()


def line(n: int) -> str:
    return json.dumps({"n": n}) + "\n"


class Follower:
    def __init__(self, path):
        self.seen, self.notes, self.stop = [], [], threading.Event()
        self.thread = threading.Thread(target=self._run, args=(path,))
        self.thread.start()

    def _run(self, path) -> None:
        for ev in follow(path, poll_s=0.005, stop=self.stop.is_set, note=self.notes.append):
            self.seen.append(ev["n"])

    def end(self) -> None:
        self.stop.set()
        self.thread.join()


def test_a_truncation_in_place_is_said_and_read_from_the_start(tmp_path):
    f = tmp_path / "e.jsonl"
    f.write_text(line(0) + line(1) + line(2) + '{"n": 9')  # the writer mid-line
    fol = Follower(f)
    try:
        _wait_for(lambda: fol.seen == [0, 1, 2])
        with open(f, "r+") as w:
            w.truncate(0)  # logrotate copytruncate: same inode, shorter
        _wait_for(lambda: fol.notes)
        with open(f, "a") as w:
            w.write(line(10) + line(11))
        _wait_for(lambda: len(fol.seen) >= 5)
    finally:
        fol.end()
    assert fol.seen == [0, 1, 2, 10, 11]
    assert fol.notes == [f"{f}: truncated in place: following it from its start"]


def test_a_line_without_newline_is_bounded_then_dropped_and_said(tmp_path):
    f = tmp_path / "e.jsonl"
    f.write_text(line(0))
    fol = Follower(f)
    try:
        _wait_for(lambda: fol.seen == [0])
        with open(f, "a") as w:
            w.write("x" * (3 * MAX_LINE))  # no newline yet: held up to MAX_LINE only
            w.flush()
            _wait_for(lambda: fol.notes)
            w.write("tail of it\n" + line(1))
        _wait_for(lambda: fol.seen == [0, 1])
    finally:
        fol.end()
    assert fol.notes == [f"{f}: dropped a line of over {MAX_LINE} bytes with no newline"]


def test_the_cli_says_it_on_stderr(tmp_path, monkeypatch):
    f = tmp_path / "e.jsonl"
    f.write_text(line(0))
    calls = []

    def fake_follow(path, last, note):
        calls.append((path, last))
        note("something happened")
        yield {"n": 0, "event_type": "X", "reason_code": "Y", "ts_ms": 0}

    monkeypatch.setattr("jvpn.events.follow", fake_follow)
    r = CliRunner().invoke(cli, ["events", "--file", str(f), "--follow"])
    assert r.exit_code == 0, r.output
    assert "note: something happened" in r.stderr and calls == [(f, 10)]
