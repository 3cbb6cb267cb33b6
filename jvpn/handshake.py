"""Noise IK handshake (Noise_IK_25519_ChaChaPoly_BLAKE2s: the initiator via
the `noiseprotocol` library, the gateway's responder written out in
jvpn/noise_ik.py, the same bytes), WireGuard-style MAC1/MAC2 and stateless
cookies.

HANDSHAKE_INIT  (client -> gateway)
    jvpn header (session 0, counter 0, tag 0) | Noise msg1 | mac1 (16) | mac2 (16)
    msg1's encrypted payload: timestamp (u64 ns, big-endian, below 2**63; an
    initiation not newer than the peer's last accepted one is a replay: the
    gateway keeps that timestamp in its store, jvpn/gateway/control.py)
HANDSHAKE_RESP  (gateway -> client)
    jvpn header (new session id, counter 0, tag under the s2c header key) | Noise msg2
    msg2's encrypted payload, versioned by its length:
      v1 (17 bytes): session id (u64) | client inner IPv4 (4) | prefix (1)
                     | gateway inner IPv4 (4)
      v2 (50 bytes): v1 | client inner IPv6 (16) | prefix (1) | gateway inner IPv6 (16)
    (v2 only for a peer given an IPv6 address; any other length is refused)
COOKIE_REPLY    (gateway -> client, under load, before any DH)
    jvpn header (session 0) | nonce (12) | cookie sealed (16 + 16)

mac1 proves the sender knows the gateway's public key (cheap filter); mac2,
required only under load, proves the sender can receive at its source address
(the cookie is a MAC of that address under a secret rotated every 2 minutes).
"""

from __future__ import annotations

import copy
import hashlib
import ipaddress
import os
import struct
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from noise.connection import Keypair, NoiseConnection

from jvpn import noise_ik, wire
from jvpn.gate import abi
from jvpn.keys import SessionKeys, derive_session_keys, public_from_private

PROTOCOL = b"Noise_IK_25519_ChaChaPoly_BLAKE2s"
PROLOGUE = b"jvpn v1"
MAC_LEN = 16
COOKIE_SECRET_MAX_AGE_S = 120
MAX_TIMESTAMP_NS = 1 << 63  # the stores keep signed 64-bit integers (year 2262)
_RESP_PAYLOAD = struct.Struct("!Q4sB4s")  # v1: IPv4 inside
_RESP_V6 = struct.Struct("!16sB16s")  # v2 appends it: IPv6 inside


class HandshakeError(Exception):
    """Rejected handshake; ``reason`` is a short code for the event stream."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


def _mac(key: bytes, data: bytes) -> bytes:
    return hashlib.blake2s(data, key=key, digest_size=MAC_LEN).digest()


def _label_key(label: bytes, public: bytes) -> bytes:
    return hashlib.blake2s(label + public).digest()


def mac1_key(gateway_public: bytes) -> bytes:
    return _label_key(b"mac1----", gateway_public)


def cookie_key(gateway_public: bytes) -> bytes:
    return _label_key(b"cookie--", gateway_public)


def pack_assignment(session_id: int, client4: bytes, prefix4: int, gateway4: bytes,
                    six: tuple[bytes, int, bytes] | None = None) -> bytes:
    """The response payload from packed addresses (``six``: the client's
    IPv6, its prefix and the gateway's): v1, or v2 with ``six``. The
    gateway's one encoding, without the ``ipaddress`` objects of an
    :class:`Assignment` (a fifth of a handshake's non-Noise work on the
    control path went to making them, issue 15). An address of the wrong
    length is refused (struct's ``4s``/``16s`` would cut or pad it into
    another address: review k18r2 #1)."""
    if len(client4) != 4 or len(gateway4) != 4:
        raise ValueError("an IPv4 assignment needs 4-byte addresses")
    if six is not None and (len(six[0]) != 16 or len(six[2]) != 16):
        raise ValueError("an IPv6 assignment needs 16-byte addresses")
    v1 = _RESP_PAYLOAD.pack(session_id, client4, prefix4, gateway4)
    return v1 if six is None else v1 + _RESP_V6.pack(*six)


@dataclass(frozen=True, slots=True)
class Granted:
    """What the gateway tells the client, as the response payload's fields
    (:func:`pack_assignment`); the client reads it as an :class:`Assignment`."""

    session_id: int
    client4: bytes
    prefix4: int
    gateway4: bytes
    six: tuple[bytes, int, bytes] | None = None

    def pack(self) -> bytes:
        return pack_assignment(self.session_id, self.client4, self.prefix4, self.gateway4,
                               self.six)


@dataclass(frozen=True)
class Assignment:
    """What the gateway tells the client in the response."""

    session_id: int
    client_inner: ipaddress.IPv4Interface
    gateway_inner: ipaddress.IPv4Address
    client_inner6: ipaddress.IPv6Interface | None = None  # both or neither
    gateway_inner6: ipaddress.IPv6Address | None = None

    def pack(self) -> bytes:
        """The response payload: v1, or v2 when the peer has an IPv6 address."""
        six = (None if self.client_inner6 is None or self.gateway_inner6 is None
               else (self.client_inner6.ip.packed, self.client_inner6.network.prefixlen,
                     self.gateway_inner6.packed))
        return pack_assignment(self.session_id, self.client_inner.ip.packed,
                               self.client_inner.network.prefixlen, self.gateway_inner.packed, six)

    @classmethod
    def unpack(cls, payload: bytes) -> Assignment:
        """The payload's fields; HandshakeError("bad_response") for a length
        that is neither version, or an address that cannot be configured."""
        if len(payload) not in (_RESP_PAYLOAD.size, _RESP_PAYLOAD.size + _RESP_V6.size):
            raise HandshakeError("bad_response", "payload length")
        sid, cip, plen, gip = _RESP_PAYLOAD.unpack_from(payload)
        if not 1 <= plen <= 32:
            raise HandshakeError("bad_response", f"inner IPv4 prefix /{plen}")
        client = ipaddress.IPv4Interface((ipaddress.IPv4Address(cip), plen))
        out = cls(sid, client, ipaddress.IPv4Address(gip))
        if len(payload) == _RESP_PAYLOAD.size:
            return out
        cip6, plen6, gip6 = _RESP_V6.unpack_from(payload, _RESP_PAYLOAD.size)
        if not 1 <= plen6 <= 128:
            raise HandshakeError("bad_response", f"inner IPv6 prefix /{plen6}")
        client6 = ipaddress.IPv6Interface((ipaddress.IPv6Address(cip6), plen6))
        if client6.ip.is_unspecified or client6.ip.is_multicast:
            raise HandshakeError("bad_response", f"inner IPv6 address {client6.ip}")
        return cls(sid, client, out.gateway_inner, client6, ipaddress.IPv6Address(gip6))


@dataclass
class Initiator:
    """Client side of one handshake attempt."""

    private: bytes
    gateway_public: bytes
    clock_ns: Callable[[], int] = time.time_ns

    def __post_init__(self):
        # The ephemeral key and the timestamp are kept so a response can be
        # tried on a REPLAYED Noise state (_replay): a failed read_message
        # spoils the state it ran on, and one forged reply must not spoil
        # this attempt for the genuine one that follows (review R3 #1).
        self._ephemeral = os.urandom(32)
        self._timestamp: bytes | None = None
        self._body = b""
        self._written: NoiseConnection | None = None  # the state after msg1: forked per reply
        self.last_mac1 = b""
        self.cookie: bytes | None = None

    def _replay(self) -> NoiseConnection:
        """A Noise state that has written exactly our msg1 (same ephemeral, same payload)."""
        noise = NoiseConnection.from_name(PROTOCOL)
        noise.set_as_initiator()
        noise.set_prologue(PROLOGUE)
        noise.set_keypair_from_private_bytes(Keypair.STATIC, self.private)
        noise.set_keypair_from_private_bytes(Keypair.EPHEMERAL, self._ephemeral)
        noise.set_keypair_from_public_bytes(Keypair.REMOTE_STATIC, self.gateway_public)
        with warnings.catch_warnings():  # "ephemeral set: testing only": ours is random, kept
            warnings.filterwarnings("ignore", "One of ephemeral keypairs", UserWarning)
            noise.start_handshake()
        if self._timestamp is not None:
            if noise.write_message(self._timestamp) != self._body:  # deterministic by design
                raise HandshakeError("bad_state", "replayed initiation differs")
        return noise

    @property
    def timestamp_ns(self) -> int | None:
        """The timestamp the initiation carries (None: none made yet)."""
        return None if self._timestamp is None else struct.unpack("!Q", self._timestamp)[0]

    def initiation(self) -> bytes:
        hdr = wire.Header(type=abi.MSG_HANDSHAKE_INIT, session_id=0, counter=0).pack()
        self._timestamp = None
        noise = self._replay()
        self._timestamp = struct.pack("!Q", self.clock_ns())
        self._body = noise.write_message(self._timestamp)
        self._written = noise
        body = hdr + self._body
        mac1 = _mac(mac1_key(self.gateway_public), body)
        mac2 = _mac(self.cookie, body + mac1) if self.cookie else bytes(MAC_LEN)
        self.last_mac1 = mac1
        return body + mac1 + mac2

    def consume_cookie(self, msg: bytes) -> None:
        """A COOKIE_REPLY: keep the cookie; the caller starts a new Initiator
        with it (a Noise state cannot be rewound)."""
        if len(msg) != abi.HDR_LEN + 12 + MAC_LEN + 16:
            raise HandshakeError("bad_cookie_reply", "wrong length")
        nonce = msg[abi.HDR_LEN:abi.HDR_LEN + 12]
        try:
            self.cookie = ChaCha20Poly1305(cookie_key(self.gateway_public)).decrypt(
                nonce, msg[abi.HDR_LEN + 12:], self.last_mac1)
        except InvalidTag:
            raise HandshakeError("bad_cookie_reply", "does not open") from None

    def response(self, msg: bytes) -> tuple[Assignment, SessionKeys]:
        hdr = wire.parse_header(msg)
        if hdr.type != abi.MSG_HANDSHAKE_RESP:
            raise HandshakeError("unexpected_type", str(hdr.type))
        if self._timestamp is None:
            raise HandshakeError("unexpected_type", "no initiation sent")
        # a fresh copy per reply: a forged one spoils only its copy
        forked = _fork(self._written) if self._written is not None else None
        noise = forked if forked is not None else self._replay()
        try:
            payload = noise.read_message(msg[abi.HDR_LEN:])
        except Exception as e:  # noqa: BLE001 - noiseprotocol raises several unrelated types
            raise HandshakeError("bad_response", str(e)) from None
        assignment = Assignment.unpack(payload)
        sid = assignment.session_id
        if sid != hdr.session_id or sid == 0:
            raise HandshakeError("bad_response", "session id mismatch")
        keys = _split(noise, sid, initiator=True)
        if not hdr.tag_valid(keys.hdr_s2c):
            raise HandshakeError("bad_response", "header tag")
        return assignment, keys


def _fork(noise: NoiseConnection) -> NoiseConnection | None:
    """An independent copy of a Noise state (review R4 #3: rebuilding one by
    replaying msg1 costs two DH per reply; this ~0.1 ms). Shared, not
    copied: what reading a message never changes (the library's backend,
    pattern and functions, our key pairs: it assigns new ones, never
    changes these) and the `cryptography` AEAD context (not copyable; the
    library replaces it, with a new key, never changes it). Anything else a
    library version adds is copied; None if that fails (the caller replays)."""
    proto = noise.noise_protocol
    hs = proto.handshake_state
    cs = getattr(getattr(getattr(hs, "symmetric_state", None), "cipher_state", None),
                 "cipher", None)
    keep = (getattr(proto, "backend", None), getattr(proto, "pattern", None),
            getattr(proto, "hmac", None), getattr(proto, "hkdf", None),
            getattr(proto, "dh_fn", None), getattr(proto, "hash_fn", None),
            getattr(hs, "s", None), getattr(hs, "e", None), getattr(hs, "rs", None),
            getattr(cs, "cipher", None))
    try:
        return copy.deepcopy(noise, {id(o): o for o in keep if o is not None})
    except TypeError:  # an object the copy cannot take
        return None


def _split(noise: NoiseConnection, sid: int, initiator: bool) -> SessionKeys:
    proto = noise.noise_protocol
    enc, dec = proto.cipher_state_encrypt.k, proto.cipher_state_decrypt.k
    k1, k2 = (enc, dec) if initiator else (dec, enc)
    return derive_session_keys(sid, k1, k2, noise.get_handshake_hash())


@dataclass
class Initiation:
    """A validated HANDSHAKE_INIT, before the gateway answers it."""

    client_public: bytes
    timestamp_ns: int
    _opened: noise_ik.Opened

    def respond(self, assignment: Assignment | Granted) -> tuple[bytes, SessionKeys]:
        body, k1, k2, handshake_hash = noise_ik.write_message2(self._opened, assignment.pack())
        keys = derive_session_keys(assignment.session_id, k1, k2, handshake_hash)
        hdr = wire.Header(type=abi.MSG_HANDSHAKE_RESP, session_id=assignment.session_id,
                          counter=0).pack(keys.hdr_s2c)
        return hdr + body, keys


class CookieChecker:
    """The gateway's MAC1/MAC2 gate and cookie replies. ``under_load`` is
    decided by the caller (handshakes per second over a threshold)."""

    def __init__(self, gateway_private: bytes, clock: Callable[[], float] = time.monotonic,
                 rand: Callable[[int], bytes] = os.urandom):
        self.public = public_from_private(gateway_private)
        self._mac1_key = mac1_key(self.public)
        self._cookie_aead = ChaCha20Poly1305(cookie_key(self.public))
        self._clock, self._rand = clock, rand
        self._secret, self._secret_born = rand(32), clock()

    def _cookie(self, source: tuple[str, int]) -> bytes:
        if self._clock() - self._secret_born > COOKIE_SECRET_MAX_AGE_S:
            self._secret, self._secret_born = self._rand(32), self._clock()
        addr = ipaddress.ip_address(source[0]).packed + struct.pack("!H", source[1])
        return _mac(self._secret, addr)

    def check(self, msg: bytes, source: tuple[str, int], under_load: bool) -> bytes | None:
        """None if the message may proceed to DH; else the COOKIE_REPLY to
        send. Raises HandshakeError on a bad mac1 (drop silently)."""
        if len(msg) < abi.HDR_LEN + 2 * MAC_LEN:
            raise HandshakeError("malformed", "too short")
        body, mac1, mac2 = msg[:-32], msg[-32:-16], msg[-16:]
        if not _consteq(_mac(self._mac1_key, body), mac1):
            raise HandshakeError("bad_mac1")
        if not under_load:
            return None
        if _consteq(_mac(self._cookie(source), body + mac1), mac2):
            return None
        nonce = self._rand(12)
        sealed = self._cookie_aead.encrypt(nonce, self._cookie(source), mac1)
        hdr = wire.Header(type=abi.MSG_COOKIE_REPLY, session_id=0, counter=0).pack()
        return hdr + nonce + sealed


def _consteq(a: bytes, b: bytes) -> bool:
    import hmac

    return hmac.compare_digest(a, b)


class Responder:
    """The gateway's side: opens an initiation, checks the peer and that its
    timestamp is newer than the last one this process accepted (a cheap
    first filter; the store's record is the authority, jvpn/store). Nothing
    is remembered until :meth:`accepted`: WireGuard's rule, no state moves
    before the whole handshake is validated."""

    def __init__(self, private: bytes, is_authorized: Callable[[bytes], bool]):
        self.private = private
        self.is_authorized = is_authorized
        self._static = noise_ik.Static(private, PROTOCOL, PROLOGUE)
        self._last_ts: dict[bytes, int] = {}

    def open(self, msg: bytes) -> Initiation:
        try:
            opened = noise_ik.read_message1(self._static, msg[abi.HDR_LEN:-2 * MAC_LEN])
        except noise_ik.NoiseError as e:
            raise HandshakeError("bad_initiation", str(e)) from None
        client = opened.remote_static
        if not self.is_authorized(client):
            raise HandshakeError("unknown_peer")
        payload = opened.payload
        if len(payload) != 8:
            raise HandshakeError("bad_initiation", "payload length")
        (ts,) = struct.unpack("!Q", payload)
        if ts >= MAX_TIMESTAMP_NS:
            raise HandshakeError("bad_initiation", "timestamp out of range")
        if ts <= self._last_ts.get(client, 0):
            raise HandshakeError("replayed_initiation", "timestamp not newer")
        return Initiation(client, ts, opened)

    def accepted(self, init: Initiation) -> None:
        """``init`` was claimed in the store: no older one opens here again."""
        last = self._last_ts.get(init.client_public, 0)
        self._last_ts[init.client_public] = max(last, init.timestamp_ns)
