"""Issue 10 item 13: with XdpInterface set, the daemon takes only what the
gate checked. A datagram that reaches the gateway's host by another way
(``lo``, a second interface) reaches no jvpn socket; a detach under a
running gateway stops it, loudly, within a bounded time."""

from __future__ import annotations

import time

import pytest

from jvpn.gate import abi
from jvpn.lab.addresses import GW_IP
from jvpn.lab.tunnel import TunnelLab
from kits.threat_kit import answered_initiation

pytestmark = pytest.mark.kernel

SIDE_GW, SIDE_ATK = "10.77.5.1", "10.77.5.2"  # a second link, gateway -- attacker



def test_only_datagrams_that_crossed_the_gate_reach_the_daemon(tl):
    tl.lab.veth("gw", "gw1", f"{SIDE_GW}/24", "atk", "atk1", f"{SIDE_ATK}/24")
    assert answered_initiation(tl, "gw", "127.0.0.1") is None    # lo
    assert answered_initiation(tl, "gw", GW_IP) is None          # the gate's address, but over lo
    assert answered_initiation(tl, "atk", SIDE_GW) is None       # a second NIC without the gate
    got = answered_initiation(tl, "atk", GW_IP)                  # through gw0 and its gate
    assert got is not None and got[0] == abi.MSG_HANDSHAKE_RESP


def test_a_detach_under_a_running_gateway_stops_it_loudly(tmp_path):
    tl = TunnelLab(tmp_path).up()
    try:
        out = tl.jvpn_in("gw", tl.env, "detach", "gw0", "--force")  # it holds the gate
        assert out.returncode == 0, out.stderr
        detached_ms = time.time_ns() // 1_000_000
        tl.wait(lambda: tl.gateway.poll() is not None, "the gateway to stop", timeout=8)
        assert tl.gateway.returncode == 1
        last = (tmp_path / "gateway.log").read_text().strip().splitlines()[-1]
        assert last.startswith("error: the XDP gate is gone"), last
        lost = [e for e in tl.gateway_events() if e["event_type"] == "GateLost"]
        assert [e["reason_code"] for e in lost] == ["GATE_DETACHED"]
        assert lost[0]["ts_ms"] - detached_ms < 1_000  # the watch runs every 0.5 s
    finally:
        tl.lab.down()
        tl.unpin(tl.env["JVPN_PIN_ROOT"])
