"""jvpn/noise_ik.py, the gateway's hand-written Noise IK responder, against
the `noiseprotocol` library: the same message 2 byte for byte, the same
transport keys and handshake hash, and every tampered part of message 1
refused (through Responder.open, as the gateway calls it)."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import warnings

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from hypothesis import given, settings
from hypothesis import strategies as st
from noise.connection import Keypair, NoiseConnection

from jvpn import keys, noise_ik
from jvpn.gate import abi
from jvpn.handshake import (
    MAC_LEN,
    PROLOGUE,
    PROTOCOL,
    Assignment,
    HandshakeError,
    Initiator,
    Responder,
)

GW, CL = keys.generate_private(), keys.generate_private()
GW_PUB = keys.public_from_private(GW)
ASSIGN = Assignment(0x0102030405060708, ipaddress.IPv4Interface("10.99.0.2/24"),
                    ipaddress.IPv4Address("10.99.0.1"))


def _library_responder(ephemeral: bytes) -> NoiseConnection:
    noise = NoiseConnection.from_name(PROTOCOL)
    noise.set_as_responder()
    noise.set_prologue(PROLOGUE)
    noise.set_keypair_from_private_bytes(Keypair.STATIC, GW)
    noise.set_keypair_from_private_bytes(Keypair.EPHEMERAL, ephemeral)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        noise.start_handshake()
    return noise


def _noise_part(msg: bytes) -> bytes:
    return msg[abi.HDR_LEN:-2 * MAC_LEN]


def test_message_2_keys_and_hash_are_the_librarys_byte_for_byte():
    msg = _noise_part(Initiator(CL, GW_PUB).initiation())
    ephemeral = X25519PrivateKey.generate()
    lib = _library_responder(ephemeral.private_bytes_raw())
    lib_payload = lib.read_message(msg)
    lib_body = lib.write_message(b"payload of message 2")

    opened = noise_ik.read_message1(noise_ik.Static(GW, PROTOCOL, PROLOGUE), msg)
    assert opened.payload == lib_payload
    assert opened.remote_static == keys.public_from_private(CL)
    body, k1, k2, handshake_hash = noise_ik.write_message2(opened, b"payload of message 2",
                                                           ephemeral)
    assert body == lib_body
    proto = lib.noise_protocol
    assert (k1, k2) == (proto.cipher_state_decrypt.k, proto.cipher_state_encrypt.k)
    assert handshake_hash == lib.get_handshake_hash()


def test_the_librarys_initiator_completes_against_the_responder():
    init = Initiator(CL, GW_PUB)
    resp, gw_keys = Responder(GW, lambda k: True).open(init.initiation()).respond(ASSIGN)
    assignment, cl_keys = init.response(resp)
    assert assignment == ASSIGN and cl_keys == gw_keys


@pytest.mark.parametrize("where", [0, 31, 32, 32 + 31, 32 + 47, 32 + 48, -1])
def test_any_tampered_byte_of_message_1_is_refused(where):
    """Ephemeral, encrypted static (and its tag), encrypted payload (and its tag)."""
    msg = bytearray(Initiator(CL, GW_PUB).initiation())
    noise_at = abi.HDR_LEN + (where if where >= 0 else len(_noise_part(bytes(msg))) + where)
    msg[noise_at] ^= 0x01
    with pytest.raises(HandshakeError, match="bad_initiation"):
        Responder(GW, lambda k: True).open(bytes(msg))


def test_a_small_order_ephemeral_and_a_short_message_are_refused():
    msg = bytearray(Initiator(CL, GW_PUB).initiation())
    msg[abi.HDR_LEN:abi.HDR_LEN + 32] = bytes(32)  # the all-zero point: DH gives zero
    with pytest.raises(HandshakeError, match="bad_initiation"):
        Responder(GW, lambda k: True).open(bytes(msg))
    with pytest.raises(HandshakeError, match="bad_initiation"):
        Responder(GW, lambda k: True).open(bytes(msg[:abi.HDR_LEN + 60]) + bytes(2 * MAC_LEN))


def test_an_initiation_for_another_gateway_key_is_refused():
    other = keys.public_from_private(keys.generate_private())
    with pytest.raises(HandshakeError, match="bad_initiation"):
        Responder(GW, lambda k: True).open(Initiator(CL, other).initiation())


def test_a_small_order_encrypted_static_is_refused():
    """A message 1 whose static key opens (its tag verifies) but is the
    all-zero point: the ss exchange gives zero, the message is refused."""
    static = noise_ik.Static(GW, PROTOCOL, PROLOGUE)
    sym = static.fresh()  # the initiator's state after <- s: the same, from the public key
    e = X25519PrivateKey.generate()
    e_pub = e.public_key().public_bytes_raw()
    sym.mix_hash(e_pub)
    sym.mix_key(e.exchange(X25519PublicKey.from_public_bytes(GW_PUB)))  # es
    msg = e_pub + sym.encrypt_and_hash(bytes(32)) + bytes(noise_ik.TAGLEN + 12)
    with pytest.raises(noise_ik.NoiseError, match="bad public key"):
        noise_ik.read_message1(static, msg)


def test_a_second_respond_raises_instead_of_a_message_the_client_refuses():
    init = Initiator(CL, GW_PUB)
    opened = Responder(GW, lambda k: True).open(init.initiation())
    resp, _keys = opened.respond(ASSIGN)
    with pytest.raises(noise_ik.AlreadyAnswered):
        opened.respond(ASSIGN)
    assert init.response(resp)[0] == ASSIGN  # the first answer still completes


# ---- no per-peer state: a forged message 1 costs what it costs (issue 15) ----

def test_a_peers_second_handshake_on_one_static_is_still_the_librarys():
    """One Static serves every handshake: the second of a peer answers byte
    for byte as the library does (nothing kept from the first changes it)."""
    static = noise_ik.Static(GW, PROTOCOL, PROLOGUE)
    noise_ik.read_message1(static, _noise_part(Initiator(CL, GW_PUB).initiation()))
    msg = _noise_part(Initiator(CL, GW_PUB).initiation())
    opened = noise_ik.read_message1(static, msg)
    ephemeral = X25519PrivateKey.generate()
    lib = _library_responder(ephemeral.private_bytes_raw())
    assert opened.payload == lib.read_message(msg)
    body, k1, k2, handshake_hash = noise_ik.write_message2(opened, b"m2", ephemeral)
    assert body == lib.write_message(b"m2")
    proto = lib.noise_protocol
    assert (k1, k2) == (proto.cipher_state_decrypt.k, proto.cipher_state_encrypt.k)
    assert handshake_hash == lib.get_handshake_hash()


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


def _exchanges_for_forged(responder: Responder, claimed: bytes) -> int:
    counting = _Counting(responder._static.key)
    responder._static.key = counting
    try:
        with pytest.raises(HandshakeError, match="bad_initiation"):
            responder.open(_forged_message_1(claimed))
    finally:
        responder._static.key = counting.key
    return counting.calls


def test_a_forged_message_1_costs_the_same_whether_its_named_peer_has_handshaked():
    """A forged message 1 naming a configured peer costs the same X25519
    work before and after that peer's own handshake: an unauthenticated
    sender who knows a public key learns nothing of the peer's activity
    from the gateway's CPU (a per-peer ss cache made it one exchange, ~45
    us, cheaper once the peer had been active)."""
    cl_pub = keys.public_from_private(CL)
    responder = Responder(GW, lambda k: k == cl_pub)
    before = _exchanges_for_forged(responder, cl_pub)
    responder.open(Initiator(CL, GW_PUB).initiation())  # the peer's own handshake
    after = _exchanges_for_forged(responder, cl_pub)
    assert before == after == 2  # es and ss, every time


@settings(max_examples=200, deadline=None)
@given(key=st.binary(max_size=130), ikm=st.binary(max_size=100))
def test_the_written_out_hkdf_is_hmacs_byte_for_byte(key, ikm):
    """_hkdf2's HMAC-BLAKE2s (the key's pads made once for two outputs)
    against the standard library's ``hmac``, keys longer than a block too."""
    temp = hmac.digest(key, ikm, hashlib.blake2s)
    out1 = hmac.digest(temp, b"\x01", hashlib.blake2s)
    assert noise_ik._hkdf2(key, ikm) == (out1, hmac.digest(temp, out1 + b"\x02",
                                                           hashlib.blake2s))
