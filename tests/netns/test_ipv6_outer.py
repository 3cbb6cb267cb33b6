"""Issue 11, IPv6 outside: the gateway reached over IPv6, with the XDP gate
attached and gating it. The client's Endpoint is the gateway's IPv6 address
(the roaming lab with IPv6 on every link); data flows through the tunnel and
the gate's pass counters rise; a datagram for the session forged from
another IPv6 source (with the session's own header key: only the binding can
refuse it) is dropped in XDP and changes nothing; a jump wifi -> lte over
IPv6 keeps the session (reattach)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from jvpn.gate import abi
from jvpn.gate.pins import GateMaps
from jvpn.lab.addresses import (
    ATTACKER_IP6,
    GW_INNER,
    GW_IP6,
    LTE_IP6,
    PORT,
    WIFI_IP6,
)
from jvpn.lab.tunnel import TunnelLab
from kits.threat_kit import counters, data_message, delta, snapshot, victim

pytestmark = pytest.mark.kernel


@pytest.fixture(scope="module")
def tl6(tmp_path_factory):
    t = TunnelLab(tmp_path_factory.mktemp("lab6"), ipv6=True).up()
    yield t
    t.down()


def _session(tl):
    [(iface, sessions)] = tl.cli_json("sessions", "gw0").items()
    assert iface == "gw0" and len(sessions) == 1
    return sessions[0]


def _ping(tl, count: int = 5) -> None:
    out = tl.lab.run("cl", "ping", "-c", str(count), "-i", "0.2", "-W", "2", GW_INNER,
                     check=False)
    assert out.returncode == 0, out.stdout + out.stderr + tl.logs()


def _element(tl, sid: int) -> abi.Session:
    with GateMaps(Path(tl.env["JVPN_PIN_ROOT"]) / "gw0") as maps:
        return maps.get_session(sid)


def test_the_session_is_bound_to_the_clients_ipv6_transport(tl6):
    s = _session(tl6)
    assert s["bound"].startswith(f"[{WIFI_IP6}]:"), s
    element = _element(tl6, int(s["session_id"], 16))
    assert element.bind_family == abi.AF_INET6
    assert abi.words_addr(element.bind_addr, abi.AF_INET6) == WIFI_IP6


def test_data_over_ipv6_passes_the_gate(tl6):
    before = counters(tl6)
    _ping(tl6, 5)
    moved = delta(before, counters(tl6))
    assert moved.get("pass_data", 0) >= 5, moved  # the echo requests, through XDP
    assert not {k for k in moved if k.startswith("drop_")}, moved


def test_a_datagram_forged_from_another_ipv6_source_is_dropped_in_xdp(tl6):
    sid, keys = victim(tl6)
    before, state = counters(tl6), snapshot(tl6, sid)
    forged = data_message(sid, keys.hdr_c2s, 2**40)  # a valid tag: only the binding refuses it
    with tl6.lab.socket("atk", socket.AF_INET6, socket.SOCK_DGRAM) as s:
        s.bind((ATTACKER_IP6, 0))
        s.sendto(forged, (GW_IP6, PORT))
        s.settimeout(1.0)
        with pytest.raises(TimeoutError):
            s.recvfrom(2048)  # nothing comes back
    assert delta(before, counters(tl6)).get("drop_wrong_binding") == 1
    assert snapshot(tl6, sid) == state


def test_a_jump_wifi_to_lte_over_ipv6_keeps_the_session(tl6):
    first = _session(tl6)
    n = len(tl6.gateway_events())
    tl6.lab.link("cl", "wifi", "down")
    tl6.wait(lambda: any(e["event_type"] == "ReattachResult"
                         and e["reason_code"] == "REATTACH_ACCEPT"
                         for e in tl6.gateway_events()[n:]), "reattach over IPv6")
    after = _session(tl6)
    assert after["session_id"] == first["session_id"] and after["state"] == "ATTACHED"
    assert after["bound"].startswith(f"[{LTE_IP6}]:"), after
    assert after["version"] > first["version"]
    _ping(tl6, 3)
    new = tl6.gateway_events()[n:]
    assert not [e for e in new if e["reason_code"] == "HANDSHAKE_OK"]  # no new session
