"""Issue 11, IPv6 outside: the gateway reached over IPv6, with the XDP gate
attached and gating it. The client's Endpoint is the gateway's IPv6 address
(the roaming lab with IPv6 on every link); data flows through the tunnel and
the gate's pass counters rise; a datagram for the session forged from
another IPv6 source (with the session's own header key: only the binding can
refuse it) is dropped in XDP and changes nothing; a jump wifi -> lte over
IPv6 keeps the session (reattach); the daemon's one dual-stack socket, bound
to the gate's interface with its socket filter, hears IPv6 and IPv4 that
crossed the gate and nothing that came another way."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from jvpn.gate import abi
from jvpn.gate.pins import GateMaps
from jvpn.lab.addresses import (
    ATTACKER_IP6,
    GW_INNER,
    GW_IP,
    GW_IP6,
    LAN6_PREFIX,
    LTE_IP6,
    PORT,
    SIDE_ATK_IP6,
    SIDE_GW_IP6,
    WIFI_IP6,
)
from jvpn.lab.tunnel import TunnelLab
from kits.threat_kit import answered_initiation, counters, data_message, delta, snapshot, victim

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
    before, rx_before = counters(tl6), _session(tl6)["rx_packets"] or 0
    _ping(tl6, 5)
    moved = delta(before, counters(tl6))
    assert moved.get("pass_data", 0) >= 5, moved  # the echo requests, through XDP
    assert not {k for k in moved if k.startswith("drop_")}, moved
    assert (_session(tl6)["rx_packets"] or 0) >= rx_before + 5  # the session's own count


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



def test_the_dual_stack_socket_hears_only_what_crossed_the_gate(tl6):
    """Last in the module: the initiations leave unconfirmed sessions behind."""
    tl6.lab.veth("gw", "gw1", None, "atk", "atk1", None)
    tl6.lab.run("gw", "ip", "-6", "addr", "add", f"{SIDE_GW_IP6}/{LAN6_PREFIX}", "dev", "gw1",
                "nodad")
    tl6.lab.run("atk", "ip", "-6", "addr", "add", f"{SIDE_ATK_IP6}/{LAN6_PREFIX}", "dev",
                "atk1", "nodad")
    assert answered_initiation(tl6, "gw", "::1") is None          # lo
    assert answered_initiation(tl6, "gw", GW_IP6) is None         # the gate's address, but over lo
    assert answered_initiation(tl6, "atk", SIDE_GW_IP6) is None   # a second NIC without the gate
    for dst in (GW_IP6, GW_IP):                         # through gw0 and its gate: both families
        got = answered_initiation(tl6, "atk", dst)
        assert got is not None and got[0] == abi.MSG_HANDSHAKE_RESP, dst
