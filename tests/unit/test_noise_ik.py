"""jvpn/noise_ik.py, the gateway's hand-written Noise IK responder, against
the `noiseprotocol` library: the same message 2 byte for byte, the same
transport keys and handshake hash, and every tampered part of message 1
refused (through Responder.open, as the gateway calls it)."""

from __future__ import annotations

import ipaddress
import warnings

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
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


# ---- the remembered static-static DH (noise_ik.Static, issue 15) ----

def test_a_peers_second_handshake_uses_its_remembered_ss_and_is_still_the_librarys():
    """The first admitted handshake remembers ss; the next one of the same
    peer opens with it (no ss exchange) and answers byte for byte as the
    library does."""
    static = noise_ik.Static(GW, PROTOCOL, PROLOGUE)
    first = noise_ik.read_message1(static, _noise_part(Initiator(CL, GW_PUB).initiation()))
    static.remember_ss(first)
    assert static.remembered() == {keys.public_from_private(CL)}

    msg = _noise_part(Initiator(CL, GW_PUB).initiation())
    real = static.key
    static.key = _NoExchange(real)  # es still exchanges; ss must not
    try:
        opened = noise_ik.read_message1(static, msg)
    finally:
        static.key = real
    ephemeral = X25519PrivateKey.generate()
    lib = _library_responder(ephemeral.private_bytes_raw())
    assert opened.payload == lib.read_message(msg)
    body, k1, k2, handshake_hash = noise_ik.write_message2(opened, b"m2", ephemeral)
    assert body == lib.write_message(b"m2")
    proto = lib.noise_protocol
    assert (k1, k2) == (proto.cipher_state_decrypt.k, proto.cipher_state_encrypt.k)
    assert handshake_hash == lib.get_handshake_hash()


class _NoExchange:
    """A static key that exchanges with one public key only (es: the
    message's ephemeral) and fails the test on any other."""

    def __init__(self, key):
        self.key, self.calls = key, 0

    def exchange(self, public):
        self.calls += 1
        assert self.calls == 1, "the remembered ss was computed again"
        return self.key.exchange(public)


def test_only_a_configured_peers_ss_is_remembered_and_a_reload_forgets_the_removed():
    peers = {keys.public_from_private(CL)}
    responder = Responder(GW, lambda k: k in peers)
    responder.open(Initiator(CL, GW_PUB).initiation())
    stranger = keys.generate_private()
    with pytest.raises(HandshakeError, match="unknown_peer"):
        responder.open(Initiator(stranger, GW_PUB).initiation())
    assert responder._static.remembered() == peers  # the stranger's: not kept

    new_key = keys.generate_private()  # the peer's key changed: a new entry, the old one goes
    peers.clear()
    peers.add(keys.public_from_private(new_key))
    responder.peers_changed()
    assert responder._static.remembered() == frozenset()
    with pytest.raises(HandshakeError, match="unknown_peer"):
        responder.open(Initiator(CL, GW_PUB).initiation())  # the old key: refused, not cached
    responder.open(Initiator(new_key, GW_PUB).initiation())
    assert responder._static.remembered() == peers


def test_a_reload_through_admission_forgets_a_removed_peers_ss():
    from jvpn.gateway.admission import Admission

    peer = keys.public_from_private(CL)
    adm = Admission(GW, {peer: ipaddress.IPv4Address("10.99.0.2")},
                    ipaddress.IPv4Interface("10.99.0.1/24"), cookie_threshold_per_s=10**6)
    verdict = adm.check(Initiator(CL, GW_PUB).initiation(), ("192.0.2.9", 4000))
    assert verdict.init.client_public == peer
    assert adm.responder._static.remembered() == {peer}
    adm.set_peers({})
    assert adm.responder._static.remembered() == frozenset()
