"""The event stream: JSON lines with the base fields; `jvpn-xdp events`."""

import io
import json
import threading
import time

from click.testing import CliRunner

from jvpn.codes import EventType, Reason
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



def test_a_line_is_the_text_json_dumps_with_sorted_keys_writes(tmp_path):
    """The line's encoder is made once (issue 15): the text is still what
    json.dumps(sort_keys=True) writes, for an authenticated event (str enums,
    non-ASCII, a float) and for a summary (nested lists and dicts)."""
    log = EventLog("gw-\u00e9", tmp_path / "e.jsonl", clock_ms=lambda: 1234.5,
                   summary_interval_ms=10)
    log.emit(EventType.SESSION_STATE_CHANGE, Reason.HANDSHAKE_OK, 0xAB,
             Transport("192.0.2.1", 5), version=1, detail="caf\u00e9 \"quoted\"\n",
             z_last=2.5, a_first=None, nested={"b": [1, "x"], "a": True})
    log.emit_unauthenticated(EventType.HANDSHAKE_REJECTED, Reason.HANDSHAKE_FAIL,
                             Transport("198.51.100.7", 9), detail="bad mac1")
    log.close()
    lines = (tmp_path / "e.jsonl").read_text().splitlines()
    assert len(lines) == 2
    for line, ev in zip(lines, list(log.recent), strict=True):
        assert line == json.dumps(ev, sort_keys=True)


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
