"""The responder's half of Noise_IK_25519_ChaChaPoly_BLAKE2s (the Noise
Protocol Framework, revision 34, sections 5 and 7), written out on the
`cryptography` primitives the `noiseprotocol` library uses itself.

Why not the library, as the initiator does (jvpn/handshake.py): the gateway
answers every handshake of every peer on one control thread, and the
library's generic state machine (the pattern parsed per connection, objects
built per token, a deep copy per hash) cost about 0.5 ms a handshake, twice
the four X25519 operations it does (issue 15: handshakes per core). The
messages are the same bytes: tests/unit/test_noise_ik.py checks this
responder against the library's initiator, and that every tampered field is
refused.

Message 1 (initiator -> responder): e, es, s, ss, payload
Message 2 (responder -> initiator): e, ee, se, payload
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

HASHLEN = 32
DHLEN = 32
TAGLEN = 16
_RAW = (serialization.Encoding.Raw, serialization.PublicFormat.Raw)


class NoiseError(Exception):
    """A message that does not open (a tag, a length, a public key)."""


class AlreadyAnswered(RuntimeError):
    """Message 2 written a second time from one message 1: the state it
    continues from has moved on, so the message would be one the initiator
    refuses (a caller's mistake, not a peer's)."""


def _hash(data: bytes) -> bytes:
    return hashlib.blake2s(data).digest()


BLOCKLEN = 64  # BLAKE2s's block: HMAC pads its key to this
_IPAD = bytes(x ^ 0x36 for x in range(256))  # translate tables: the key XOR ipad/opad
_OPAD = bytes(x ^ 0x5C for x in range(256))
_blake2s = hashlib.blake2s


def _hmac_pads(key: bytes) -> tuple[bytes, bytes]:
    """HMAC's (RFC 2104) inner and outer key blocks for ``key``."""
    if len(key) > BLOCKLEN:
        key = _blake2s(key).digest()
    key = key.ljust(BLOCKLEN, b"\x00")
    return key.translate(_IPAD), key.translate(_OPAD)


def _hmac(pads: tuple[bytes, bytes], data: bytes) -> bytes:
    inner, outer = pads
    return _blake2s(outer + _blake2s(inner + data).digest()).digest()


def _hkdf2(chaining_key: bytes, ikm: bytes) -> tuple[bytes, bytes]:
    """HKDF(ck, ikm, 2) with HMAC-BLAKE2s (section 4.3). HMAC written out
    on hashlib's BLAKE2s: ``hmac.digest`` has no fast path for it (it
    builds an HMAC object per call), and ``temp``'s pads serve two HMACs
    (issue 15: 15 HMACs per handshake; tests/unit/test_noise_ik.py checks
    them against ``hmac``)."""
    temp = _hmac(_hmac_pads(chaining_key), ikm)
    pads = _hmac_pads(temp)
    out1 = _hmac(pads, b"\x01")
    return out1, _hmac(pads, out1 + b"\x02")


def _nonce(n: int) -> bytes:
    return b"\x00" * 4 + n.to_bytes(8, "little")


def _public(public: bytes) -> X25519PublicKey:
    """A peer's public key, parsed once for its two DHs (es and ee: the
    ephemeral; ss and se: the static)."""
    try:
        return X25519PublicKey.from_public_bytes(public)
    except ValueError as e:
        raise NoiseError(f"bad public key: {e}") from None


def _dh(private: X25519PrivateKey, public: X25519PublicKey) -> bytes:
    """X25519; a public key of small order (an all-zero result) is refused."""
    try:
        return private.exchange(public)
    except ValueError as e:
        raise NoiseError(f"bad public key: {e}") from None


class Symmetric:
    """SymmetricState (section 5.2) with its CipherState (5.1)."""

    def __init__(self, protocol: bytes, prologue: bytes):
        self.h = protocol.ljust(HASHLEN, b"\x00") if len(protocol) <= HASHLEN else _hash(protocol)
        self.ck = self.h
        self.k: bytes | None = None
        self.n = 0
        self.mix_hash(prologue)

    def mix_hash(self, data: bytes) -> None:
        self.h = _hash(self.h + data)

    def mix_key(self, ikm: bytes) -> None:
        self.ck, self.k = _hkdf2(self.ck, ikm)
        self.n = 0

    def encrypt_and_hash(self, plaintext: bytes) -> bytes:
        if self.k is None:
            out = plaintext
        else:
            out = ChaCha20Poly1305(self.k).encrypt(_nonce(self.n), plaintext, self.h)
            self.n += 1
        self.mix_hash(out)
        return out

    def decrypt_and_hash(self, ciphertext: bytes) -> bytes:
        if self.k is None:
            out = ciphertext
        else:
            try:
                out = ChaCha20Poly1305(self.k).decrypt(_nonce(self.n), ciphertext, self.h)
            except InvalidTag:
                raise NoiseError("tag does not verify") from None
            self.n += 1
        self.mix_hash(ciphertext)
        return out

    def split(self) -> tuple[bytes, bytes]:
        """(initiator -> responder key, responder -> initiator key)."""
        return _hkdf2(self.ck, b"")


class Static:
    """The responder's static key pair, with the symmetric state after the
    pre-message (``<- s``), which every handshake starts from.

    The static-static DH (``ss``) is computed for every message 1, never
    remembered per peer: a remembered ss made a forged message 1 naming an
    active peer one X25519 cheaper than one naming an idle peer (an
    activity oracle for anyone who knows a public key), for ~45 us of a
    ~700 us handshake (issue 15, review k16r4)."""

    def __init__(self, private: bytes, protocol: bytes, prologue: bytes):
        self.key = X25519PrivateKey.from_private_bytes(private)
        self.public = self.key.public_key().public_bytes(*_RAW)
        start = Symmetric(protocol, prologue)
        start.mix_hash(self.public)
        self._h, self._ck = start.h, start.ck

    def fresh(self) -> Symmetric:
        sym = Symmetric.__new__(Symmetric)
        sym.h, sym.ck, sym.k, sym.n = self._h, self._ck, None, 0
        return sym


@dataclass
class Opened:
    """Message 1, read: the initiator's static key and payload, and the state
    message 2 continues from."""

    remote_static: bytes
    payload: bytes
    remote_ephemeral: X25519PublicKey
    symmetric: Symmetric
    remote_static_key: X25519PublicKey
    answered: bool = False  # message 2 written: the symmetric state is spent


def read_message1(static: Static, msg: bytes) -> Opened:
    """-> e, es, s, ss, payload (raises NoiseError)."""
    if len(msg) < DHLEN + DHLEN + TAGLEN + TAGLEN:
        raise NoiseError("message 1 too short")
    sym = static.fresh()
    re = msg[:DHLEN]
    sym.mix_hash(re)
    re_key = _public(re)
    sym.mix_key(_dh(static.key, re_key))                                  # es
    rs = sym.decrypt_and_hash(msg[DHLEN:DHLEN + DHLEN + TAGLEN])          # s
    rs_key = _public(rs)
    sym.mix_key(_dh(static.key, rs_key))                                  # ss
    payload = sym.decrypt_and_hash(msg[DHLEN + DHLEN + TAGLEN:])
    return Opened(rs, payload, re_key, sym, rs_key)


def write_message2(opened: Opened, payload: bytes,
                   ephemeral: X25519PrivateKey | None = None) -> tuple[bytes, bytes, bytes, bytes]:
    """<- e, ee, se, payload: (message, initiator->responder key,
    responder->initiator key, handshake hash). Once per message 1 (a
    second call raises AlreadyAnswered)."""
    if opened.answered:
        raise AlreadyAnswered("message 2 was written already for this message 1")
    opened.answered = True  # before any mix: a failure half-way spends the state too
    sym = opened.symmetric
    e = ephemeral or X25519PrivateKey.generate()
    e_pub = e.public_key().public_bytes_raw()
    sym.mix_hash(e_pub)
    sym.mix_key(_dh(e, opened.remote_ephemeral))                          # ee
    sym.mix_key(_dh(e, opened.remote_static_key))                         # se
    body = e_pub + sym.encrypt_and_hash(payload)
    k1, k2 = sym.split()
    return body, k1, k2, sym.h
