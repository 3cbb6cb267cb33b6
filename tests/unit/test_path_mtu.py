"""Outer datagrams sized to the path (issue 11): what a channel seals fits
the path for both outer families, the client's announcement (the KEEPALIVE
payload) sizes the gateway's datagrams only once authenticated, newer than
the last one, sane, and never above the gateway's own PathMTU; the client
reads its path MTU from the route like wg-quick."""

from __future__ import annotations

import ipaddress
import random

import pytest
from pyroute2.netlink.rtnl.rtmsg import rtmsg

from jvpn import pathmtu
from jvpn.client_path import PathSize, route_mtu
from jvpn.gate import abi
from jvpn.keys import derive_session_keys
from jvpn.rtnl import Link, Route, parse_route
from jvpn.tunnel import MAX_FRAGMENTS, MAX_PLAINTEXT, DataChannel
from kits.daemon_kit import CLIENT, PEER_INNER, AdmitAll, handshake, ipv4, make_gateway

KEYS = derive_session_keys(0x77, b"\1" * 32, b"\2" * 32, b"\3" * 32)
GW_INNER = ipaddress.IPv4Address("10.99.0.1")
SIZES = [1, 20, 499, 500, 1000, 1180, 1232, 1424, 1425, 1452, 1500, 2900, 9000, 65535]


def _outer(msg: bytes, family: int) -> int:
    """The IP datagram a jvpn message travels in."""
    return pathmtu.IP_HEADER_LEN[family] + pathmtu.UDP_LEN + len(msg)


@pytest.mark.parametrize("family,mtus", [(4, [576, 1280, 1400, 1492, 1500, 9000, 65535]),
                                         (6, [1280, 1400, 1492, 1500, 9000, 65535])])
def test_sealed_datagrams_fit_the_path_and_reassemble(family, mtus):
    rng = random.Random(11)
    for mtu in mtus:
        tx, rx = DataChannel(KEYS, "client"), DataChannel(KEYS, "gateway")
        tx.size_to(mtu, family)
        for size in SIZES + [rng.randrange(1, 65536) for _ in range(5)]:
            packet = rng.randbytes(size)
            msgs = tx.seal_packet(packet)
            assert max(_outer(m, family) for m in msgs) <= mtu, (family, mtu, size)
            got = None
            for m in msgs:
                _t, flags, payload = rx.open(m)
                got = rx.inner_packet(flags, payload) or got
            assert got == packet, (family, mtu, size)


def test_a_path_below_the_family_minimum_is_sized_to_the_minimum():
    ch = DataChannel(KEYS, "client")
    ch.size_to(300, 4)
    assert ch.max_plaintext == 576 - 20 - 8 - 32 - 16
    ch.size_to(576, 6)
    assert ch.max_plaintext == 1280 - 40 - 8 - 32 - 16


def test_the_largest_packet_on_the_smallest_path_fits_the_fragment_limits():
    tx, rx = DataChannel(KEYS, "client"), DataChannel(KEYS, "gateway")
    tx.size_to(576, 4)
    packet = bytes(range(256)) * 255 + b"\x01" * 255  # 65535 bytes
    msgs = tx.seal_packet(packet)
    assert len(msgs) == MAX_FRAGMENTS
    got = None
    for m in reversed(msgs):
        _t, flags, payload = rx.open(m)
        got = rx.inner_packet(flags, payload) or got
    assert got == packet and rx.reassembly.drops["malformed"] == 0


def test_a_peer_cannot_grow_one_packet_past_64_kib_with_large_pieces():
    r = DataChannel(KEYS, "gateway").reassembly
    piece = b"\x00\x01\x00\x03" + b"x" * 40_000  # packet 1, piece 0 of 3
    assert r.add(piece) is None
    assert r.add(b"\x00\x01\x01\x03" + b"y" * 40_000) is None  # 80 000 bytes: not an IP packet
    assert r.drops["malformed"] == 1 and r.buffered_bytes == 0


# ---------------------------------------------------------------- the announcement

def test_announcement_is_parsed_only_when_sane():
    assert pathmtu.parse_announcement(pathmtu.announcement(1280), 4) == 1280
    assert pathmtu.parse_announcement(pathmtu.announcement(576), 4) == 576
    assert pathmtu.parse_announcement(pathmtu.announcement(575), 4) is None
    assert pathmtu.parse_announcement(pathmtu.announcement(1279), 6) is None
    assert pathmtu.parse_announcement(pathmtu.announcement(70000), 4) == 65535
    assert pathmtu.parse_announcement(b"", 4) is None  # the gateway's replies: nothing
    assert pathmtu.parse_announcement(b"\x02\x00\x05", 4) is None  # a later version
    assert pathmtu.parse_announcement(pathmtu.announcement(1400) + b"\0", 4) is None


def test_family_of_a_mapped_address_is_ipv4():
    assert pathmtu.family_of("192.0.2.1") == 4
    assert pathmtu.family_of("2001:db8::1") == 6
    assert pathmtu.family_of("::ffff:192.0.2.1") == 4


def _keepalive(peer, path_mtu: int) -> bytes:
    return peer.seal(pathmtu.announcement(path_mtu), abi.MSG_KEEPALIVE)


def _downstream_max(gw, mtu: int) -> int:
    """The largest datagram the gateway sends for inner packets of a few
    sizes, one of them exactly the largest that fits ``mtu`` whole."""
    gw.sock.sent.clear()
    for inner in (pathmtu.max_plaintext(mtu, 4), 20_000, 65_000):
        gw.datapath.downstream(_to_client(inner - 20))
    return max(_outer(m, 4) for m, _dst in gw.sock.sent)


def _to_client(size: int) -> bytes:
    """An inner packet from the gateway's side to the peer's inner address."""
    total = 20 + size
    return (bytes([0x45, 0]) + total.to_bytes(2, "big") + bytes(4) + bytes([64, 17, 0, 0])
            + GW_INNER.packed + PEER_INNER[0].packed + b"d" * size)


@pytest.fixture
def gw(tmp_path):
    g = make_gateway(tmp_path, gate=AdmitAll())
    yield g
    g.store.close()


def _session(gw, peer):
    live = gw.table.sessions[peer.session_id]
    gw.datapath.datagram(peer.seal(ipv4(PEER_INNER[0])), CLIENT)  # confirms the session
    assert live.installed
    return live


def test_the_gateway_sizes_a_session_to_the_clients_announcement(gw):
    peer = handshake(gw)
    live = _session(gw, peer)
    assert live.channel.max_plaintext == MAX_PLAINTEXT  # before any announcement: 1500
    assert _downstream_max(gw, 1500) == 1500
    gw.datapath.datagram(_keepalive(peer, 1280), CLIENT)
    assert _downstream_max(gw, 1280) == 1280
    gw.datapath.datagram(_keepalive(peer, 1492), CLIENT)
    assert _downstream_max(gw, 1492) == 1492


def test_the_gateway_never_exceeds_its_own_path_mtu(gw):
    gw.table.path_mtu = 1400
    peer = handshake(gw)
    live = _session(gw, peer)
    assert live.channel.max_plaintext == pathmtu.max_plaintext(1400, 4)
    gw.datapath.datagram(_keepalive(peer, 9000), CLIENT)
    assert _downstream_max(gw, 1400) == 1400  # not one byte more
    gw.datapath.datagram(_keepalive(peer, 1300), CLIENT)
    assert _downstream_max(gw, 1300) == 1300


def test_nonsense_forged_and_stale_announcements_change_nothing(gw):
    peer = handshake(gw)
    live = _session(gw, peer)
    gw.datapath.datagram(_keepalive(peer, 1400), CLIENT)
    sized = live.channel.max_plaintext
    gw.datapath.datagram(_keepalive(peer, 100), CLIENT)  # below any IPv4 path
    assert live.channel.max_plaintext == sized
    gw.datapath.datagram(peer.seal(b"\x09" + bytes(2), abi.MSG_KEEPALIVE), CLIENT)
    assert live.channel.max_plaintext == sized  # an unknown version
    # a copy of a genuine header with another body: the AEAD refuses it
    genuine = _keepalive(peer, 600)
    forged = genuine[:abi.HDR_LEN] + bytes(b ^ 0x5A for b in genuine[abi.HDR_LEN:])
    gw.datapath.datagram(forged, CLIENT)
    assert live.channel.max_plaintext == sized
    # a keepalive of the right session sealed under other keys
    other = DataChannel(derive_session_keys(peer.session_id, b"\7" * 32, b"\2" * 32,
                                            b"\3" * 32), "client", first_counter=10_000)
    gw.datapath.datagram(other.seal(pathmtu.announcement(600), abi.MSG_KEEPALIVE), CLIENT)
    assert live.channel.max_plaintext == sized
    # an older announcement delivered late (held back) does not undo a newer one
    old, new = _keepalive(peer, 1280), _keepalive(peer, 1300)
    gw.datapath.datagram(new, CLIENT)
    gw.datapath.datagram(old, CLIENT)
    assert live.channel.max_plaintext == pathmtu.max_plaintext(1300, 4)
    gw.datapath.datagram(genuine, CLIENT)  # the genuine 600, older than 1300: late too
    assert live.channel.max_plaintext == pathmtu.max_plaintext(1300, 4)
    gw.datapath.datagram(_keepalive(peer, 600), CLIENT)  # a newer one applies
    assert live.channel.max_plaintext == pathmtu.max_plaintext(600, 4)


# ---------------------------------------------------------------- the client's side

class _Links:
    def __init__(self, mtu: int | None):
        self.mtu = mtu

    def link(self, index):
        return None if self.mtu is None else Link(index, "eth0", 1, self.mtu)


def _decoded(attrs) -> Route:
    """A route get answer as the kernel encodes it (pyroute2's encoder),
    read by the client's own decoder (jvpn/rtnl.py)."""
    m = rtmsg()
    m["family"] = 2
    m["attrs"] = attrs
    m.encode()
    return parse_route(bytes(m.data)[16:])  # past the netlink header


def test_route_mtu_prefers_the_routes_metric_then_the_device():
    with_metric = _decoded([("RTA_OIF", 3), ("RTA_METRICS", {"attrs": [("RTAX_MTU", 1400)]})])
    assert route_mtu(_Links(1500), with_metric) == 1400
    assert route_mtu(_Links(1492), _decoded([("RTA_OIF", 3)])) == 1492
    no_mtu_metric = _decoded([("RTA_OIF", 3),
                              ("RTA_METRICS", {"attrs": [("RTAX_HOPLIMIT", 9)]})])
    assert route_mtu(_Links(1280), no_mtu_metric) == 1280
    assert route_mtu(_Links(1500), _decoded([])) is None  # no device: unknown
    assert route_mtu(_Links(None), _decoded([("RTA_OIF", 3)])) is None


def test_path_size_follows_the_route_unless_configured():
    size = PathSize(4, None)
    assert size.path_mtu == 1500
    assert size.update(1280) and size.path_mtu == 1280
    assert not size.update(1280)
    assert size.update(None) and size.path_mtu == 1500  # unknown: the default
    assert size.update(100) and size.path_mtu == 576  # clamped to what IPv4 carries
    fixed = PathSize(6, 1400)
    assert not fixed.update(9000) and fixed.path_mtu == 1400


def test_an_announcement_is_repeated_until_the_gateway_answers():
    size = PathSize(4, None)
    assert size.announce_due(0, 0)
    size.announced(0, 0)
    assert not size.announce_due(100, 0)
    assert size.announce_due(200, 0)  # lost? again
    size.heard(abi.MSG_DATA)
    assert size.announce_due(200, 0)  # data is no answer to a keepalive
    size.heard(abi.MSG_KEEPALIVE)
    assert not size.announce_due(10_000, 0)
    assert size.announce_due(10_000, 1)  # a reattach: tell the gateway on the new binding
    size.announced(10_000, 1)
    assert not size.announce_due(20_000, 1)
    size.update(1280)
    assert size.announce_due(20_000, 1)  # a new size


def test_the_clients_keepalive_announces_its_path(monkeypatch):
    from jvpn.client import Client  # noqa: PLC0415
    from jvpn.events import EventLog  # noqa: PLC0415
    from jvpn.handshake import Assignment  # noqa: PLC0415

    sent = []

    class Sock:
        def sendto(self, msg, dst):
            sent.append(msg)

        def close(self):
            pass

    c = Client(private_key=b"\1" * 32, gateway_public=b"\2" * 32, endpoint=("192.0.2.1", 51900),
               events=EventLog("client"), socket_factory=Sock)
    c.assignment, c.keys = Assignment(KEYS.session_id, None, None), KEYS
    c.channel = DataChannel(KEYS, "client")
    c._resize(1280)  # what the route lookup found
    assert c.channel.max_plaintext == pathmtu.max_plaintext(1280, 4)
    c._keepalive(0)
    _t, _f, payload = DataChannel(KEYS, "gateway").open(sent[-1])
    assert pathmtu.parse_announcement(payload, 4) == 1280


# ---------------------------------------------------------------- config

def _client_conf(tmp_path, interface_extra: str = "", endpoint: str = "10.77.0.1:51900"):
    from jvpn import keys  # noqa: PLC0415

    p, gw_key = tmp_path / "c.conf", keys.encode(bytes([5]) * 32)
    p.write_text(f"[Interface]\nPrivateKey = {keys.encode(keys.generate_private())}\n"
                 f"{interface_extra}[Peer]\nPublicKey = {gw_key}\n"
                 f"Endpoint = {endpoint}\n")
    p.chmod(0o600)
    return p


def test_client_mtu_keys_and_defaults(tmp_path):
    from jvpn.config import load_client_config  # noqa: PLC0415

    cfg = load_client_config(_client_conf(tmp_path))
    assert cfg.tun_mtu == 65000 and cfg.path_mtu is None  # None: the route's
    cfg = load_client_config(_client_conf(tmp_path, "MTU = 1420\nPathMTU = 1492\n"))
    assert cfg.tun_mtu == 1420 and cfg.path_mtu == 1492


@pytest.mark.parametrize("extra,endpoint,message", [
    ("MTU = 1279\n", "10.77.0.1:51900", "MTU: 1279 is out of range [1280, 65535]"),
    ("MTU = 70000\n", "10.77.0.1:51900", "MTU: 70000 is out of range [1280, 65535]"),
    ("PathMTU = 575\n", "10.77.0.1:51900", "PathMTU: 575 is out of range [576, 65535]"),
    ("PathMTU = 1000\n", "[2001:db8::1]:51900", "PathMTU: 1000 is out of range [1280, 65535]"),
    ("PathMTU = big\n", "10.77.0.1:51900", "PathMTU: not a whole number: 'big'"),
])
def test_client_mtu_keys_out_of_range(tmp_path, extra, endpoint, message):
    from jvpn.config import ConfigError, load_client_config  # noqa: PLC0415

    path = _client_conf(tmp_path, extra, endpoint)
    with pytest.raises(ConfigError) as e:
        load_client_config(path)
    assert str(e.value) == f"{path}:3: {message}"


def test_gateway_path_mtu_key(tmp_path):
    from jvpn import keys  # noqa: PLC0415
    from jvpn.config import ConfigError, load_gateway_config  # noqa: PLC0415

    (tmp_path / "peers.conf").write_text("")
    base = (f"[Interface]\nPrivateKey = {keys.encode(keys.generate_private())}\n"
            f"Address = 10.99.0.1/24\nPeersFile = peers.conf\nStateDir = {tmp_path}\n")
    conf = tmp_path / "gw.conf"
    for text, want in ((base, 1500), (base + "PathMTU = 9000\n", 9000)):
        conf.write_text(text)
        conf.chmod(0o600)
        assert load_gateway_config(conf).path_mtu == want
    conf.write_text(base + "PathMTU = 100\n")
    with pytest.raises(ConfigError, match=r"gw.conf:6: PathMTU: 100 is out of range"):
        load_gateway_config(conf)


# ---------------------------------------------------------------- the gateway's GSO sends

def test_the_dual_stack_listener_sends_gso_batches_to_ipv4_clients():
    """The gateway sends a fragmented packet's DATA messages as one UDP GSO
    ``sendmsg``; on its dual-stack socket an IPv4 client must be addressed
    by its mapped address there too, as ``sendto`` does (else every
    fragmented packet to an IPv4 client was lost: the sizing work's lab test
    found it)."""
    import socket  # noqa: PLC0415
    import struct  # noqa: PLC0415

    from jvpn.gateway.listener import ANY, DualStackSocket, open_listener  # noqa: PLC0415
    from jvpn.tunnel import UDP_SEGMENT  # noqa: PLC0415

    gw = open_listener(ANY, 0, 1 << 16)
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        if not isinstance(gw, DualStackSocket):
            pytest.skip("no IPv6 on this host: the listener is IPv4 only")
        client.bind(("127.0.0.1", 0))
        client.settimeout(2)
        gw.sendmsg([b"a" * 700 + b"b" * 700], [(socket.SOL_UDP, UDP_SEGMENT,
                                                 struct.pack("=H", 700))], 0,
                   client.getsockname())
        assert [client.recv(2048) for _ in range(2)] == [b"a" * 700, b"b" * 700]
    finally:
        gw.close()
        client.close()
