"""Threat 4.5, forced churn (S6): switching faster than the policy allows
leads to DEGRADED (data blocked in XDP), then an explicit TERMINATED; the
client is told and stops instead of starting a new session."""

import time

import pytest

from jvpn.lab.running import lab_policy
from jvpn.lab.tunnel import TunnelLab

pytestmark = pytest.mark.kernel


def test_churn_degrades_then_terminates(tmp_path):
    tl = TunnelLab(tmp_path, policy=lab_policy(max_switches_per_min=2), nat=("wifi", "lte")).up()
    try:
        for _ in range(8):
            tl.lab.nat_rebind()
            time.sleep(1.5)
            if tl.client.poll() is not None:
                break
        states = [e["new_state"] for e in tl.gateway_events()
                  if e["event_type"] == "SessionStateChange"]
        assert "DEGRADED" in states and states[-1] == "TERMINATED"
        assert states.index("DEGRADED") < len(states) - 1
        tl.wait(lambda: tl.client.poll() is not None, "the client to stop")
        assert tl.client.returncode != 0
        ends = [e for e in tl.client_event_list() if e["event_type"] == "SessionTerminated"]
        assert ends, "the client was not told"
        hs = [e for e in tl.gateway_events() if e["reason_code"] == "HANDSHAKE_OK"]
        assert len(hs) == 1  # no silent new session
        assert tl.cli_json("sessions", "gw0")["gw0"] == []  # removed from the gate
    finally:
        tl.down()
