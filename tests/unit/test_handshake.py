"""Noise IK handshake, key schedule, MAC1/MAC2 cookies, timestamp replay."""

import ipaddress

import pytest

from jvpn import keys, wire
from jvpn.gate import abi
from jvpn.handshake import Assignment, CookieChecker, HandshakeError, Initiator, Responder
from jvpn.keys import SessionKeys, derive_session_keys
from jvpn.tunnel import DataChannel

GW, CL, OTHER = keys.generate_private(), keys.generate_private(), keys.generate_private()
GW_PUB, CL_PUB = keys.public_from_private(GW), keys.public_from_private(CL)
ASSIGN = Assignment(0x1122334455667788, ipaddress.IPv4Interface("10.99.0.2/24"),
                    ipaddress.IPv4Address("10.99.0.1"))


def _clock(start=10**18):
    t = [start]

    def now():
        t[0] += 1
        return t[0]
    return now


def test_full_handshake_gives_both_sides_the_same_keys():
    init = Initiator(CL, GW_PUB, clock_ns=_clock())
    msg = init.initiation()
    assert CookieChecker(GW).check(msg, ("192.0.2.1", 1), under_load=False) is None
    opened = Responder(GW, lambda k: k == CL_PUB).open(msg)
    assert opened.client_public == CL_PUB
    resp, gw_keys = opened.respond(ASSIGN)
    assignment, cl_keys = init.response(resp)
    assert assignment == ASSIGN and cl_keys == gw_keys
    # the keys work as a data channel in both directions
    c, g = DataChannel(cl_keys, "client"), DataChannel(gw_keys, "gateway")
    assert g.open(c.seal(b"ping"))[2] == b"ping"
    assert c.open(g.seal(b"pong"))[2] == b"pong"


def test_key_schedule_is_bound_to_the_session_id():
    a = derive_session_keys(1, b"k" * 32, b"l" * 32, b"h" * 32)
    b = derive_session_keys(2, b"k" * 32, b"l" * 32, b"h" * 32)
    assert len({a.data_c2s, a.data_s2c, a.reattach}) == 3
    assert a.data_c2s != b.data_c2s and a.hdr_c2s != b.hdr_c2s and a.reattach != b.reattach
    assert SessionKeys.unpack(a.pack()) == a


def test_unknown_peer_is_refused():
    msg = Initiator(OTHER, GW_PUB).initiation()
    with pytest.raises(HandshakeError, match="unknown_peer"):
        Responder(GW, lambda k: k == CL_PUB).open(msg)


def test_replayed_initiation_is_refused():
    r = Responder(GW, lambda k: k == CL_PUB)
    msg = Initiator(CL, GW_PUB, clock_ns=_clock()).initiation()
    r.accepted(r.open(msg))
    with pytest.raises(HandshakeError, match="replayed_initiation"):
        r.open(msg)
    # an older timestamp (a captured earlier initiation) too
    old = Initiator(CL, GW_PUB, clock_ns=_clock(start=10)).initiation()
    with pytest.raises(HandshakeError, match="replayed_initiation"):
        r.open(old)


def test_nothing_is_remembered_before_the_initiation_is_accepted():
    """Opening validates; only ``accepted`` (after the store's claim) moves
    the timestamp: a claim the store refused leaves nothing behind."""
    r = Responder(GW, lambda k: k == CL_PUB)
    msg = Initiator(CL, GW_PUB, clock_ns=_clock()).initiation()
    r.open(msg)
    assert r.open(msg).timestamp_ns > 0


def test_a_timestamp_the_stores_cannot_hold_is_refused():
    msg = Initiator(CL, GW_PUB, clock_ns=lambda: 1 << 63).initiation()
    with pytest.raises(HandshakeError, match="out of range"):
        Responder(GW, lambda k: k == CL_PUB).open(msg)


def test_bad_mac1_is_dropped_before_any_dh():
    msg = bytearray(Initiator(CL, GW_PUB).initiation())
    msg[-20] ^= 1
    with pytest.raises(HandshakeError, match="bad_mac1"):
        CookieChecker(GW).check(bytes(msg), ("192.0.2.1", 1), under_load=False)
    wrong_gw = Initiator(CL, keys.public_from_private(OTHER)).initiation()
    with pytest.raises(HandshakeError, match="bad_mac1"):
        CookieChecker(GW).check(wrong_gw, ("192.0.2.1", 1), under_load=False)


def test_under_load_a_cookie_round_trip_is_required():
    checker = CookieChecker(GW)
    src = ("192.0.2.1", 4000)
    first = Initiator(CL, GW_PUB)
    reply = checker.check(first.initiation(), src, under_load=True)
    assert reply is not None and wire.parse_header(reply).type == abi.MSG_COOKIE_REPLY
    first.consume_cookie(reply)
    retry = Initiator(CL, GW_PUB)
    retry.cookie = first.cookie
    assert checker.check(retry.initiation(), src, under_load=True) is None
    # the cookie is bound to the source address: useless from elsewhere
    again = Initiator(CL, GW_PUB)
    again.cookie = first.cookie
    assert checker.check(again.initiation(), ("192.0.2.2", 4000), under_load=True) is not None


def test_tampered_response_is_refused():
    init = Initiator(CL, GW_PUB)
    opened = Responder(GW, lambda k: True).open(init.initiation())
    resp = bytearray(opened.respond(ASSIGN)[0])
    resp[40] ^= 1
    with pytest.raises(HandshakeError):
        init.response(bytes(resp))


def test_data_channel_changes_nothing_on_failure():
    k = derive_session_keys(5, b"a" * 32, b"b" * 32, b"c" * 32)
    c, g = DataChannel(k, "client"), DataChannel(k, "gateway")
    good = c.seal(b"x" * 100)
    forged = good[:-1] + bytes([good[-1] ^ 1])
    assert g.open(forged) is None
    assert g.replay.replay_top == 0  # the window did not move
    assert g.open(good) is not None and g.open(good) is None  # then replay


def test_large_inner_packets_travel_as_authenticated_fragments():
    from jvpn.tunnel import FLAG_FRAGMENT, MAX_PLAINTEXT

    k = derive_session_keys(6, b"a" * 32, b"b" * 32, b"c" * 32)
    c, g = DataChannel(k, "client"), DataChannel(k, "gateway")
    packet = bytes(range(256)) * 250  # 64000 bytes
    msgs = c.seal_packet(packet)
    assert len(msgs) == 46 and all(len(m) <= 32 + MAX_PLAINTEXT + 16 for m in msgs)
    assert len({len(m) for m in msgs[:-1]}) == 1  # equal sizes: GSO-friendly
    got = None
    for m in reversed(msgs):  # any order
        _t, flags, plain = g.open(m)
        assert flags & FLAG_FRAGMENT
        got = g.reassembly.add(plain) or got
    assert got == packet
    assert c.seal_packet(b"small") and len(c.seal_packet(b"small")) == 1
    # a tampered fragment is refused and the packet never completes
    msgs = c.seal_packet(packet)
    assert g.open(msgs[0][:-1] + bytes([msgs[0][-1] ^ 1])) is None
    assert all(g.reassembly.add(g.open(m)[2]) is None for m in msgs[1:])
