"""Client AllowedIPs, FwMark and Table: the config keys, the route planner
(jvpn.client_routes.plan, a pure function) and the outer socket's mark on
every socket the agent opens (issue 11). No root: the kernel side is in
tests/netns/test_client_routes_netns.py and tests/netns/test_full_tunnel.py."""

from __future__ import annotations

import ipaddress
import socket

import pytest

from jvpn import keys
from jvpn.client import Client, ClientError, marked
from jvpn.client_firewall import FirewallError, MarkFirewall, ruleset
from jvpn.client_lifecycle import close_tunnel, open_tunnel
from jvpn.client_routes import (
    RT_TABLE_MAIN,
    RULE_PRIORITY,
    ClientRouting,
    Route,
    RouteError,
    RoutePlan,
    Rule,
    plan,
)
from jvpn.config import DEFAULT_FWMARK, DEFAULT_TABLE, ConfigError, load_client_config
from jvpn.errors import JvpnError
from jvpn.events import EventLog

GW_PUB = keys.public_from_private(keys.generate_private())
N = ipaddress.ip_network


def client_conf(tmp_path, interface: str = "", peer: str = "",
                endpoint: str = "10.77.0.1:51900"):
    path = tmp_path / "c.conf"
    path.write_text(f"[Interface]\nPrivateKey = {keys.encode(keys.generate_private())}\n"
                    f"{interface}[Peer]\nPublicKey = {keys.encode(GW_PUB)}\n"
                    f"Endpoint = {endpoint}\n{peer}")
    path.chmod(0o600)  # it holds a private key
    return path


# ---------------------------------------------------------------- config

def test_defaults_are_todays_behaviour(tmp_path):
    cfg = load_client_config(client_conf(tmp_path))
    assert cfg.allowed_ips == () and cfg.fwmark is None and cfg.table == DEFAULT_TABLE
    assert plan(cfg.allowed_ips, cfg.fwmark, cfg.table) == RoutePlan(None, ())


def test_allowed_ips_fwmark_table_parse(tmp_path):
    cfg = load_client_config(client_conf(
        tmp_path, "FwMark = 0x1234\nTable = 4242\n",
        "AllowedIPs = 0.0.0.0/0, ::/0,10.50.0.0/16 , 2001:db8::/32, 192.0.2.7\n"))
    assert cfg.allowed_ips == (N("0.0.0.0/0"), N("::/0"), N("10.50.0.0/16"),
                               N("2001:db8::/32"), N("192.0.2.7/32"))
    assert cfg.fwmark == 0x1234 and cfg.table == 4242
    assert load_client_config(client_conf(tmp_path, "fwmark = 51820\n")).fwmark == 51820


BAD = [
    # (id, [Interface] lines, [Peer] lines, expected parts of the one-line error)
    ("host-bits", "", "AllowedIPs = 192.168.0.0/24, 10.50.0.1/16\n",
     ["c.conf:6:", "AllowedIPs", "10.50.0.1/16 has host bits set", "10.50.0.0/16"]),
    ("duplicate", "", "AllowedIPs = 0.0.0.0/0, 10.1.0.0/16, 10.1.0.0/16\n",
     ["c.conf:6:", "AllowedIPs", "10.1.0.0/16 is listed twice"]),
    ("duplicate-spelling", "", "AllowedIPs = 2001:db8::/32, 2001:0db8::/32\n",
     ["AllowedIPs", "2001:db8::/32 is listed twice"]),
    ("not-a-prefix", "", "AllowedIPs = 192.168.0.0/16, everything\n",
     ["c.conf:6:", "AllowedIPs", "'everything' is not an IPv4 or IPv6 prefix"]),
    ("empty-item", "", "AllowedIPs = 192.168.0.0/16,\n", ["AllowedIPs", "an empty item"]),
    ("endpoint-inside", "", "AllowedIPs = 10.77.0.0/16\n",
     ["c.conf:6:", "AllowedIPs", "10.77.0.0/16 holds the Endpoint 10.77.0.1"]),
    ("fwmark-zero", "FwMark = 0\n", "", ["c.conf:3:", "FwMark", "out of range"]),
    ("fwmark-big", "FwMark = 0x100000000\n", "", ["c.conf:3:", "FwMark", "out of range"]),
    ("fwmark-text", "FwMark = auto\n", "", ["c.conf:3:", "FwMark", "not a number"]),
    ("table-main", "Table = 254\n", "", ["c.conf:3:", "Table", "254 is reserved"]),
    ("table-local", "Table = 0xff\n", "", ["c.conf:3:", "Table", "255 is reserved"]),
    ("table-negative", "Table = -1\n", "", ["c.conf:3:", "Table", "not a number"]),
]


@pytest.mark.parametrize("iface,peer,parts", [c[1:] for c in BAD], ids=[c[0] for c in BAD])
def test_bad_routing_keys(tmp_path, iface, peer, parts):
    with pytest.raises(ConfigError) as exc:
        load_client_config(client_conf(tmp_path, iface, peer))
    message = str(exc.value)
    assert "\n" not in message
    for part in parts:
        assert part in message, (part, message)


def test_endpoint_inside_a_slash_zero_is_the_full_tunnel_not_an_error(tmp_path):
    cfg = load_client_config(client_conf(tmp_path, "", "AllowedIPs = 0.0.0.0/0\n"))
    assert cfg.allowed_ips == (N("0.0.0.0/0"),)


# ---------------------------------------------------------------- planner

def test_split_tunnel_routes_in_main_and_no_mark():
    p = plan((N("10.50.0.0/16"), N("2001:db8::/32")), None, DEFAULT_TABLE)
    assert p == RoutePlan(None, (Route(N("10.50.0.0/16"), RT_TABLE_MAIN),
                                 Route(N("2001:db8::/32"), RT_TABLE_MAIN)))
    assert not p.full_tunnel


def test_fwmark_without_full_tunnel_still_marks():
    assert plan((N("10.50.0.0/16"),), 7, DEFAULT_TABLE).mark == 7


def test_full_tunnel_v4_is_wg_quicks_scheme_in_a_safe_order():
    p = plan((N("0.0.0.0/0"), N("10.50.0.0/16")), None, DEFAULT_TABLE)
    assert p.mark == DEFAULT_FWMARK and p.full_tunnel
    assert p.ops == (
        Rule(4, RULE_PRIORITY, RT_TABLE_MAIN, suppress_prefixlength=0),
        Route(N("0.0.0.0/0"), DEFAULT_TABLE),
        Rule(4, RULE_PRIORITY + 1, DEFAULT_TABLE, fwmark=DEFAULT_FWMARK),
        Route(N("10.50.0.0/16"), RT_TABLE_MAIN))
    assert [op.describe() for op in p.ops[:3]] == [
        f"ip -4 rule pref {RULE_PRIORITY} table 254 suppress_prefixlength 0",
        f"route 0.0.0.0/0 table {DEFAULT_TABLE}",
        f"ip -4 rule pref {RULE_PRIORITY + 1} not fwmark 0x4a56 table {DEFAULT_TABLE}"]


def test_full_tunnel_both_families_with_own_mark_and_table():
    p = plan((N("::/0"), N("0.0.0.0/0")), 0x99, 1000)
    assert p.mark == 0x99
    assert p.ops == (
        Rule(6, RULE_PRIORITY, RT_TABLE_MAIN, suppress_prefixlength=0),
        Route(N("::/0"), 1000),
        Rule(6, RULE_PRIORITY + 1, 1000, fwmark=0x99),
        Rule(4, RULE_PRIORITY, RT_TABLE_MAIN, suppress_prefixlength=0),
        Route(N("0.0.0.0/0"), 1000),
        Rule(4, RULE_PRIORITY + 1, 1000, fwmark=0x99))


# ---------------------------------------------------------------- the outer socket's mark

class MarkSocket:
    def __init__(self, refuse: bool = False):
        self.opts, self.refuse, self.closed = {}, refuse, False

    def setsockopt(self, level, name, value):
        if self.refuse and name == socket.SO_MARK:
            raise PermissionError(1, "Operation not permitted")
        self.opts[(level, name)] = value

    def settimeout(self, _t):
        pass

    def shutdown(self, _how):
        pass

    def close(self):
        self.closed = True


def test_marked_factory_marks_every_socket_and_refuses_to_go_unmarked():
    made = []
    make = marked(lambda: made.append(MarkSocket()) or made[-1], 0x4a56)
    make(), make()
    assert [s.opts[(socket.SOL_SOCKET, socket.SO_MARK)] for s in made] == [0x4a56, 0x4a56]
    assert marked(MarkSocket, None) is MarkSocket  # no mark: the factory as it is
    refused = MarkSocket(refuse=True)
    with pytest.raises(ClientError, match="SO_MARK 0x4a56"):
        marked(lambda: refused, 0x4a56)()
    assert refused.closed


def test_rebind_opens_a_marked_socket_again():
    made = []
    c = Client(private_key=b"\1" * 32, gateway_public=b"\2" * 32, endpoint=("10.77.0.1", 51900),
               events=EventLog("client-test"), socket_factory=lambda: made.append(MarkSocket())
               or made[-1], route_plan=plan((N("0.0.0.0/0"),), None, DEFAULT_TABLE))
    c.start_reattach = lambda reason: None  # the reattach itself is tested elsewhere
    c.rebind()
    assert len(made) == 2 and c.sock is made[1]
    assert all(s.opts[(socket.SOL_SOCKET, socket.SO_MARK)] == DEFAULT_FWMARK for s in made)


# ---------------------------------------------------------------- the full tunnel's firewall table

class FakeNft:
    def __init__(self, returncode: int = 0, stderr: str = ""):
        self.calls, self.returncode, self.stderr = [], returncode, stderr

    def __call__(self, args, text=None):
        import subprocess  # noqa: PLC0415

        self.calls.append((args, text))
        return subprocess.CompletedProcess(["nft", *args], self.returncode, "", self.stderr)


def test_firewall_ruleset_replaces_its_table_and_guards_the_inner_address():
    text = ruleset("jvpn0", 0x4a56, ["10.99.0.2", "fd00::2"])
    assert text.splitlines()[:3] == ["table inet jvpn-jvpn0", "delete table inet jvpn-jvpn0",
                                     "table inet jvpn-jvpn0 {"]
    assert 'iifname != "jvpn0" ip daddr 10.99.0.2 fib saddr type != local drop' in text
    assert 'iifname != "jvpn0" ip6 daddr fd00::2 fib saddr type != local drop' in text
    assert "meta l4proto udp meta mark set ct mark" in text
    assert "meta l4proto udp meta mark 0x4a56 ct mark set meta mark" in text


def test_firewall_sets_src_valid_mark_applies_and_undoes_once(tmp_path):
    sysctl = tmp_path / "src_valid_mark"
    sysctl.write_text("0")
    nft = FakeNft()
    fw = MarkFirewall("jvpn0", nft=nft, sysctl_path=str(sysctl))
    fw.apply(0x4a56, ["10.99.0.2"])
    assert sysctl.read_text() == "1"
    assert nft.calls[0] == (["-f", "-"], ruleset("jvpn0", 0x4a56, ["10.99.0.2"]))
    assert fw.undo() == [] and fw.undo() == []
    assert nft.calls[1:] == [(["delete", "table", "inet", "jvpn-jvpn0"], None)]


def test_firewall_refused_is_one_line_and_nothing_to_undo(tmp_path):
    fw = MarkFirewall("jvpn0", nft=FakeNft(1, "Error: syntax error\n  here\n"),
                      sysctl_path=str(tmp_path / "svm"))
    with pytest.raises(FirewallError, match="nft refused the table jvpn-jvpn0: Error: syntax"):
        fw.apply(1, ["10.99.0.2"])
    assert fw.undo() == []


def test_client_routing_fails_whole_when_the_firewall_fails(tmp_path):
    nft = FakeNft(1, "Error: no such hook")
    fw = MarkFirewall("jvpn0", nft=nft, sysctl_path=str(tmp_path / "svm"))
    routing = ClientRouting("jvpn0", plan((N("0.0.0.0/0"),), None, DEFAULT_TABLE), firewall=fw)
    with pytest.raises(RouteError, match="nft refused"):
        routing.apply(["10.99.0.2"])
    assert routing.routes.applied == [] and routing.undo() == []


def test_client_routing_without_full_tunnel_installs_no_table(tmp_path):
    nft = FakeNft()
    routing = ClientRouting("jvpn0", RoutePlan(None, ()), firewall=MarkFirewall(
        "jvpn0", nft=nft, sysctl_path=str(tmp_path / "svm")))
    routing.apply(["10.99.0.2"])  # no operations: no netlink either
    assert nft.calls == [] and routing.undo() == []


# ---------------------------------------------------------------- in the lifecycle's tunnel step

class FakeAgent:
    def __init__(self, fail_up: bool = False, left: list[str] | None = None):
        self.fail_up, self.left, self.tun, self.calls = fail_up, left or [], None, []

    def up(self):
        self.calls.append("up")
        if self.fail_up:
            raise ClientError("cannot install the client's routes: route 10.50.0.0/16 ...")

    def down(self):
        self.calls.append("down")
        return self.left


def test_a_tunnel_step_that_fails_half_way_is_undone_and_its_error_kept():
    agent = FakeAgent(fail_up=True, left=["ip -4 rule ..."])
    with pytest.raises(ClientError, match="cannot install the client's routes"):
        open_tunnel(agent)
    assert agent.calls == ["up", "down"]


def test_routes_that_cannot_be_removed_are_reported_by_the_tunnel_undo():
    with pytest.raises(JvpnError, match=r"could not remove route 0\.0\.0\.0/0 table 19030: EPERM"):
        close_tunnel(FakeAgent(left=["route 0.0.0.0/0 table 19030: EPERM"]))
    close_tunnel(FakeAgent())  # nothing left: quiet


def test_a_signal_during_the_handshake_stops_it_at_once():
    c = Client(private_key=b"\1" * 32, gateway_public=b"\2" * 32, endpoint=("10.77.0.1", 51900),
               events=EventLog("client-test"), socket_factory=MarkSocket)
    c.stop()
    with pytest.raises(ClientError, match="stopped by a signal"):
        c.handshake()


def test_a_tun_name_that_nft_would_parse_is_refused_before_anything_changes(tmp_path):
    sysctl = tmp_path / "src_valid_mark"
    sysctl.write_text("0")
    nft = FakeNft()
    fw = MarkFirewall('a"}x', nft=nft, sysctl_path=str(sysctl))
    with pytest.raises(FirewallError, match="letters, digits"):
        fw.apply(1, ["10.99.0.2"])
    assert nft.calls == [] and sysctl.read_text() == "0"


def test_an_endpoint_inside_the_assigned_network_is_refused_before_the_tun():
    """The Endpoint (a hostile DNS answer, or a gateway misconfigured) inside the
    inner network the gateway assigns: the TUN's prefix route took the route
    to the gateway, and every outer datagram went into the tunnel itself."""
    import ipaddress  # noqa: PLC0415

    from jvpn.handshake import Assignment  # noqa: PLC0415

    c = Client(private_key=b"\1" * 32, gateway_public=b"\2" * 32, endpoint=("10.99.0.77", 51900),
               events=EventLog("client-test"), socket_factory=MarkSocket)
    a = Assignment(1, ipaddress.ip_interface("10.99.0.2/24"), ipaddress.ip_address("10.99.0.1"))
    with pytest.raises(ClientError, match=r"inside the tunnel's own network 10\.99\.0\.0/24"):
        c._tun_up(a)
    assert c.tun is None  # nothing made
