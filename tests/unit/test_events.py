"""The event stream: JSON lines with the base fields; `jvpn-xdp events`."""

import io
import json
import threading
import time

from click.testing import CliRunner

from jvpn.events import EventLog, follow
from jvpn.session import Transport
from jvpn_cli.main import cli


def test_event_lines_have_the_base_fields(tmp_path):
    echo = io.StringIO()
    log = EventLog("gw-a", tmp_path / "e.jsonl", policy_version=3, echo=echo,
                   clock_ms=lambda: 1234)
    log.emit("SessionStateChange", "HANDSHAKE_OK", 0xAB, Transport("192.0.2.1", 5), version=1,
             previous_state="BIRTH", new_state="ATTACHED")
    log.close()
    [line] = (tmp_path / "e.jsonl").read_text().splitlines()
    ev = json.loads(line)
    assert ev == {"ts_ms": 1234, "event_type": "SessionStateChange", "session_id":
                  "00000000000000ab", "reason_code": "HANDSHAKE_OK", "node_id": "gw-a",
                  "policy_version": 3, "transport_id": "192.0.2.1:5", "version": 1,
                  "previous_state": "BIRTH", "new_state": "ATTACHED"}
    assert echo.getvalue().strip() == line


def test_events_command_filters_and_prints_json(tmp_path):
    f = tmp_path / "e.jsonl"
    log = EventLog("gw", f)
    log.emit("ReattachResult", "REATTACH_ACCEPT", 1)
    log.emit("ReattachResult", "AUTH_FAIL", 2)
    log.close()
    out = CliRunner().invoke(cli, ["events", "--file", str(f), "--json", "--session", "2"])
    assert out.exit_code == 0, out.output
    assert [json.loads(x)["reason_code"] for x in out.output.splitlines()] == ["AUTH_FAIL"]
    human = CliRunner().invoke(cli, ["events", "--file", str(f)])
    assert "REATTACH_ACCEPT" in human.output and "AUTH_FAIL" in human.output
    missing = CliRunner().invoke(cli, ["events", "--file", str(tmp_path / "none")])
    assert missing.exit_code == 1 and "error: no events file" in missing.output


def test_follow_sees_new_lines(tmp_path):
    f = tmp_path / "e.jsonl"
    log = EventLog("gw", f)
    seen, stop = [], threading.Event()

    def reader():
        for ev in follow(f, poll_s=0.01, stop=stop.is_set):
            seen.append(ev["reason_code"])

    t = threading.Thread(target=reader)
    t.start()
    log.emit("X", "FIRST")
    log.emit("X", "SECOND")
    deadline = time.monotonic() + 5
    while len(seen) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    stop.set()
    t.join()
    assert seen == ["FIRST", "SECOND"]
