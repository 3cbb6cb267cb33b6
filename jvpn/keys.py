"""Static keys (X25519, base64 like WireGuard's) and the session key schedule.

After the Noise IK handshake, both sides hold the split keys (k1: initiator to
responder, k2: responder to initiator) and the handshake hash. HKDF-SHA256
expands them, bound to the session ID, into:

    data key    client->gateway, gateway->client   (32 bytes each, ChaCha20-Poly1305)
    header key  client->gateway, gateway->client   (16 bytes each, SipHash-2-4 tag)
    reattach key                                     (32 bytes, HMAC-SHA256 proofs)

A key of one session never validates another: the session ID is in the HKDF
info, and every message names its session in the tagged header.
"""

from __future__ import annotations

import base64
import binascii
import struct
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

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
    return base64.b64encode(key).decode()


def decode(text: str) -> bytes:
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise KeyError_("not valid base64") from None
    if len(raw) != KEY_LEN:
        raise KeyError_(f"a key is {KEY_LEN} bytes, this one is {len(raw)}")
    return raw


@dataclass(frozen=True)
class SessionKeys:
    session_id: int
    data_c2s: bytes
    data_s2c: bytes
    hdr_c2s: bytes
    hdr_s2c: bytes
    reattach: bytes

    def pack(self) -> bytes:
        """For the session store (secrets column)."""
        return (struct.pack("<Q", self.session_id) + self.data_c2s + self.data_s2c
                + self.hdr_c2s + self.hdr_s2c + self.reattach)

    @classmethod
    def unpack(cls, raw: bytes) -> SessionKeys:
        if len(raw) != 8 + 32 + 32 + 16 + 16 + 32:
            raise ValueError("stored session keys have the wrong length")
        (sid,) = struct.unpack_from("<Q", raw)
        p = 8
        parts = []
        for n in (32, 32, 16, 16, 32):
            parts.append(raw[p:p + n])
            p += n
        return cls(sid, *parts)


def derive_session_keys(session_id: int, k1: bytes, k2: bytes,
                        handshake_hash: bytes) -> SessionKeys:
    okm = HKDF(algorithm=hashes.SHA256(), length=32 + 32 + 16 + 16 + 32, salt=handshake_hash,
               info=_INFO + struct.pack("<Q", session_id)).derive(k1 + k2)
    return SessionKeys(session_id, okm[0:32], okm[32:64], okm[64:80], okm[80:96], okm[96:128])
