"""Full tunnel in namespaces (issue 11): a client with ``AllowedIPs =
0.0.0.0/0`` reaches a host behind the gateway that is not in the inner
network, through the tunnel and the gateway's masquerade (the nftables block
of docs/full-tunnel.md, applied as written), while its own outer datagrams
still leave by the uplink; a jump wifi -> lte still works; after the client
stops its rules and its table are gone. The same block lets nobody outside
open a connection to a client."""

from __future__ import annotations

import ipaddress
import os
import socket
from pathlib import Path

import pytest

from jvpn.client_routes import RULE_PRIORITY
from jvpn.config import DEFAULT_FWMARK, DEFAULT_TABLE
from jvpn.lab.addresses import (
    CLIENT_INNER,
    CLIENT_INNER6,
    ECHO_PORT,
    GW_INNER,
    GW_INNER6,
    GW_IP,
    GW_IP6,
    GW_TUN,
    INET_GW_IF,
    INET_GW_IP,
    INET_IP,
    INNER_PREFIX,
    LTE_IP,
    LTE_IP6,
    ROUTES_SUBNET,
    UPLINK_ROUTER_IP,
    WIFI_IP,
    WIFI_IP6,
)
from jvpn.lab.full_tunnel import FullTunnelLab
from jvpn.lab.running import write_secret

pytestmark = pytest.mark.kernel

DOC = Path(__file__).resolve().parents[2] / "docs" / "full-tunnel.md"
MARK = hex(DEFAULT_FWMARK)


def doc_ruleset() -> str:
    """The gateway's nftables block from docs/full-tunnel.md, with the lab's
    uplink (towards the inet host) for the doc's ``eth0``."""
    block = DOC.read_text().split("```nft\n", 1)[1].split("```", 1)[0]
    inner = ipaddress.ip_interface(f"{GW_INNER}/{INNER_PREFIX}").network
    assert f'"{GW_TUN}"' in block and str(inner) in block  # the lab's names are the doc's
    return block.replace('"eth0"', f'"{INET_GW_IF}"')


@pytest.fixture
def ftl(tmp_path):
    # keepalives 1 s apart: see test_full_tunnel_over_an_ipv6_outer_path_across_a_jump
    t = FullTunnelLab(tmp_path, allowed_ips="0.0.0.0/0", nat_rules=doc_ruleset(),
                      keepalive_s=1.0).up()
    yield t
    t.down()


class Echo:
    """A UDP exchange from the client's side to the inet host and back, on
    sockets in each namespace: what source address the inet host saw."""

    def __init__(self, ftl: FullTunnelLab):
        self.server = ftl.lab.socket("inet", socket.AF_INET, socket.SOCK_DGRAM)
        self.server.bind((INET_IP, ECHO_PORT))
        self.client = ftl.lab.socket("cl", socket.AF_INET, socket.SOCK_DGRAM)  # unmarked
        for s in (self.server, self.client):
            s.settimeout(0.5)

    def seen_from(self) -> str | None:
        nonce = os.urandom(8)
        self.client.sendto(nonce, (INET_IP, ECHO_PORT))
        try:
            while True:
                msg, src = self.server.recvfrom(64)
                if msg == nonce:
                    break
            self.server.sendto(nonce, src)
            while self.client.recvfrom(64)[0] != nonce:
                pass
        except TimeoutError:
            return None
        return src[0]

    def close(self) -> None:
        self.server.close()
        self.client.close()


def _bound(ftl) -> str:
    [(_iface, [session])] = ftl.cli_json("sessions", "gw0").items()
    return session["bound"]


def _accepts(ftl) -> int:
    return sum(1 for e in ftl.gateway_events() if e["event_type"] == "ReattachResult"
               and e["reason_code"] == "REATTACH_ACCEPT")


def _first_reattach(ftl) -> dict:
    """The client's first ReattachAttempt event: its detail names the cause."""
    [first] = [e for e in ftl.client_event_list() if e["event_type"] == "ReattachAttempt"][:1]
    return first


def _path_change(detail: str) -> bool:
    """A reattach the route watch started: the uplink is gone, so lte's
    candidate socket takes over (docs/protocol.md "Transport selection"), or
    a fresh socket on the new route when no candidate was proven yet."""
    return detail == "local transport changed" or detail.startswith(
        "transport_dead: switching to lte")


def _ours(ftl) -> list[dict]:
    return [r for r in ftl.rules() if r["priority"] in (RULE_PRIORITY, RULE_PRIORITY + 1)]


def test_full_tunnel_reaches_a_host_behind_the_gateway_across_a_jump(ftl):
    assert len(_ours(ftl)) == 2
    assert [(r["dst"], r["dev"]) for r in ftl.table(DEFAULT_TABLE)] == [("default", "jvpn0")]
    # everything goes into the tunnel, except what carries the mark: the outer socket
    assert ftl.route_get(GW_IP)["dev"] == "jvpn0"
    assert ftl.route_get(GW_IP, "mark", MARK)["dev"] == "wifi"
    assert _bound(ftl).startswith(f"{WIFI_IP}:")  # the outer datagrams left by the uplink
    echo = Echo(ftl)
    try:
        tx = ftl.tun_tx_packets()
        # the inet host has no route to the client: only the gateway's masquerade answers
        assert ftl.wait(lambda: echo.seen_from() == INET_GW_IP, "through the tunnel") >= 0
        assert ftl.tun_tx_packets() > tx
        ftl.lab.link("cl", "wifi", "down")  # wifi -> lte, under full tunnel
        ftl.wait(lambda: _accepts(ftl) >= 1, "reattach from lte")
        assert _bound(ftl).startswith(f"{LTE_IP}:")
        assert ftl.route_get(GW_IP, "mark", MARK)["dev"] == "lte"
        # seen as a path change (the marked route lookup: the uplink is gone, a
        # candidate's socket takes over; docs/protocol.md "Transport selection"),
        # not only as missing replies
        first = _first_reattach(ftl)
        assert _path_change(first["detail"]), first
        ftl.wait(lambda: echo.seen_from() == INET_GW_IP, "through the tunnel after the jump")
    finally:
        echo.close()
    hs = [e for e in ftl.gateway_events() if e["reason_code"] == "HANDSHAKE_OK"]
    assert len(hs) == 1  # the same session throughout
    ftl.client.terminate()
    assert ftl.client.wait(timeout=15) == 0, ftl.logs()
    assert _ours(ftl) == [] and ftl.table(DEFAULT_TABLE) == [] and not ftl.nft_table()
    assert ftl.lab.run("cl", "ip", "link", "show", "jvpn0", check=False).returncode != 0


def test_strict_rp_filter_and_no_way_to_the_inner_address_from_the_lan(tmp_path):
    """With a strict reverse-path filter on the client the gateway's replies
    still pass (the mark restored from conntrack, src_valid_mark); and a
    neighbour on the Wi-Fi cannot reach the inner address directly: dropped
    by the client's guard, which is what stops it (without it, it answers)."""
    ftl = FullTunnelLab(tmp_path, allowed_ips="0.0.0.0/0", nat_rules=doc_ruleset())
    strict = ("sysctl", "-qw", "net.ipv4.conf.all.rp_filter=1")
    ftl.up(before_client=lambda: ftl.lab.run("cl", *strict))
    echo = Echo(ftl)
    try:
        ftl.wait(lambda: echo.seen_from() == INET_GW_IP, "through the tunnel, strict rp_filter")
        assert ftl.nft_table()
        ftl.lab.route("rt", f"{CLIENT_INNER}/32", "via", WIFI_IP)
        ping = ("ping", "-c", "2", "-W", "1", "-i", "0.3", CLIENT_INNER)
        assert ftl.lab.run("rt", *ping, check=False).returncode != 0
        ftl.lab.run("cl", "nft", "flush", "chain", "inet", "jvpn-jvpn0", "preraw")
        assert ftl.lab.run("rt", *ping, check=False).returncode == 0
    finally:
        echo.close()
        ftl.down()


def test_the_gateway_block_lets_nobody_outside_reach_a_client(ftl):
    """The inet host routes the inner network to the gateway: its packets to
    the client are dropped by the doc's forward chain; with an accept put in
    front of it they arrive (so the drop, not the lab, is what stopped them)."""
    ftl.lab.route("inet", f"{ipaddress.ip_interface(f'{CLIENT_INNER}/{INNER_PREFIX}').network}",
                  "via", INET_GW_IP)
    ping = ("ping", "-c", "2", "-W", "1", "-i", "0.3", CLIENT_INNER)
    assert ftl.lab.run("inet", *ping, check=False).returncode != 0
    ftl.lab.run("gw", "nft", "insert", "rule", "inet", "jvpn_gateway", "forward",
                "oifname", GW_TUN, "accept")
    assert ftl.lab.run("inet", *ping, check=False).returncode == 0


def test_a_start_that_cannot_route_leaves_nothing_behind(ftl):
    """A second `client up` whose AllowedIPs hold a route the main table
    already has (someone else's): it exits 1 with one line naming the route,
    and its rules, its table and its TUN are gone; the route it met is kept."""
    ftl.client.terminate()
    assert ftl.client.wait(timeout=15) == 0
    ftl.lab.route("cl", ROUTES_SUBNET, "via", UPLINK_ROUTER_IP["wifi"], "dev", "wifi")
    conf = ftl.tmp / "client.conf"
    write_secret(conf, conf.read_text().replace("AllowedIPs = 0.0.0.0/0",
                                                f"AllowedIPs = 0.0.0.0/0, {ROUTES_SUBNET}"))
    out = ftl.jvpn_in("cl", ftl.client_env(), "client", "up", "--config", str(conf))
    assert out.returncode == 1, (out.stdout, out.stderr)
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and f"route {ROUTES_SUBNET} dev jvpn0: the table" in lines[0], lines
    assert _ours(ftl) == [] and ftl.table(DEFAULT_TABLE) == [] and not ftl.nft_table()
    assert ftl.lab.run("cl", "ip", "link", "show", "jvpn0", check=False).returncode != 0
    assert f"{ROUTES_SUBNET} via" in ftl.lab.run("cl", "ip", "-4", "route").stdout


def test_ipv6_full_tunnel_through_ip6_rules(tmp_path):
    """``::/0`` with an inner IPv6 from the gateway: the client's IPv6 is a
    /128 (no connected route), so its packets to the gateway's inner IPv6
    reach it only through the tunnel's table by the ``ip -6`` rules."""
    ftl = FullTunnelLab(tmp_path, allowed_ips="0.0.0.0/0, ::/0", nat_rules=doc_ruleset(),
                        inner6=True).up()
    try:
        ftl.wait(lambda: f"{CLIENT_INNER6}/128" in ftl.lab.run(
            "cl", "ip", "-6", "addr", "show", "jvpn0", check=False).stdout, "client inner IPv6")
        rules6 = [r for r in ftl.rules("-6") if r["priority"] in (RULE_PRIORITY,
                                                                   RULE_PRIORITY + 1)]
        assert [(r["table"], r.get("fwmark")) for r in rules6] == [
            ("main", None), (str(DEFAULT_TABLE), MARK)]
        assert [r["dev"] for r in ftl.table(DEFAULT_TABLE, "-6")] == ["jvpn0"]
        assert ftl.lab.run("cl", "ping", "-6", "-c", "2", "-W", "2", "-i", "0.3", GW_INNER6,
                           check=False).returncode == 0
        ftl.client.terminate()
        assert ftl.client.wait(timeout=15) == 0, ftl.logs()
        assert [r for r in ftl.rules("-6") if r["priority"] in (RULE_PRIORITY,
                                                                  RULE_PRIORITY + 1)] == []
    finally:
        ftl.down()


def test_full_tunnel_over_an_ipv6_outer_path_across_a_jump(tmp_path):
    """The gateway reached over IPv6 (the lab's IPv6 uplinks), ``0.0.0.0/0,
    ::/0``: the IPv6 outer socket is marked too, so its datagrams leave by the
    uplink while ``::/0`` goes into the tunnel; the marked IPv6 lookup sees the
    jump wifi -> lte as a path change."""
    # keepalives 1 s apart (3 s of missing replies before that cause): the
    # route watch wins even on a loaded machine, so the first reattach names it
    ftl = FullTunnelLab(tmp_path, allowed_ips="0.0.0.0/0, ::/0", nat_rules=doc_ruleset(),
                        ipv6=True, keepalive_s=1.0).up()
    echo = Echo(ftl)
    try:
        assert _bound(ftl).startswith(f"[{WIFI_IP6}]:")
        assert ftl.route_get(GW_IP6)["dev"] == "jvpn0"
        assert ftl.route_get(GW_IP6, "mark", MARK)["dev"] == "wifi"
        ftl.wait(lambda: echo.seen_from() == INET_GW_IP, "through the tunnel")
        ftl.lab.link("cl", "wifi", "down")
        ftl.wait(lambda: _accepts(ftl) >= 1, "reattach from lte over IPv6")
        assert _bound(ftl).startswith(f"[{LTE_IP6}]:")
        first = _first_reattach(ftl)
        assert _path_change(first["detail"]), first
        ftl.wait(lambda: echo.seen_from() == INET_GW_IP, "through the tunnel after the jump")
    finally:
        echo.close()
        ftl.down()
