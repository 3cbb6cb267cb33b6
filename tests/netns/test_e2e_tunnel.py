"""End to end in namespaces: a TCP stream through the tunnel keeps its bytes
intact (checksummed) while the client jumps wifi -> lte -> wifi, across a NAT
rebinding, and across a gateway daemon restart; same session throughout."""

from __future__ import annotations

import time

import pytest

from jvpn.lab.addresses import (
    ATTACKER_IP,
    GW_IP,
    LTE_IP,
    PORT,
    UPLINK_METRIC,
    UPLINK_ROUTER_IP,
    WIFI_IP,
)
from jvpn.lab.tunnel import TunnelLab

pytestmark = pytest.mark.kernel


@pytest.fixture
def tl(tmp_path):
    t = TunnelLab(tmp_path).up()
    yield t
    t.down()


def _accepts(events):
    return [e for e in events if e["event_type"] == "ReattachResult"
            and e["reason_code"] == "REATTACH_ACCEPT"]


def _one_session(tl):
    [(iface, sessions)] = tl.cli_json("sessions", "gw0").items()
    assert iface == "gw0" and len(sessions) == 1
    return sessions[0]


def test_stream_survives_two_address_changes(tl):
    first = _one_session(tl)
    assert first["bound"].startswith(WIFI_IP)
    finish = tl.stream(6_000_000, 7.0)
    time.sleep(2.0)
    tl.lab.link("cl", "wifi", "down")          # wifi -> lte
    tl.wait(lambda: len(_accepts(tl.gateway_events())) >= 1, "first reattach")
    assert _one_session(tl)["bound"].startswith(LTE_IP)
    time.sleep(1.5)
    tl.lab.link("cl", "wifi", "up")
    tl.lab.run("cl", "ip", "route", "replace", "default", "via", UPLINK_ROUTER_IP["wifi"],
               "dev", "wifi", "metric", str(UPLINK_METRIC["wifi"]))
    tl.lab.link("cl", "lte", "down")           # lte -> wifi
    tl.wait(lambda: len(_accepts(tl.gateway_events())) >= 2, "second reattach")
    sent, received = finish()
    assert sent == received and sent["bytes"] == 6_000_000
    last = _one_session(tl)
    assert last["session_id"] == first["session_id"]
    assert last["bound"].startswith(WIFI_IP) and last["state"] == "ATTACHED"
    assert last["version"] > first["version"]
    hs = [e for e in tl.gateway_events() if e["reason_code"] == "HANDSHAKE_OK"]
    assert len(hs) == 1  # never a silent new session
    states = [e["new_state"] for e in tl.gateway_events() if e["event_type"] ==
              "SessionStateChange"]
    assert states[:4] == ["ATTACHED", "VOLATILE", "RECOVERING", "ATTACHED"]


def test_stream_survives_nat_rebinding(tmp_path):
    tl = TunnelLab(tmp_path, nat=True).up()
    try:
        before = _one_session(tl)
        finish = tl.stream(3_000_000, 5.0)
        time.sleep(1.5)
        tl.lab.nat_rebind()
        tl.wait(lambda: len(_accepts(tl.gateway_events())) >= 1, "reattach after rebinding")
        sent, received = finish()
        assert sent == received
        after = _one_session(tl)
        assert after["session_id"] == before["session_id"]
        assert after["bound"] != before["bound"]  # same NAT address, new port
    finally:
        tl.down()


def test_daemon_restart_mid_transfer_loses_no_session(tl):
    before = _one_session(tl)
    finish = tl.stream(3_000_000, 5.0)
    time.sleep(1.5)
    tl.stop_gateway()
    # while no daemon runs: a map element the store does not know (left behind)
    from pathlib import Path

    from jvpn.gate import abi
    from jvpn.gate.pins import GateMaps
    with GateMaps(Path(tl.env["JVPN_PIN_ROOT"]) / "gw0") as maps:
        maps.put_session(0xDEAD, abi.Session(state=abi.STATE_ATTACHED))
    time.sleep(0.5)
    tl.start_gateway()
    sent, received = finish()
    assert sent == received
    after = _one_session(tl)  # the stale element is gone, the live one kept
    assert after["session_id"] == before["session_id"]
    rec = [e for e in tl.gateway_events() if e["event_type"] == "Reconciled"]
    assert rec[-1]["sessions"] == 1 and rec[-1]["removed_from_maps"] == 1


def test_handshake_under_load_goes_through_a_cookie(tmp_path):
    """HandshakesPerSecond = 0: every initiation is answered with a cookie
    first; the client retries with mac2 and gets its session."""
    tl = TunnelLab(tmp_path, gateway_extra="HandshakesPerSecond = 0\n").up()
    try:
        _one_session(tl)
        assert not [e for e in tl.gateway_events() if e["event_type"] == "HandshakeRejected"]
        assert [e for e in tl.client_event_list() if e["event_type"] == "HandshakeCookie"]
    finally:
        tl.down()


def test_forged_packets_from_the_attacker_reach_the_event_stream(tl):
    """A packet with a forged tag for the victim's session, from the attacker's
    namespace: dropped in XDP, and the sampled drop joins the events."""
    import sys

    sid = int(_one_session(tl)["session_id"], 16)
    send = (f"import socket; from jvpn import wire; from jvpn.gate import abi; "
            f"s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
            f"m = wire.message(wire.Header(type=abi.MSG_DATA, session_id={sid}, counter=99), "
            f"bytes(16), b'x' * 40); s.sendto(m, ({GW_IP!r}, {PORT}))")
    tl.lab.run("atk", sys.executable, "-c", send)
    tl.wait(lambda: any(e["event_type"] == "XdpSecurityDrop" and
                         e["reason_code"] == "DROP_BAD_TAG" for e in tl.gateway_events()),
            "the XDP event")
    ev = [e for e in tl.gateway_events() if e["event_type"] == "XdpSecurityDrop"][-1]
    assert ev["transport_id"].startswith(f"{ATTACKER_IP}:") and ev["where"] == "xdp"
    assert ev["session_id"] == f"{sid:016x}"
