"""jvpn.client_routes against a real kernel, in a namespace of its own: a
full-tunnel plan installs wg-quick's rules and routes, the marked lookup
sees the uplink while an unmarked one sees the tunnel, undo leaves nothing,
a killed client's leftover rules are replaced rather than doubled, and a
route that is already there is refused with everything rolled back."""

from __future__ import annotations

import ipaddress
import json

import pytest

from jvpn.client_path import route_to
from jvpn.client_routes import RULE_PRIORITY, RouteError, RouteSet, plan
from jvpn.config import DEFAULT_FWMARK, DEFAULT_TABLE
from jvpn.lab.addresses import (
    CLIENT_INNER,
    ROUTES_ELSEWHERE,
    ROUTES_ELSEWHERE6,
    ROUTES_SUBNET,
    ROUTES_UP6_IP,
    ROUTES_UP6_PEER,
    ROUTES_UP_IP,
    ROUTES_UP_PEER,
)
from jvpn.lab.netns import Lab
from jvpn.tunnel import Tun

pytestmark = pytest.mark.kernel

N = ipaddress.ip_network
TUN = "jvpnrt0"


@pytest.fixture
def lab():
    lab = Lab(("cl", "up")).up()
    try:
        lab.veth("cl", "wifi", f"{ROUTES_UP_IP}/24", "up", "r0", f"{ROUTES_UP_PEER}/24")
        lab.route("cl", "default", "via", ROUTES_UP_PEER, "dev", "wifi")
        yield lab
    finally:
        lab.down()


def ours(lab) -> list[dict]:
    rules = json.loads(lab.run("cl", "ip", "-j", "-4", "rule").stdout)
    return [r for r in rules if r["priority"] in (RULE_PRIORITY, RULE_PRIORITY + 1)]


def table(lab) -> list[dict]:
    return json.loads(lab.run("cl", "ip", "-j", "-4", "route", "show", "table",
                              str(DEFAULT_TABLE)).stdout or "[]")


def tun(lab) -> Tun:
    with lab.inside("cl"):
        t = Tun(TUN)
        t.configure(CLIENT_INNER, 32)
    return t


def test_full_tunnel_rules_routes_marked_lookup_and_undo(lab):
    t = tun(lab)
    routes = RouteSet(TUN)
    with lab.inside("cl"):
        routes.apply(plan((N("0.0.0.0/0"), N(ROUTES_SUBNET)), None, DEFAULT_TABLE))
        wifi, tunnel = (route_to(ROUTES_ELSEWHERE, DEFAULT_FWMARK), route_to(ROUTES_ELSEWHERE))
    assert [(r["priority"], r["table"], r.get("fwmark"), "not" in r,  # ip -j: "not": null
             r.get("suppress_prefixlen")) for r in ours(lab)] == [
        (RULE_PRIORITY, "main", None, False, 0),
        (RULE_PRIORITY + 1, str(DEFAULT_TABLE), hex(DEFAULT_FWMARK), True, None)]
    assert [(r["dst"], r["dev"]) for r in table(lab)] == [("default", TUN)]
    assert f"{ROUTES_SUBNET} dev {TUN}" in lab.run("cl", "ip", "-4", "route").stdout
    idx = {link["ifname"]: link["ifindex"]
           for link in json.loads(lab.run("cl", "ip", "-j", "link").stdout)}
    assert wifi == (ROUTES_UP_IP, idx["wifi"])   # the outer socket's lookup: the uplink
    assert tunnel[1] == idx[TUN]          # everything else: the tunnel
    with lab.inside("cl"):
        assert routes.undo() == [] and routes.undo() == []  # idempotent
    assert ours(lab) == [] and table(lab) == []
    assert ROUTES_SUBNET not in lab.run("cl", "ip", "-4", "route").stdout
    t.close()


def test_leftovers_of_a_killed_client_are_replaced_not_doubled(lab):
    first = tun(lab)
    with lab.inside("cl"):
        RouteSet(TUN).apply(plan((N("0.0.0.0/0"),), None, DEFAULT_TABLE))
    first.close()  # killed: the TUN and its routes go, the rules stay
    assert len(ours(lab)) == 2 and table(lab) == []
    second, routes = tun(lab), RouteSet(TUN)
    with lab.inside("cl"):
        routes.apply(plan((N("0.0.0.0/0"),), None, DEFAULT_TABLE))
    assert len(ours(lab)) == 2 and len(table(lab)) == 1
    with lab.inside("cl"):
        routes.undo()
    assert ours(lab) == []
    second.close()


def test_a_route_that_exists_is_refused_and_everything_rolled_back(lab):
    lab.route("cl", ROUTES_SUBNET, "via", ROUTES_UP_PEER, "dev", "wifi")  # someone else's route
    t = tun(lab)
    routes = RouteSet(TUN)
    with lab.inside("cl"), pytest.raises(RouteError,
                                         match=r"10\.50\.0\.0/16 dev jvpnrt0: the table already"):
        routes.apply(plan((N("0.0.0.0/0"), N(ROUTES_SUBNET)), None, DEFAULT_TABLE))
    assert ours(lab) == [] and table(lab) == [] and routes.applied == []
    kept = f"{ROUTES_SUBNET} via {ROUTES_UP_PEER} dev wifi"
    assert kept in lab.run("cl", "ip", "-4", "route").stdout
    t.close()


def test_ipv6_full_tunnel_has_its_own_rules_and_marked_lookup(lab):
    """``::/0`` gets the same scheme through ``ip -6 rule`` (the lab runs
    IPv4 end to end; this is the kernel side of the IPv6 half)."""
    lab.run("cl", "ip", "-6", "addr", "add", f"{ROUTES_UP6_IP}/64", "dev", "wifi", "nodad")
    lab.run("up", "ip", "-6", "addr", "add", f"{ROUTES_UP6_PEER}/64", "dev", "r0", "nodad")
    lab.run("cl", "ip", "-6", "route", "add", "default", "via", ROUTES_UP6_PEER, "dev", "wifi")
    t = tun(lab)
    routes = RouteSet(TUN)
    with lab.inside("cl"):
        routes.apply(plan((N("::/0"),), None, DEFAULT_TABLE))
        uplink, tunnel = route_to(ROUTES_ELSEWHERE6, DEFAULT_FWMARK), route_to(ROUTES_ELSEWHERE6)
    rules6 = [r for r in json.loads(lab.run("cl", "ip", "-j", "-6", "rule").stdout)
              if r["priority"] in (RULE_PRIORITY, RULE_PRIORITY + 1)]
    assert [(r["table"], r.get("fwmark")) for r in rules6] == [
        ("main", None), (str(DEFAULT_TABLE), hex(DEFAULT_FWMARK))]
    assert ours(lab) == []  # no IPv4 rule for an IPv6-only full tunnel
    idx = {link["ifname"]: link["ifindex"]
           for link in json.loads(lab.run("cl", "ip", "-j", "link").stdout)}
    assert uplink[1] == idx["wifi"] and tunnel[1] == idx[TUN]
    with lab.inside("cl"):
        assert routes.undo() == []
    assert [r for r in json.loads(lab.run("cl", "ip", "-j", "-6", "rule").stdout)
            if r["priority"] in (RULE_PRIORITY, RULE_PRIORITY + 1)] == []
    t.close()
