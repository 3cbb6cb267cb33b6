"""Review R1 in the kernel lab: the real client and the real gateway (XDP
gate) rekey only when the gateway asks (a short `rekey_after_ms`), again and
again, while a TCP stream keeps its bytes; no rekey is refused as unasked,
none is named a second key holder, and the session never changes."""

from __future__ import annotations

import pytest

from jvpn.lab.running import lab_policy
from jvpn.lab.tunnel import TunnelLab

pytestmark = pytest.mark.kernel

KEYS = """[keys]
rekey_after_ms = 400
reject_after_ms = 4000
rekey_overlap_ms = 200
"""


def _of(events, event_type):
    return [e for e in events if e["event_type"] == event_type]


def test_asked_rekeys_run_under_a_stream_and_nothing_is_refused(tmp_path):
    tl = TunnelLab(tmp_path, policy=lab_policy() + KEYS).up()
    try:
        finish = tl.stream(3_000_000, 6.0)
        tl.wait(lambda: len([e for e in _of(tl.gateway_events(), "KeyRotated")
                             if e["reason_code"] == "REKEY_CONFIRMED"]) >= 5, "five rekeys",
                timeout=20)
        sent, received = finish()
        events = tl.gateway_events()
        assert sent == received and sent["bytes"] == 3_000_000
        assert _of(events, "RekeyDenied") == []
        assert _of(events, "SecurityKeyCompromiseSuspected") == []
        assert _of(events, "KeyExpired") == []
        [(_iface, [session])] = tl.cli_json("sessions", "gw0").items()
        assert session["key_epoch"] >= 5
    finally:
        tl.down()
