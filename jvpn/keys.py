"""Static keys (X25519, base64 like WireGuard's) and the session key schedule.

After the Noise IK handshake, both sides hold the split keys (k1: initiator to
responder, k2: responder to initiator) and the handshake hash. HKDF-SHA256
expands them, bound to the session ID, into:

    data key    client->gateway, gateway->client   (32 bytes each, ChaCha20-Poly1305)
    header key  client->gateway, gateway->client   (16 bytes each, SipHash-2-4 tag)
    reattach key                                     (32 bytes, HMAC-SHA256 proofs)

A key of one session never validates another: the session ID is in the HKDF
info, and every message names its session in the tagged header.

Rekey (issue 13, docs/protocol.md "Rekey"): a session's keys have an epoch
(0 from the handshake). Epoch E+1's keys come from three X25519 secrets, as
in Noise KK: the two fresh ephemerals (ee), the client's ephemeral with the
gateway's static key (es) and the client's static key with the gateway's
ephemeral (se) (``client_rekey_secret`` / ``gateway_rekey_secret``), salted
with a PRF of epoch E's control key and bound to the session ID, both
epochs' numbers, the switch epoch, the record version and both ephemeral
public keys (``derive_rekey``). HKDF is one-way: epoch E+1's keys (and the
static keys) do not give epoch E's; the ephemeral private keys are dropped
once used, so a capture of the exchange plus epoch E's keys plus the static
keys does not give epoch E+1's (ee). An active attacker who holds epoch E's
keys must also hold the static private key of the side it impersonates
(es for the gateway's, se for the client's): E's keys alone do not buy
the next epoch. A :class:`KeyRing` holds at most two epochs: the current
one and, during the overlap, the previous one; the header's key phase (the
epoch's low bit) says which one sealed a message.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import struct
from dataclasses import dataclass, field, replace

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from jvpn.frozen import positional_maker
from jvpn.rekey_answer import RekeyAnswer

KEY_LEN = 32
_INFO = b"jvpn v1 session keys"


class KeyError_(ValueError):
    """A key that is not 32 bytes of base64."""


def generate_private() -> bytes:
    return X25519PrivateKey.generate().private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
        serialization.NoEncryption())


def public_from_private(private: bytes) -> bytes:
    return X25519PrivateKey.from_private_bytes(private).public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def encode(key: bytes) -> str:
    """base64.b64encode(key).decode(), without its wrapper (a listing's rows: issue 15)."""
    return binascii.b2a_base64(key, newline=False).decode()


def decode(text: str) -> bytes:
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise KeyError_("not valid base64") from None
    if len(raw) != KEY_LEN:
        raise KeyError_(f"a key is {KEY_LEN} bytes, this one is {len(raw)}")
    return raw


@dataclass(frozen=True, slots=True)  # slots: the daemon holds one per session (issue 15)
class SessionKeys:
    """One key epoch's secrets (``reattach`` is the control key: reattach
    proofs, control MACs, rekey messages)."""

    session_id: int
    data_c2s: bytes
    data_s2c: bytes
    hdr_c2s: bytes
    hdr_s2c: bytes
    reattach: bytes
    epoch: int = field(default=0, compare=True)  # 0: the handshake's keys

    @property
    def phase(self) -> int:
        """The header's key phase for messages sealed under these keys."""
        return self.epoch & 1

    def pack(self) -> bytes:
        """One epoch's keys without the epoch (the 136 bytes of a version-1
        secrets value; :class:`KeyRing` adds the epochs)."""
        return (struct.pack("<Q", self.session_id) + self.data_c2s + self.data_s2c
                + self.hdr_c2s + self.hdr_s2c + self.reattach)

    @classmethod
    def unpack(cls, raw: bytes, epoch: int = 0) -> SessionKeys:
        if len(raw) != _KEYS.size:
            raise ValueError("stored session keys have the wrong length")
        if cls is SessionKeys:  # its fields at once (jvpn/frozen.py: the same object)
            return _make_keys(*_KEYS.unpack(raw), epoch)
        return cls(*_KEYS.unpack(raw), epoch)  # one C call (a restart unpacks a million)


# one epoch's packed keys: session id, data c2s/s2c, header c2s/s2c, reattach
_KEYS = struct.Struct("<Q32s32s16s16s32s")


def derive_session_keys(session_id: int, k1: bytes, k2: bytes,
                        handshake_hash: bytes) -> SessionKeys:
    okm = HKDF(algorithm=hashes.SHA256(), length=32 + 32 + 16 + 16 + 32, salt=handshake_hash,
               info=_INFO + struct.pack("<Q", session_id)).derive(k1 + k2)
    return SessionKeys(session_id, okm[0:32], okm[32:64], okm[64:80], okm[80:96], okm[96:128])


# ---------------------------------------------------------------- rekey

_REKEY_SALT = b"jvpn v1 rekey salt"
_REKEY_INFO = b"jvpn v1 rekey"
_CONFIRM = b"jvpn v1 rekey confirm"
_RING_MAGIC = b"JKR2"
# magic, flags (1: previous present, 2: confirmed, 4: a rekey answer follows,
# 8: the overlap's end follows, review R5 #6), epoch
_RING_HEAD = struct.Struct("<4sBQ")
_SINGLE_LEN = 8 + 32 + 32 + 16 + 16 + 32
_UNTIL = struct.Struct("<Q")


class RekeyError(ValueError):
    """A rekey exchange that cannot produce keys (a low-order ephemeral)."""


@dataclass(frozen=True, slots=True)
class KeyRing:
    """A session's live keys: ``current`` (the newest epoch) and, during an
    overlap, ``previous`` (still accepted on receive). ``confirmed``: the
    peer has used ``current`` (on the gateway: the client sent under it), so
    this side seals under it; until then it seals under ``previous``."""

    current: SessionKeys
    previous: SessionKeys | None = None
    confirmed: bool = True
    # the gateway's: the answer that made ``current`` (jvpn/rekey_answer.py),
    # kept while ``previous`` is (a re-send gets it again, across restarts)
    answer: RekeyAnswer | None = None
    # a confirmed ring's: when its overlap ends (ms, the gateway's clock, the
    # one its records' times use), so a restart or handoff inside the overlap
    # resumes what is left of it (None: unknown, as in values stored before)
    overlap_until_ms: int | None = None

    def __post_init__(self):
        if self.previous is not None and self.previous.epoch + 1 != self.current.epoch:
            raise ValueError("a key ring holds two consecutive epochs")
        if not self.confirmed and self.previous is None:
            raise ValueError("unconfirmed keys need the previous epoch to send under")
        if self.answer is not None and (self.previous is None
                                        or self.answer.new_epoch != self.current.epoch):
            raise ValueError("a rekey answer belongs to the current epoch of an overlap")

    @classmethod
    def of(cls, keys: SessionKeys | KeyRing) -> KeyRing:
        return keys if isinstance(keys, KeyRing) else cls(keys)

    @property
    def session_id(self) -> int:
        return self.current.session_id

    @property
    def epoch(self) -> int:
        return self.current.epoch

    @property
    def send(self) -> SessionKeys:
        """The keys this side seals under."""
        return self.current if self.confirmed else self.previous  # type: ignore[return-value]

    def for_phase(self, phase: int) -> SessionKeys | None:
        """The keys a message of this key phase was sealed under, if live."""
        if self.current.phase == phase:
            return self.current
        return self.previous  # the other phase, or None outside an overlap

    def live(self) -> tuple[SessionKeys, ...]:
        return (self.current,) if self.previous is None else (self.current, self.previous)

    def rotated(self, new: SessionKeys, confirmed: bool = False,
                answer: RekeyAnswer | None = None) -> KeyRing:
        """``new`` (epoch + 1) becomes current; the current one stays as previous."""
        if new.epoch != self.current.epoch + 1 or new.session_id != self.session_id:
            raise ValueError("a rotation goes to the next epoch of the same session")
        return KeyRing(new, self.current, confirmed, answer)

    def with_confirmed(self, overlap_until_ms: int | None = None) -> KeyRing:
        """The peer used ``current``; the overlap ends at ``overlap_until_ms``."""
        return replace(self, confirmed=True, overlap_until_ms=overlap_until_ms)

    def without_previous(self) -> KeyRing:
        """The overlap is over: only the current epoch is accepted (the
        answer goes too: a request under the previous epoch no longer opens)."""
        return KeyRing(self.current)

    def loaded(self, now_ms: int | None = None) -> KeyRing:
        """This ring as read back from the store (a restart, an adoption, a
        standby, a handoff's reattach) at ``now_ms``: a confirmed ring still
        holding its previous epoch keeps it for what is left of its overlap
        (review R5 #6); past the overlap's end, or with no end stored (a
        value from before), or no time given, the end's store write had not
        landed yet: the previous epoch is never accepted again (R4 #4)."""
        if not (self.confirmed and self.previous):
            return self
        until = self.overlap_until_ms
        if until is not None and now_ms is not None and now_ms < until:
            return self
        return self.without_previous()

    def pack(self) -> bytes:
        """The session store's secrets value: both live epochs."""
        until = self.overlap_until_ms if self.previous is not None else None
        flags = ((1 if self.previous is not None else 0) | (2 if self.confirmed else 0)
                 | (4 if self.answer is not None else 0) | (8 if until is not None else 0))
        out = _RING_HEAD.pack(_RING_MAGIC, flags, self.current.epoch) + self.current.pack()
        if self.previous is not None:
            out += self.previous.pack()
        if self.answer is not None:
            out += self.answer.pack()
        if until is not None:
            out += _UNTIL.pack(until)
        return out

    @classmethod
    def unpack(cls, raw: bytes) -> KeyRing:
        """A secrets value: a version-1 value (136 bytes: epoch 0) or a ring.
        Raises ValueError for anything else."""
        if len(raw) == _SINGLE_LEN:
            return cls(SessionKeys.unpack(raw))
        head = _RING_HEAD.size
        if len(raw) < head or raw[:4] != _RING_MAGIC:
            raise ValueError("stored session keys are neither keys nor a key ring")
        _m, flags, epoch = _RING_HEAD.unpack_from(raw)
        keys_end = head + _SINGLE_LEN * (2 if flags & 1 else 1)
        answer_end = keys_end + (RekeyAnswer.SIZE if flags & 4 else 0)
        if flags & ~15 or len(raw) != answer_end + (_UNTIL.size if flags & 8 else 0):
            raise ValueError("stored key ring has the wrong length or flags")
        current = SessionKeys.unpack(raw[head:head + _SINGLE_LEN], epoch)
        previous = None
        if flags & 1:
            if epoch == 0:
                raise ValueError("stored key ring: epoch 0 has no previous epoch")
            previous = SessionKeys.unpack(raw[head + _SINGLE_LEN:keys_end], epoch - 1)
            if previous.session_id != current.session_id:
                raise ValueError("stored key ring mixes two sessions")
        answer = RekeyAnswer.unpack(raw[keys_end:answer_end]) if flags & 4 else None
        until = _UNTIL.unpack_from(raw, answer_end)[0] if flags & 8 else None
        if cls is KeyRing and previous is None and answer is None and flags & 2:
            # one confirmed epoch (the common ring): __post_init__ has
            # nothing to refuse, so its fields at once (jvpn/frozen.py)
            return _make_ring(current, None, True, None, until)
        return cls(current, previous, bool(flags & 2), answer, until)


# SessionKeys(...) and KeyRing(...) made from their fields at once (a
# restart unpacks a million: issue 15); the same objects as the classes make
_make_keys = positional_maker(SessionKeys)
_make_ring = positional_maker(KeyRing)


def unpack_secrets(raw: bytes) -> KeyRing:
    """What a store's secrets value holds (any version)."""
    return KeyRing.unpack(raw)


def ring_for(rec, raw: bytes) -> KeyRing:
    """The key ring a session's record may be served with: the store's
    secrets value, only if it names the record's session and its current
    epoch is the record's ``key_epoch`` (a version-1 value, epoch 0, only
    for a record at epoch 0). Raises ValueError otherwise: a stale backup's
    or another session's keys are never served (review R1 #6)."""
    ring = KeyRing.unpack(raw)
    current = ring.current  # its session and epoch (the properties', without the calls)
    if current.session_id != rec.session_id:
        raise ValueError(f"stored keys name session {current.session_id:016x}, "
                         f"not {rec.session_id:016x}")
    if current.epoch != rec.key_epoch:
        raise ValueError(f"stored keys are of epoch {current.epoch}, the record's is "
                         f"{rec.key_epoch}")
    a = ring.answer  # the previous epoch was made before the current one, never after
    if a is not None and (a.version > rec.version or a.prev_keys_ms > rec.keys_ms
                          or a.prev_c2s_base > rec.key_c2s_base
                          or a.prev_s2c_base > rec.key_s2c_base):
        raise ValueError("stored rekey answer does not fit the record")
    return ring


def _dh(private: X25519PrivateKey, peer_public: bytes) -> bytes:
    """One X25519 secret; RekeyError for a low-order or malformed key."""
    try:
        shared = private.exchange(X25519PublicKey.from_public_bytes(peer_public))
    except ValueError as e:  # all-zero output (low-order point) or a bad length
        raise RekeyError(f"key exchange failed: {e}") from None
    if not any(shared):
        raise RekeyError("key exchange gave the all-zero secret")
    return shared


class Ephemeral:
    """One side's ephemeral X25519 key for one rekey attempt."""

    def __init__(self, private: X25519PrivateKey | None = None):
        self._private = private or X25519PrivateKey.generate()
        self.public = self._private.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw)

    def exchange(self, peer_public: bytes) -> bytes:
        """The shared secret; RekeyError for a low-order or malformed key."""
        return _dh(self._private, peer_public)


def _static(private: bytes) -> X25519PrivateKey:
    return X25519PrivateKey.from_private_bytes(private)


def client_rekey_secret(eph: Ephemeral, gateway_ephemeral: bytes, client_static: bytes,
                        gateway_static_public: bytes) -> bytes:
    """The client's ``derive_rekey`` input: ee | es | se, where es is its
    ephemeral with the gateway's static key and se its static private key
    with the gateway's ephemeral. RekeyError if any is unusable."""
    return (eph.exchange(gateway_ephemeral) + eph.exchange(gateway_static_public)
            + _dh(_static(client_static), gateway_ephemeral))


def gateway_rekey_secret(eph: Ephemeral, client_ephemeral: bytes, gateway_static: bytes,
                         client_static_public: bytes) -> bytes:
    """The gateway's ``derive_rekey`` input, equal to the client's: ee |
    es (its static private key with the client's ephemeral) | se (its
    ephemeral with the client's static key)."""
    return (eph.exchange(client_ephemeral) + _dh(_static(gateway_static), client_ephemeral)
            + eph.exchange(client_static_public))


@dataclass(frozen=True)
class RekeyBinding:
    """What the new keys are bound to: everything both sides agree on."""

    new_epoch: int
    switch_epoch: int
    version: int  # the record version the gateway committed the new keys at
    client_ephemeral: bytes
    gateway_ephemeral: bytes

    def info(self, session_id: int) -> bytes:
        return (_REKEY_INFO + struct.pack("<QQQQ", session_id, self.new_epoch,
                                           self.switch_epoch, self.version)
                + self.client_ephemeral + self.gateway_ephemeral)


REKEY_SECRET_LEN = 3 * KEY_LEN


def derive_rekey(current: SessionKeys, shared: bytes, b: RekeyBinding) -> SessionKeys:
    """Epoch ``b.new_epoch``'s keys from ``current`` (its predecessor) and
    ``shared``: the three X25519 secrets ee | es | se in this order (96
    bytes; ``client_rekey_secret`` / ``gateway_rekey_secret``). The ephemeral
    secret alone is refused: a rekey is bound to both static keys."""
    if len(shared) != REKEY_SECRET_LEN:
        raise RekeyError(f"a rekey derives from {REKEY_SECRET_LEN} bytes of secrets "
                         f"(ee | es | se), not {len(shared)}")
    if b.new_epoch != current.epoch + 1:
        raise RekeyError(f"epoch {b.new_epoch} does not follow {current.epoch}")
    salt = hmac.new(current.reattach, _REKEY_SALT, hashlib.sha256).digest()
    okm = HKDF(algorithm=hashes.SHA256(), length=32 + 32 + 16 + 16 + 32, salt=salt,
               info=b.info(current.session_id)).derive(shared)
    return SessionKeys(current.session_id, okm[0:32], okm[32:64], okm[64:80], okm[80:96],
                       okm[96:128], epoch=b.new_epoch)


def rekey_confirm(new: SessionKeys, b: RekeyBinding) -> bytes:
    """The gateway's proof that it holds ``new``: the client checks it before
    it seals anything under them."""
    return hmac.new(new.reattach, _CONFIRM + b.info(new.session_id), hashlib.sha256).digest()
