"""Inner addressing (issue 11): the gateway's Address list (IPv4 and IPv6),
peers' AllowedIPs (assigned addresses and subnets behind a peer) and every
refusal, the longest-prefix match of the downstream, the inner source filter
over AllowedIPs, the handshake response with IPv6, and the subnet routes
that follow the sessions."""

from __future__ import annotations

import ipaddress
import os
import struct

import pytest

from jvpn import keys
from jvpn.codes import EventType
from jvpn.config import ConfigError, PeerConfig, load_gateway_config, load_peers
from jvpn.events import EventLog
from jvpn.gate.userspace import UserspaceGate
from jvpn.gateway.admission import Admission, Admitted
from jvpn.gateway.ownership import LocalOwnership
from jvpn.gateway.routes import RTPROT_JVPN, SubnetRoutes
from jvpn.gateway.table import SessionTable
from jvpn.handshake import Assignment, Granted, HandshakeError, Initiator, Responder
from jvpn.keys import derive_session_keys
from jvpn.prefixes import PrefixMap
from jvpn.session import Event, Transport, apply, new_session
from jvpn.store.sqlite import SqliteStore
from jvpn.tunnel import DataChannel, InnerSourceFilter, inner_dst, inner_src

GW_PRIV = keys.generate_private()
ALICE = keys.public_from_private(keys.generate_private())
BOB = keys.public_from_private(keys.generate_private())
GW4 = ipaddress.IPv4Interface("10.99.0.1/24")
GW6 = ipaddress.IPv6Interface("fd99::1/64")
net = ipaddress.ip_network
addr = ipaddress.ip_address


@pytest.fixture(autouse=True)
def _private_umask():
    old = os.umask(0o077)  # the gateway file holds a key: 0600 or it is refused
    yield
    os.umask(old)


def _peers(tmp_path, alice: str, bob: str | None = None, key: str = "AllowedIPs"):
    text = f"[Peer]\nPublicKey = {keys.encode(ALICE)}\n{key} = {alice}\nName = alice\n"
    if bob is not None:
        text += f"\n[Peer]\nPublicKey = {keys.encode(BOB)}\nAllowedIPs = {bob}\nName = bob\n"
    (tmp_path / "peers.conf").write_text(text)
    return tmp_path / "peers.conf"


def _refused(tmp_path, alice, bob=None, gw6=GW6, key="AllowedIPs") -> str:
    with pytest.raises(ConfigError) as exc:
        load_peers(_peers(tmp_path, alice, bob, key), GW4, gw6)
    message = str(exc.value)
    assert "\n" not in message and "peers.conf:" in message
    return message


# ---------------------------------------------------------------- config
def test_gateway_address_list_gives_an_ipv4_and_an_ipv6_interface(tmp_path):
    _peers(tmp_path, "10.99.0.2/32, fd99::2/128, 192.168.50.0/24, fd50::/64")
    (tmp_path / "gw.conf").write_text(
        f"[Interface]\nPrivateKey = {keys.encode(GW_PRIV)}\n"
        "Address = 10.99.0.1/24, fd99::1/64\nPeersFile = peers.conf\n")
    cfg = load_gateway_config(tmp_path / "gw.conf")
    assert cfg.address == GW4 and cfg.address6 == GW6
    [alice] = cfg.peers
    assert alice.inner == addr("10.99.0.2") and alice.inner6 == addr("fd99::2")
    assert alice.subnets == (net("192.168.50.0/24"), net("fd50::/64"))
    assert alice.allowed_ips == (net("10.99.0.2/32"), net("fd99::2/128"),
                                 net("192.168.50.0/24"), net("fd50::/64"))


@pytest.mark.parametrize("address, parts", [
    ("fd99::1/64", ["no IPv4 address"]),
    ("10.99.0.1/24, 10.98.0.1/24", ["second IPv4"]),
    ("10.99.0.1/24, fd99::1/64, fd98::1/64", ["second IPv6"]),
    ("10.99.0.1/24, fd99::1", ["prefix length", "/64"]),
    ("10.99.0.1/24, fd99::/64", ["not a usable unicast"]),
    ("10.99.0.1/24, fd99::1/128", ["no inner address"]),
    ("10.99.0.1/24,", ["empty item"]),
])
def test_gateway_address_list_refusals(tmp_path, address, parts):
    _peers(tmp_path, "10.99.0.2/32")
    (tmp_path / "gw.conf").write_text(
        f"[Interface]\nPrivateKey = {keys.encode(GW_PRIV)}\nAddress = {address}\n"
        "PeersFile = peers.conf\n")
    with pytest.raises(ConfigError) as exc:
        load_gateway_config(tmp_path / "gw.conf")
    message = str(exc.value)
    assert "gw.conf:3: Address:" in message and "\n" not in message
    for part in parts:
        assert part in message, message


def test_old_allowed_ip_key_still_loads(tmp_path):
    [alice] = load_peers(_peers(tmp_path, "10.99.0.2/32", key="AllowedIP"), GW4, GW6)
    assert alice.inner == addr("10.99.0.2") and alice.inner6 is None and not alice.subnets


def test_without_a_gateway_ipv6_every_ipv6_prefix_is_a_subnet(tmp_path):
    [alice] = load_peers(_peers(tmp_path, "10.99.0.2/32, fd99::2/128"), GW4, None)
    assert alice.inner6 is None and alice.subnets == (net("fd99::2/128"),)


@pytest.mark.parametrize("alice, bob, parts", [
    ("192.168.50.1/24", None, ["192.168.50.1/24", "host bits"]),
    ("192.168.50.0/24", None, ["no /32 inside", "10.99.0.0/24", "192.168.50.0/24"]),
    ("10.99.0.2/32, 10.99.0.3/32", None, ["second address", "10.99.0.2"]),
    ("10.99.0.2/32, 10.99.0.0/25", None, ["overlaps the gateway's inner network"]),
    ("10.99.0.2/32, 10.0.0.0/8", None, ["overlaps the gateway's inner network"]),
    ("10.99.0.2/32, fd99::/64", None, ["overlaps the gateway's inner network fd99::/64"]),
    ("10.99.0.2/32, fd99::1/128", None, ["fd99::1", "gateway's own"]),
    ("10.99.0.2/32, fd99::2/128, fd99::3/128", None, ["second address"]),
    ("10.99.0.1/32", None, ["gateway's own"]),
    ("10.99.0.2/32, 127.0.0.0/8", None, ["loopback"]),
    ("10.99.0.2/32, fe80::/64", None, ["link-local"]),
    ("10.99.0.2/32, nonsense", None, ["nonsense", "not an IP prefix"]),
    ("10.99.0.2/32, , 192.168.50.0/24", None, ["empty item"]),
    ("10.99.0.2/32, 192.168.50.0/24, 192.168.50.128/25", None,
     ["192.168.50.128/25 overlaps 192.168.50.0/24 of peer alice (line 3)"]),
    ("10.99.0.2/32, 192.168.50.0/24", "10.99.0.3/32, 192.168.50.7/32",
     ["peers.conf:8:", "192.168.50.7/32 overlaps 192.168.50.0/24 of peer alice (line 3)"]),
    ("10.99.0.2/32, 192.168.0.0/16", "10.99.0.3/32, 192.168.50.0/24",
     ["peers.conf:8:", "overlaps 192.168.0.0/16 of peer alice (line 3)"]),
    ("10.99.0.2/32, fd50::/48", "10.99.0.3/32, fd50:0:0:1::/64",
     ["peers.conf:8:", "fd50:0:0:1::/64 overlaps fd50::/48 of peer alice (line 3)"]),
    ("10.99.0.2/32, fd99::2/128", "10.99.0.3/32, fd99::2/128",
     ["peers.conf:8:", "fd99::2/128 overlaps fd99::2/128 of peer alice (line 3)"]),
    ("10.99.0.2/32", "10.99.0.2/32", ["peers.conf:8:", "10.99.0.2/32 overlaps", "line 3"]),
])
def test_allowed_ips_refusals(tmp_path, alice, bob, parts):
    message = _refused(tmp_path, alice, bob)
    assert "AllowedIPs:" in message
    for part in parts:
        assert part in message, message


def test_allowed_ip_and_allowed_ips_together_are_refused(tmp_path):
    (tmp_path / "peers.conf").write_text(
        f"[Peer]\nPublicKey = {keys.encode(ALICE)}\nAllowedIP = 10.99.0.2/32\n"
        "AllowedIPs = 10.99.0.2/32\n")
    with pytest.raises(ConfigError, match=r"peers.conf:4: AllowedIPs: AllowedIP is already "
                                          r"given on line 3"):
        load_peers(tmp_path / "peers.conf", GW4)


# ---------------------------------------------------------------- longest-prefix match
def test_prefix_map_longest_match_v4_and_v6():
    m = PrefixMap()
    m.add(net("10.99.0.2/32"), 1)
    m.add(net("192.168.0.0/16"), 2)
    m.add(net("192.168.50.0/24"), 3)
    m.add(net("fd99::2/128"), 4)
    m.add(net("fd50::/48"), 5)
    m.add(net("fd50:0:0:7::/64"), 6)
    m.add(net("0.0.0.0/0"), 7)
    look = lambda a: m.lookup(addr(a).packed)  # noqa: E731
    assert look("10.99.0.2") == 1 and look("10.99.0.3") == 7
    assert look("192.168.50.9") == 3 and look("192.168.51.9") == 2 and look("8.8.8.8") == 7
    assert look("fd99::2") == 4 and look("fd99::3") is None  # no ::/0
    assert look("fd50::9") == 5 and look("fd50:0:0:7::9") == 6
    assert m.lookup(None) is None and m.lookup(b"\x01\x02") is None


def test_prefix_map_remove_only_when_still_the_given_value():
    m = PrefixMap()
    m.add(net("192.168.50.0/24"), 1)
    m.add(net("10.99.0.2/32"), 1)
    m.add(net("192.168.50.0/24"), 2)  # a newer session of the same peer took it
    m.add(net("10.99.0.2/32"), 2)
    m.remove(net("192.168.50.0/24"), 1)
    m.remove(net("10.99.0.2/32"), 1)
    assert m.lookup(addr("192.168.50.1").packed) == 2 and m.lookup(addr("10.99.0.2").packed) == 2
    m.remove(net("192.168.50.0/24"), 2)
    assert m.lookup(addr("192.168.50.1").packed) is None and len(m) == 1


# ---------------------------------------------------------------- packets
def ipv4(src: str, dst: str, payload: bytes = b"x" * 8) -> bytes:
    return (struct.pack("!BBHHHBBH", 0x45, 0, 20 + len(payload), 0, 0, 64, 17, 0)
            + addr(src).packed + addr(dst).packed + payload)


def ipv6(src: str, dst: str, payload: bytes = b"x" * 8) -> bytes:
    return (struct.pack("!IHBB", 6 << 28, len(payload), 17, 64)
            + addr(src).packed + addr(dst).packed + payload)


def test_inner_dst_and_src_parse_ipv6():
    p = ipv6("fd99::2", "fd50::9")
    assert inner_dst(p) == addr("fd50::9").packed and inner_src(p) == addr("fd99::2").packed
    assert inner_dst(ipv4("10.99.0.2", "10.99.0.1")) == addr("10.99.0.1").packed
    assert inner_dst(p[:39]) is None


ALLOWED = (net("10.99.0.2/32"), net("fd99::2/128"), net("192.168.50.0/24"), net("fd50::/64"))


@pytest.mark.parametrize("packet, verdict", [
    (ipv4("10.99.0.2", "10.99.0.1"), "ok"),
    (ipv4("192.168.50.7", "10.99.0.1"), "ok"),
    (ipv6("fd99::2", "fd99::1"), "ok"),
    (ipv6("fd50::7", "fd99::1"), "ok"),
    (ipv4("10.99.0.3", "10.99.0.1"), "spoofed"),
    (ipv4("192.168.60.1", "10.99.0.1"), "spoofed"),
    (ipv6("fd99::3", "fd99::1"), "spoofed"),
    (ipv6("fd51::7", "fd99::1"), "spoofed"),
    (ipv6("fd99::2", "fd99::1")[:-1], "malformed"),  # payload length is not the packet's
    (bytes([0x70]) + ipv6("fd99::2", "fd99::1")[1:], "malformed"),
])
def test_inner_source_filter_over_allowed_ips(packet, verdict):
    f = InnerSourceFilter(ALLOWED)
    assert f.accept(packet) is (verdict == "ok")
    assert f.refused == {"spoofed": int(verdict == "spoofed"),
                         "malformed": int(verdict == "malformed")}


def test_a_data_channel_delivers_only_allowed_sources():
    ks = derive_session_keys(7, b"\1" * 32, b"\2" * 32, b"\3" * 32)
    client = DataChannel(ks, "client")
    gw = DataChannel(ks, "gateway", allowed_inner_src=ALLOWED)
    for packet, ok in ((ipv6("fd50::1", "fd99::1"), True), (ipv4("192.168.60.1", "1.1.1.1"),
                                                             False)):
        _t, flags, payload = gw.open(client.seal(packet))
        assert (gw.inner_packet(flags, payload) == packet) is ok
    assert gw.inner_filter.refused["spoofed"] == 1


# ---------------------------------------------------------------- handshake
V6 = Assignment(0x1122334455667788, ipaddress.IPv4Interface("10.99.0.2/24"),
                addr("10.99.0.1"), ipaddress.IPv6Interface("fd99::2/64"), addr("fd99::1"))


def _round_trip(assignment: Assignment) -> Assignment:
    cl = keys.generate_private()
    init = Initiator(cl, keys.public_from_private(GW_PRIV))
    opened = Responder(GW_PRIV, lambda k: True).open(init.initiation())
    resp, _keys = opened.respond(assignment)
    got, _ = init.response(resp)
    return got


def test_handshake_response_carries_ipv6_inside_the_noise_payload():
    assert _round_trip(V6) == V6
    v4_only = Assignment(V6.session_id, V6.client_inner, V6.gateway_inner)
    assert _round_trip(v4_only) == v4_only and len(v4_only.pack()) == 17
    assert len(V6.pack()) == 50


@pytest.mark.parametrize("payload", [
    V6.pack()[:17] + b"\0",  # neither version's length
    V6.pack()[:-1],
    V6.pack()[:33] + b"\x81" + V6.pack()[34:],  # IPv6 prefix /129
    V6.pack()[:12] + b"\x21" + V6.pack()[13:],  # IPv4 prefix /33
])
def test_handshake_response_payload_is_checked(payload):
    with pytest.raises(HandshakeError, match="bad_response"):
        Assignment.unpack(payload)


def test_admission_gives_a_peer_its_ipv6_when_the_gateway_has_one():
    peer = PeerConfig(ALICE, addr("10.99.0.2"), "alice", addr("fd99::2"))
    cl = keys.generate_private()
    peer = PeerConfig(keys.public_from_private(cl), peer.inner, "alice", peer.inner6)
    gw_pub = keys.public_from_private(GW_PRIV)
    for address6, expect in ((GW6, ipaddress.IPv6Interface("fd99::2/64")), (None, None)):
        adm = Admission(GW_PRIV, {peer.public_key: peer}, GW4, 50, address6=address6)
        init = Initiator(cl, gw_pub)
        verdict = adm.check(init.initiation(), ("192.0.2.1", 1))
        assert isinstance(verdict, Admitted)
        new = adm.session(verdict, 9, Transport("192.0.2.1", 1), 1000, owner="gw",
                          owner_lease=0)
        got, _ = init.response(new.response)
        assert got.client_inner6 == expect
        assert got.gateway_inner6 == (GW6.ip if address6 else None)
        assert got.client_inner == ipaddress.IPv4Interface(("10.99.0.2", GW4.network.prefixlen))
        assert got.gateway_inner == GW4.ip and got.session_id == 9


def test_the_gateways_packed_payload_is_an_assignments_bytes():
    """The admission packs the payload from packed addresses (no
    ``ipaddress`` objects per handshake, issue 15): byte for byte what an
    Assignment of the same fields packs, both versions."""
    v4_only = Assignment(V6.session_id, V6.client_inner, V6.gateway_inner)
    assert Granted(V6.session_id, V6.client_inner.ip.packed, V6.client_inner.network.prefixlen,
                   V6.gateway_inner.packed).pack() == v4_only.pack()
    six = (V6.client_inner6.ip.packed, V6.client_inner6.network.prefixlen,
           V6.gateway_inner6.packed)
    assert Granted(V6.session_id, V6.client_inner.ip.packed, V6.client_inner.network.prefixlen,
                   V6.gateway_inner.packed, six).pack() == V6.pack()


# ---------------------------------------------------------------- the table and its routes
class FakeRoutes:
    def __init__(self):
        self.installed: set = set()
        self.calls: list = []

    def install(self, sid, nets):
        self.calls.append(("install", sid, tuple(nets)))
        self.installed |= set(nets)

    def remove(self, sid, nets):
        self.calls.append(("remove", sid, tuple(nets)))
        self.installed -= set(nets)

    def flush(self):
        self.installed.clear()


ALICE_PEER = PeerConfig(ALICE, addr("10.99.0.2"), "alice", addr("fd99::2"),
                        (net("192.168.50.0/24"), net("fd50::/64")))
BOB_PEER = PeerConfig(BOB, addr("10.99.0.3"), "bob", None, (net("192.168.0.0/16"),))


@pytest.fixture
def table(tmp_path):
    clock = lambda: 1_700_000_000_000  # noqa: E731
    store = SqliteStore(tmp_path / "s.db")
    routes = FakeRoutes()
    t = SessionTable(store=store, gate=UserspaceGate(), events=EventLog("gw", clock_ms=clock),
                     ownership=LocalOwnership("gw"), clock_ms=clock, send=lambda m, to: None,
                     peers={p.inner.packed: p for p in (ALICE_PEER, BOB_PEER)}, routes=routes)
    t.fake_routes = routes
    yield t
    store.close()


def _add(table, sid: int, peer: PeerConfig, confirmed: bool = True):
    rec, tr = apply(new_session(sid, 1000), Event.ATTACH_OK, 1000,
                    binding=Transport("192.0.2.10", 5000 + sid))
    ks = derive_session_keys(sid, b"\1" * 32, b"\2" * 32, b"\3" * 32)
    return table.create(rec.with_(inner_addr=str(peer.inner)), ks, peer.inner.packed, tr,
                        confirmed=confirmed)


def test_downstream_is_the_longest_match_over_every_peers_allowed_ips(table):
    a, b = _add(table, 1, ALICE_PEER), _add(table, 2, BOB_PEER)
    dst = lambda s: table.for_destination(addr(s).packed)  # noqa: E731
    assert dst("10.99.0.2") is a and dst("10.99.0.3") is b
    assert dst("192.168.50.9") is a and dst("192.168.51.9") is b  # /24 beats /16
    assert dst("fd99::2") is a and dst("fd50::1") is a and dst("fd99::3") is None
    assert dst("10.99.0.4") is None and table.for_destination(None) is None
    assert a.channel.inner_filter.accept(ipv6("fd50::1", "fd99::1"))
    assert not b.channel.inner_filter.accept(ipv6("fd50::1", "fd99::1"))


def test_subnet_routes_follow_the_session_that_serves_the_peer(table):
    routes = table.fake_routes
    first = _add(table, 1, ALICE_PEER)
    assert routes.installed == set(ALICE_PEER.subnets)
    second = _add(table, 2, ALICE_PEER, confirmed=False)  # a new handshake, unconfirmed
    assert table.for_destination(addr("192.168.50.1").packed) is first
    table.confirm(second)
    assert table.for_destination(addr("192.168.50.1").packed) is second
    table.forget(1)  # the replaced session ends: the peer's routes stay (the new one has them)
    assert routes.installed == set(ALICE_PEER.subnets)
    assert table.for_destination(addr("fd50::1").packed) is second
    table.forget(2)  # the peer's last session ends: its routes go
    assert routes.installed == set() and table.for_destination(addr("192.168.50.1").packed) is None
    assert ("remove", 2, ALICE_PEER.subnets) in routes.calls


def test_a_session_whose_peer_left_the_config_keeps_its_one_address(table):
    gone = PeerConfig(keys.public_from_private(keys.generate_private()), addr("10.99.0.9"), "x")
    live = _add(table, 3, gone)
    assert live.allowed == (net("10.99.0.9/32"),) and live.subnets == ()
    assert not live.channel.inner_filter.accept(ipv4("192.168.50.1", "10.99.0.1"))


class FakeNetlinkError(Exception):
    def __init__(self, code):
        super().__init__(code, "refused")
        self.code = code


class FakeIPRoute:
    def __init__(self, fail: int | None = None):
        self.fail, self.calls = fail, []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def link_lookup(self, ifname):
        return [5]

    def route(self, op, **kw):
        if self.fail is not None:
            raise FakeNetlinkError(self.fail)
        self.calls.append((op, kw["dst"], kw["oif"], kw["proto"]))


def test_subnet_routes_add_and_remove_with_netlink_and_report_failures():
    events = EventLog("gw", clock_ms=lambda: 0)
    ipr = FakeIPRoute()
    routes = SubnetRoutes("jvpn-gw", events, ipr=lambda: ipr)
    routes.install(1, ALICE_PEER.subnets)
    routes.install(2, ALICE_PEER.subnets)  # already there: nothing added again
    assert ipr.calls == [("add", "192.168.50.0/24", 5, RTPROT_JVPN),
                         ("add", "fd50::/64", 5, RTPROT_JVPN)]
    routes.remove(2, ALICE_PEER.subnets)
    assert ipr.calls[2:] == [("del", "192.168.50.0/24", 5, RTPROT_JVPN),
                             ("del", "fd50::/64", 5, RTPROT_JVPN)]
    failing = SubnetRoutes("jvpn-gw", events, ipr=lambda: FakeIPRoute(fail=17))  # EEXIST
    failing.install(3, (net("192.168.60.0/24"),))  # reported, not raised
    [ev] = [e for e in events.recent if e["event_type"] == EventType.ROUTE_FAILED]
    assert int(ev["session_id"], 16) == 3 and "192.168.60.0/24" in ev["detail"]
    assert failing.installed == set()


# ---------------------------------------------------------------- IPv4 in IPv6 spelling
# Review (rev1): the overlap check is per family, so an IPv6 prefix holding
# IPv4-mapped (::ffff:a.b.c.d) or IPv4-compatible (::a.b.c.d) addresses was
# accepted beside another peer's IPv4 address, and the peer could then send
# IPv6 packets from that peer's IPv4 in IPv6 spelling (a dual-stack socket on
# the gateway's host reads ::ffff:10.99.0.3 as 10.99.0.3).
@pytest.mark.parametrize("alice", [
    "10.99.0.2/32, ::ffff:0:0/96",
    "10.99.0.2/32, ::ffff:10.99.0.3/128",
    "10.99.0.2/32, ::ffff:10.99.0.0/120",
    "10.99.0.2/32, ::10.99.0.3/128",
])
def test_allowed_ips_in_ipv4_spelling_are_refused(tmp_path, alice):
    message = _refused(tmp_path, alice, "10.99.0.3/32")
    assert "IPv4" in message and "AllowedIPs:" in message, message


def test_inner_source_filter_refuses_ipv4_mapped_sources_whatever_it_is_given():
    f = InnerSourceFilter((net("10.99.0.2/32"), net("::ffff:0:0/96"), net("::/96")))
    assert not f.accept(ipv6("::ffff:10.99.0.3", "fd99::1"))
    assert not f.accept(ipv6("::10.99.0.3", "fd99::1"))
    assert f.refused == {"spoofed": 2, "malformed": 0}
    assert f.accept(ipv4("10.99.0.2", "10.99.0.1"))


def _restore(table, sid: int, peer: PeerConfig, handshake_ns: int):
    rec, _tr = apply(new_session(sid, 1000), Event.ATTACH_OK, 1000,
                     binding=Transport("192.0.2.10", 5000 + sid))
    ks = derive_session_keys(sid, b"\1" * 32, b"\2" * 32, b"\3" * 32)
    return table.install(rec.with_(inner_addr=str(peer.inner), handshake_ns=handshake_ns), ks,
                         peer.inner.packed)


def test_a_restart_routes_a_peer_to_its_newest_session_whatever_the_store_order(table):
    # review (rev1): the one restored last took the downstream; when the
    # replaced (older) one then ended, the peer's prefixes and subnet routes
    # went with it and the live session stayed unrouted until a handshake
    new = _restore(table, 1, ALICE_PEER, handshake_ns=2_000)
    _restore(table, 2, ALICE_PEER, handshake_ns=1_000)  # replaced, not yet expired
    assert table.for_destination(addr("192.168.50.1").packed) is new
    assert table.for_inner(ALICE_PEER.inner.packed) is new
    table.forget(2)
    assert table.for_destination(addr("fd50::1").packed) is new
    assert table.fake_routes.installed == set(ALICE_PEER.subnets)


class _NoScan(dict):
    """The table's sessions, refusing a walk of them all."""

    def values(self):
        raise AssertionError("a walk of every session")


def test_a_session_ending_finds_its_peers_heir_without_walking_every_session(table):
    # issue 15: the heir was found by a walk of every session, for each
    # session ended: a batch of 128 key expiries at 1M held the control lock
    # for seconds; the peer's own sessions are indexed
    table.sessions = _NoScan()
    newest = _restore(table, 1, ALICE_PEER, handshake_ns=3_000)
    middle = _restore(table, 2, ALICE_PEER, handshake_ns=2_000)
    _restore(table, 3, ALICE_PEER, handshake_ns=1_000)
    _restore(table, 4, BOB_PEER, handshake_ns=4_000)
    table.forget(1)
    assert table.for_inner(ALICE_PEER.inner.packed) is middle
    assert table.for_destination(addr("192.168.50.1").packed) is middle
    table.forget(3)  # not the routed one: nothing moves
    assert table.for_inner(ALICE_PEER.inner.packed) is middle
    table.forget(2)
    assert table.for_inner(ALICE_PEER.inner.packed) is None
    assert table.fake_routes.installed == set(BOB_PEER.subnets)  # bob's stay
    assert newest.record.session_id not in table.sessions


def test_a_session_restored_again_is_its_peers_once(table):
    first = _restore(table, 1, ALICE_PEER, handshake_ns=2_000)
    again = _restore(table, 1, ALICE_PEER, handshake_ns=2_000)  # a new Live, same session
    older = _restore(table, 2, ALICE_PEER, handshake_ns=1_000)
    assert first is not again
    table.forget(1)
    assert table.for_inner(ALICE_PEER.inner.packed) is older
    table.forget(2)
    assert table.for_inner(ALICE_PEER.inner.packed) is None
