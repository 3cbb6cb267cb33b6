"""The key lifecycle's events (issue 13; docs/protocol.md "Key lifecycle
events"): the four the seed names carry the base fields and key_epoch, the
`events` command shows the epoch in its short form, and the protocol doc
describes each of them (a new one without its row fails)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from jvpn.codes import EventType, Reason, Security
from jvpn.events import EventLog
from jvpn_cli.events import short_line
from jvpn_cli.main import cli

DOC = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"
KEY_EVENTS = [(EventType.KEY_ROTATED, Reason.KEY_ROTATED),
              (EventType.REKEY_DENIED, Reason.RATE_LIMITED),
              (EventType.KEY_EXPIRED, Reason.KEY_EXPIRED),
              (EventType.SECURITY_KEY_COMPROMISE_SUSPECTED, Security.SEC_KEY_COMPROMISE_SUSPECTED)]


@pytest.mark.parametrize(("kind", "reason"), KEY_EVENTS)
def test_a_key_event_has_the_seeds_base_fields_and_its_epoch(tmp_path, kind, reason):
    f = tmp_path / "e.jsonl"
    log = EventLog("gw-a", f, policy_version=4, clock_ms=lambda: 1_700_000_000_123)
    log.emit(kind, reason, 0xAB, key_epoch=12)
    log.close()
    [ev] = [json.loads(line) for line in f.read_text().splitlines()]
    assert ev == {"ts_ms": 1_700_000_000_123, "event_type": str(kind), "reason_code": str(reason),
                  "session_id": "00000000000000ab", "node_id": "gw-a", "policy_version": 4,
                  "key_epoch": 12}
    line = short_line(ev)
    assert str(kind) in line and str(reason) in line and "key_epoch=12" in line
    out = CliRunner().invoke(cli, ["events", "--file", str(f), "--session", "ab"])
    assert out.exit_code == 0 and "key_epoch=12" in out.output


def test_epoch_zero_is_shown_too():
    ev = {"ts_ms": 0, "event_type": "KeyExpired", "reason_code": "KEY_EXPIRED",
          "session_id": "00000000000000ab", "key_epoch": 0}
    assert short_line(ev).endswith("key_epoch=0")


def _events_section() -> str:
    text = DOC.read_text()
    return text[text.index("\n## Events (jvpn/events.py)"):]


@pytest.mark.parametrize(("kind", "reason"), KEY_EVENTS)
def test_the_protocol_doc_describes_each_key_event(kind, reason):
    rows = [ln for ln in _events_section().splitlines() if ln.startswith(f"| `{kind}` |")]
    assert len(rows) == 1, f"docs/protocol.md 'Events': no row for {kind}"
    assert f"`{reason}`" in rows[0] and "`key_epoch`" in rows[0]
