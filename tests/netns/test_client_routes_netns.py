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
from jvpn.lab.netns import Lab
from jvpn.tunnel import Tun

pytestmark = pytest.mark.kernel

N = ipaddress.ip_network
UP_IP, UP_PEER, ELSEWHERE = "10.201.0.2", "10.201.0.1", "10.202.0.9"  # an uplink, and beyond
TUN = "jvpnrt0"


@pytest.fixture
def lab():
    lab = Lab(("cl", "up")).up()
    try:
        lab.veth("cl", "wifi", f"{UP_IP}/24", "up", "r0", f"{UP_PEER}/24")
        lab.route("cl", "default", "via", UP_PEER, "dev", "wifi")
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
        t.configure("10.99.0.2", 32)
    return t


def test_full_tunnel_rules_routes_marked_lookup_and_undo(lab):
    t = tun(lab)
    routes = RouteSet(TUN)
    with lab.inside("cl"):
        routes.apply(plan((N("0.0.0.0/0"), N("10.50.0.0/16")), None, DEFAULT_TABLE))
        wifi, tunnel = (route_to(ELSEWHERE, DEFAULT_FWMARK), route_to(ELSEWHERE))
    assert [(r["priority"], r["table"], r.get("fwmark"), "not" in r,  # ip -j: "not": null
             r.get("suppress_prefixlen")) for r in ours(lab)] == [
        (RULE_PRIORITY, "main", None, False, 0),
        (RULE_PRIORITY + 1, str(DEFAULT_TABLE), hex(DEFAULT_FWMARK), True, None)]
    assert [(r["dst"], r["dev"]) for r in table(lab)] == [("default", TUN)]
    assert "10.50.0.0/16 dev jvpnrt0" in lab.run("cl", "ip", "-4", "route").stdout
    idx = {link["ifname"]: link["ifindex"]
           for link in json.loads(lab.run("cl", "ip", "-j", "link").stdout)}
    assert wifi == (UP_IP, idx["wifi"])   # the outer socket's lookup: the uplink
    assert tunnel[1] == idx[TUN]          # everything else: the tunnel
    with lab.inside("cl"):
        assert routes.undo() == [] and routes.undo() == []  # idempotent
    assert ours(lab) == [] and table(lab) == []
    assert "10.50.0.0/16" not in lab.run("cl", "ip", "-4", "route").stdout
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
    lab.route("cl", "10.50.0.0/16", "via", UP_PEER, "dev", "wifi")  # someone else's route
    t = tun(lab)
    routes = RouteSet(TUN)
    with lab.inside("cl"), pytest.raises(RouteError,
                                         match=r"10\.50\.0\.0/16 dev jvpnrt0: the table already"):
        routes.apply(plan((N("0.0.0.0/0"), N("10.50.0.0/16")), None, DEFAULT_TABLE))
    assert ours(lab) == [] and table(lab) == [] and routes.applied == []
    assert "10.50.0.0/16 via 10.201.0.1 dev wifi" in lab.run("cl", "ip", "-4", "route").stdout
    t.close()
