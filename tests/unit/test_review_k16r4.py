"""Review k16r4 (issue 15's performance changes must change no behaviour):
proof-of-concept tests. The first ones fail on main at 63d3c27 (findings);
the property tests pass (what was checked and found the same)."""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import socket
import struct

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jvpn import keys, noise_ik, pathmtu
from jvpn.fastip import ipv4_packed
from jvpn.gate import abi
from jvpn.handshake import MAC_LEN, PROLOGUE, PROTOCOL, HandshakeError, Initiator, Responder
from jvpn.session import SessionRecord, State, Transport, canonical_ip
from jvpn.store import record_to_json

GW, CL = keys.generate_private(), keys.generate_private()
GW_PUB, CL_PUB = keys.public_from_private(GW), keys.public_from_private(CL)


# ---------------------------------------------------------------- finding 1
class _Counting:
    """Our static key, counting its X25519 exchanges."""

    def __init__(self, key):
        self.key, self.calls = key, 0

    def exchange(self, public):
        self.calls += 1
        return self.key.exchange(public)


def _forged_message_1(claimed_static: bytes) -> bytes:
    """What anyone can send without the peer's private key: a message 1
    whose encrypted static (es is the sender's own) names ``claimed_static``
    and whose payload is garbage (ss unknown to the sender)."""
    sym = noise_ik.Static(GW, PROTOCOL, PROLOGUE).fresh()
    e = X25519PrivateKey.generate()
    e_pub = e.public_key().public_bytes_raw()
    sym.mix_hash(e_pub)
    sym.mix_key(e.exchange(X25519PublicKey.from_public_bytes(GW_PUB)))  # es
    body = e_pub + sym.encrypt_and_hash(claimed_static) + bytes(8 + noise_ik.TAGLEN)
    return bytes(abi.HDR_LEN) + body + bytes(2 * MAC_LEN)


def _work_for_forged(responder: Responder) -> int:
    counting = _Counting(responder._static.key)
    responder._static.key = counting
    try:
        with pytest.raises(HandshakeError, match="bad_initiation"):
            responder.open(_forged_message_1(CL_PUB))
    finally:
        responder._static.key = counting.key
    return counting.calls


def test_a_forged_message_1_costs_the_same_whether_its_named_peer_has_handshaked():
    """Finding 1 (ss cache: an activity oracle). A forged message 1 naming
    a configured peer's public key is refused either way, but costs one
    X25519 (~45 us) less once that peer has completed a handshake since the
    start or the last reload: an unauthenticated sender who knows the
    public key learns whether the peer has been active (a burst of N such
    messages, then anything the gateway answers, shifts by N x 45 us). The
    old code did two exchanges for every such message; WireGuard does the
    same work for every configured peer (its ss is precomputed at load)."""
    responder = Responder(GW, lambda k: k == CL_PUB)
    before = _work_for_forged(responder)
    responder.open(Initiator(CL, GW_PUB).initiation())  # the peer's own handshake
    after = _work_for_forged(responder)
    assert after == before, f"X25519 exchanges for a forged message 1: {before} then {after}"


# ---------------------------------------------------------------- finding 2
@pytest.mark.parametrize("first, second", [(True, 1.0), (1.0, True), (False, 0.0)])
def test_canonical_ip_is_a_function_of_its_argument_not_of_what_was_asked_before(first, second):
    """Finding 2 (lru_cache keys compare with ==: True == 1.0; an exact
    int or str is its own key, anything else a tuple, so True and 1.0 share
    one). A store record's binding address is whatever JSON it holds
    (true, 1.0): canonical_ip(1.0) was 1.0 (not an address, kept as it
    is), canonical_ip(True) "0.0.0.1" (ipaddress takes a bool as an int);
    now each answers the other's answer if the other was asked first. Same
    for abi.addr_words and pathmtu.family_of."""
    canonical_ip.cache_clear()
    canonical_ip(first)
    got = canonical_ip(second)
    canonical_ip.cache_clear()
    assert got == canonical_ip(second) and type(got) is type(canonical_ip(second))


def test_addr_words_refuses_a_float_whatever_was_asked_before():
    abi.addr_words.cache_clear()
    with pytest.raises(ValueError):
        abi.addr_words(1.0)  # ipaddress refuses a float
    abi.addr_words(True)  # a bool is an int, an address to ipaddress
    with pytest.raises(ValueError):
        abi.addr_words(1.0)  # ... and now the cache answers for the float
