"""Issue 11, IPv6 outside, without root: one spelling per transport (an IPv4
client heard on the dual-stack socket as ``::ffff:a.b.c.d`` is the plain
address everywhere), the gateway's dual-stack listener over loopback (both
families reach it, sources reported canonically, replies go back to each),
its exclusivity over both families, the IPv4 fallback on a host without
IPv6, and the client's socket in the endpoint's family."""

from __future__ import annotations

import errno
import socket

import pytest

from jvpn import keys
from jvpn.client import Client, endpoint_socket
from jvpn.events import EventLog
from jvpn.gate import abi
from jvpn.gateway.listener import ANY, open_listener
from jvpn.ratelimit import source_prefix
from jvpn.session import Transport, canonical_ip
from jvpn.tunnel import DataChannel
from kits.daemon_kit import Peer, initiation, make_gateway

V4, MAPPED = "192.0.2.10", "::ffff:192.0.2.10"


# ---------------------------------------------------------------- one spelling
def test_a_mapped_ipv4_transport_is_the_plain_one():
    mapped, plain = Transport(MAPPED, 5555), Transport(V4, 5555)
    assert mapped == plain and hash(mapped) == hash(plain)
    assert mapped.addr == V4 and str(mapped) == f"{V4}:5555"
    assert len({mapped, plain}) == 1  # not two transports of one client


def test_ipv6_is_compressed_lowercase_and_kept_ipv6():
    t = Transport("2001:DB8:0:0:0:0:0:10", 4000)
    assert t.addr == "2001:db8::10" and str(t) == "[2001:db8::10]:4000"
    assert t == Transport("2001:db8::10", 4000)
    assert canonical_ip("::1") == "::1"


def test_what_is_not_an_address_is_kept():
    assert canonical_ip("-") == "-"  # an XDP event with no family
    assert Transport("-", 0).addr == "-"


def test_a_mapped_client_draws_on_its_own_ipv4_bucket():
    """Not on one /64 shared by every IPv4 client (::ffff:0:0/64)."""
    assert source_prefix(Transport(MAPPED, 1).addr) == V4
    assert source_prefix(Transport("::ffff:198.51.100.7", 1).addr) == "198.51.100.7"


# ---------------------------------------------------------------- the dual-stack listener
@pytest.fixture
def gateway():
    sock = open_listener(ANY, 0, 1 << 16)
    sock.settimeout(2)
    yield sock
    sock.close()


@pytest.mark.parametrize(("family", "loopback"), [(socket.AF_INET, "127.0.0.1"),
                                                  (socket.AF_INET6, "::1")])
def test_both_families_reach_the_gateway_and_sources_are_canonical(gateway, family, loopback):
    port = gateway.getsockname()[1]
    with socket.socket(family, socket.SOCK_DGRAM) as client:
        client.settimeout(2)
        client.bind((loopback, 0))
        client.sendto(b"hello", (loopback, port))
        msg, src = gateway.recvfrom(100)
        assert msg == b"hello"
        assert src == (loopback, client.getsockname()[1])  # plain 127.0.0.1, never ::ffff:
        gateway.sendto(b"reply", src)  # the daemon answers in the same spelling
        reply, frm = client.recvfrom(100)
        assert (reply, frm[:2]) == (b"reply", (loopback, port))


def test_the_listener_is_one_dual_stack_socket(gateway):
    assert gateway.family == socket.AF_INET6
    assert gateway.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == 0
    assert gateway.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR) == 0
    assert gateway.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) == 0


@pytest.mark.parametrize(("family", "addr"), [(socket.AF_INET, "0.0.0.0"),
                                              (socket.AF_INET, "127.0.0.1"),
                                              (socket.AF_INET6, "::"),
                                              (socket.AF_INET6, "::1")])
def test_no_second_socket_binds_the_port_in_either_family(gateway, family, addr):
    port = gateway.getsockname()[1]
    with socket.socket(family, socket.SOCK_DGRAM) as other:
        if family == socket.AF_INET6:
            other.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        with pytest.raises(OSError) as exc:
            other.bind((addr, port))
        assert exc.value.errno == errno.EADDRINUSE


def test_without_ipv6_the_gateway_listens_on_ipv4_and_says_so_once(monkeypatch):
    def no_ipv6(*_args, **_kw):
        raise OSError(errno.EAFNOSUPPORT, "Address family not supported by protocol")

    monkeypatch.setattr("jvpn.gateway.listener.DualStackSocket", no_ipv6)
    lines: list[str] = []
    sock = open_listener(ANY, 0, 1 << 16, warn=lines.append)
    try:
        assert sock.family == socket.AF_INET and sock.getsockname()[0] == "0.0.0.0"
        [line] = lines
        assert "IPv4 only" in line and "\n" not in line
    finally:
        sock.close()


# ---------------------------------------------------------------- the client
def _client(endpoint: tuple[str, int]) -> Client:
    return Client(private_key=keys.generate_private(),
                  gateway_public=keys.public_from_private(keys.generate_private()),
                  endpoint=endpoint, events=EventLog("client-test"))


@pytest.mark.parametrize(("endpoint", "family"), [(("2001:db8::1", 51900), socket.AF_INET6),
                                                   (("192.0.2.1", 51900), socket.AF_INET)])
def test_the_clients_socket_follows_the_endpoints_family(endpoint, family):
    client = _client(endpoint)
    try:
        assert client.sock.family == family
    finally:
        client.down()
    with endpoint_socket(endpoint) as fresh:  # what a rebind opens on a path change
        assert fresh.family == family


def test_the_client_hears_the_gateway_in_any_spelling_and_nothing_else():
    client = _client(("2001:DB8::1", 51900))
    try:
        client.receive(b"", ("2001:db8::1", 51900, 0, 0))  # recvfrom's AF_INET6 4-tuple
        client.receive(b"", ("2001:db8:0::1", 51900, 0, 0))
        assert client.drops.total == 0
        client.receive(b"", ("2001:db8::2", 51900, 0, 0))
        client.receive(b"", ("2001:db8::1", 51901, 0, 0))
        assert client.drops.total == 2
    finally:
        client.down()


def test_a_mapped_endpoint_is_plain_ipv4():
    client = _client((MAPPED, 51900))
    try:
        assert client.endpoint == (V4, 51900) and client.sock.family == socket.AF_INET
    finally:
        client.down()


# ---------------------------------------------------------------- the daemon
def test_a_client_heard_in_both_spellings_is_one_transport(tmp_path):
    """The initiation arrives as the dual-stack socket would have named the
    client without canonicalization (mapped), its first keepalive in the
    plain form: one transport, an IPv4 binding the gate matches, confirmed."""
    gw = make_gateway(tmp_path)
    ini = initiation(0)
    gw.datapath.datagram(ini.initiation(), (MAPPED, 5555))
    [(resp, to)] = gw.sock.sent
    assert to == (V4, 5555)  # the real socket maps it back for sendto
    _assignment, session_keys = ini.response(resp)
    peer = Peer(session_keys, DataChannel(session_keys, "client"))
    gw.datapath.datagram(peer.seal(b"", abi.MSG_KEEPALIVE), (V4, 5555))
    live = gw.sessions[peer.session_id]
    assert live.confirmed, "the keepalive from the plain spelling did not pass the gate"
    assert live.record.binding == Transport(V4, 5555) and str(live.record.binding) == f"{V4}:5555"
    [rec] = gw.store.list()
    assert rec.binding.addr == V4
