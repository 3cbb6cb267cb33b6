"""Inner addressing in namespaces (issue 11): IPv6 inside the tunnel through
the XDP-gated gateway; a subnet behind the client (site-to-site) reachable
from the gateway's side through the route the gateway installs with the
session; inner sources the peer does not own dropped and counted; and the
route gone once the session ended (and while the daemon is stopped, back
for the session it restores)."""

from __future__ import annotations

import json

import pytest

from jvpn.lab.addresses import (
    CLIENT_INNER,
    CLIENT_INNER6,
    GW_INNER,
    GW_INNER6,
    INNER6_PREFIX,
    INNER_PREFIX,
    SITE_CLIENT_IP,
    SITE_HOST_IP,
    SITE_NET,
    SITE_PREFIX,
    SPOOFED_INNER_SOURCES,
)
from jvpn.lab.running import lab_policy, write_secret
from jvpn.lab.tunnel import TunnelLab

pytestmark = pytest.mark.kernel

GW_TUN = "jvpn-gw"  # `gateway up`'s default TUN name


def _dual_stack(tl: TunnelLab) -> None:
    """The gateway gets an inner IPv6 network; the client's peer an IPv6
    address and the site's subnet."""
    conf = tl.tmp / "gateway.conf"
    text = conf.read_text().replace(
        f"Address = {GW_INNER}/{INNER_PREFIX}\n",
        f"Address = {GW_INNER}/{INNER_PREFIX}, {GW_INNER6}/{INNER6_PREFIX}\n")
    assert GW_INNER6 in text
    write_secret(conf, text)
    peers = tl.tmp / "peers.conf"
    text = peers.read_text().replace(
        f"AllowedIP = {CLIENT_INNER}/32\n",
        f"AllowedIPs = {CLIENT_INNER}/32, {CLIENT_INNER6}/128, {SITE_NET}\n")
    assert SITE_NET in text
    peers.write_text(text)


@pytest.fixture
def tl(tmp_path):
    # a short transport-lost TTL: a client that is gone ends its session in seconds
    policy = lab_policy().replace("transport_lost_ttl_ms = 15000", "transport_lost_ttl_ms = 2000")
    t = TunnelLab(tmp_path, policy=policy, extra_roles=("site",))
    _dual_stack(t)
    t.up()
    try:
        _wire_site(t)
        t.wait(lambda: CLIENT_INNER6 in t.lab.run("cl", "ip", "-6", "addr", "show", "jvpn0",
                                                  check=False).stdout, "client inner IPv6")
    except BaseException:
        t.down()
        raise
    yield t
    t.down()


def _wire_site(tl: TunnelLab) -> None:
    """A host behind the client: the client's namespace forwards for it."""
    lab = tl.lab
    lab.veth("cl", "site0", f"{SITE_CLIENT_IP}/{SITE_PREFIX}", "site", "eth0",
             f"{SITE_HOST_IP}/{SITE_PREFIX}")
    lab.route("site", "default", "via", SITE_CLIENT_IP)
    lab.run("cl", "sysctl", "-qw", "net.ipv4.ip_forward=1")
    for role in ("cl", "site"):
        lab.run(role, "sysctl", "-qw", "net.ipv4.conf.all.rp_filter=0")
    for ip in SPOOFED_INNER_SOURCES:  # addresses the site may send from, not the peer's
        lab.run("site", "ip", "addr", "add", f"{ip}/32", "dev", "lo")


def _ping(tl: TunnelLab, role: str, *args: str) -> bool:
    return tl.lab.run(role, "ping", "-c", "3", "-i", "0.2", "-W", "2", *args,
                      check=False).returncode == 0


def _routes(tl: TunnelLab) -> list[dict]:
    out = tl.lab.run("gw", "ip", "-j", "route", "show", "dev", GW_TUN).stdout
    return json.loads(out or "[]")


def _count(tl: TunnelLab, event_type: str) -> int:
    return sum(e["event_type"] == event_type for e in tl.gateway_events())


def _spoofed(tl: TunnelLab) -> int:
    return sum(e.get("count", 0) for e in tl.gateway_events()
               if e["reason_code"] == "SEC_INNER_SOURCE_SPOOFED")


def test_ipv6_inside_through_the_xdp_gate(tl):
    assert tl.xdp_on
    gw_addrs = tl.lab.run("gw", "ip", "-6", "addr", "show", GW_TUN).stdout
    assert f"{GW_INNER6}/{INNER6_PREFIX}" in gw_addrs
    before = _data_passed(tl)
    assert _ping(tl, "cl", "-6", GW_INNER6), tl.logs()   # client -> gateway's inner IPv6
    assert _ping(tl, "gw", "-6", CLIENT_INNER6), tl.logs()  # gateway -> client (downstream LPM)
    # the client's 3 echo requests and 3 echo replies went through the XDP gate as DATA
    assert _data_passed(tl) >= before + 6
    assert _ping(tl, "cl", GW_INNER), tl.logs()  # IPv4 inside still works


def _data_passed(tl: TunnelLab) -> int:
    return tl.cli_json("stats", "gw0")["gw0"]["pass_data"]["packets"]


def test_site_behind_the_client_spoofing_and_the_route_with_the_session(tl):
    [route] = [r for r in _routes(tl) if r["dst"] == SITE_NET]
    assert route["protocol"] in ("74", 74), route  # ours (jvpn/gateway/routes.py)
    # the gateway's side reaches the host behind the client, through the tunnel
    assert _ping(tl, "gw", SITE_HOST_IP), tl.logs()
    assert _ping(tl, "site", GW_INNER), tl.logs()  # and back, from the site's own address
    # sources the peer does not own: dropped at the gateway, and reported
    before = _spoofed(tl)
    for src in SPOOFED_INNER_SOURCES:
        assert not _ping(tl, "site", "-I", src, GW_INNER), f"{src} got through"
    tl.wait(lambda: _spoofed(tl) >= before + 2 * 3, "spoofed inner sources reported",
            timeout=25)
    # the daemon stops: its routes go; it starts again: the restored session's come back
    tl.stop_gateway()
    assert not [r for r in _routes(tl) if r["dst"] == SITE_NET]
    started = _count(tl, "GatewayStarted")
    tl.start_gateway()  # (it waits for the first start's event: wait for the second one)
    tl.wait(lambda: _count(tl, "GatewayStarted") > started, "gateway restart")
    assert [r for r in _routes(tl) if r["dst"] == SITE_NET]
    tl.wait(lambda: _ping(tl, "gw", SITE_HOST_IP), "site reachable after a restart")
    # the client goes away: its session ends, and the route with it
    tl.client.terminate()
    tl.client.wait(timeout=10)
    tl.wait(lambda: any(e["event_type"] == "SessionTerminated" for e in tl.gateway_events()),
            "session terminated", timeout=30)
    tl.wait(lambda: not [r for r in _routes(tl) if r["dst"] == SITE_NET],
            "subnet route removed", timeout=5)
