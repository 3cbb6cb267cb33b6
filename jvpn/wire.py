"""The jvpn wire header: pack, parse and tag (layout in bpf/include/jvpn_abi.h).

Every message starts with 32 bytes::

    type u8 | version u8 | flags u16 | reserved u32 | session_id u64 | counter u64 | tag u64

little-endian, as WireGuard's. ``tag`` is SipHash-2-4 over bytes [0, 24) under
the session's per-direction header key; the XDP program recomputes it before it
lets a packet touch any per-session state.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from siphash24 import siphash24

from . import abi

_HDR = struct.Struct("<BBHIQQQ")
_TAGGED = struct.Struct("<BBHIQQ")
assert _HDR.size == abi.HDR_LEN and _TAGGED.size == abi.TAGGED_LEN


class WireError(ValueError):
    """A message that cannot be parsed."""


def header_tag(key: bytes, tagged: bytes) -> int:
    """SipHash-2-4 of the first 24 header bytes under a 16-byte key."""
    if len(key) != 16:
        raise ValueError("header key must be 16 bytes")
    return siphash24(tagged, key=key).intdigest() & 0xFFFFFFFFFFFFFFFF


def key_words(key: bytes) -> tuple[int, int]:
    """The (k0, k1) words the XDP program stores for a 16-byte SipHash key."""
    if len(key) != 16:
        raise ValueError("header key must be 16 bytes")
    return struct.unpack("<QQ", key)


@dataclass(frozen=True)
class Header:
    type: int
    session_id: int
    counter: int
    flags: int = 0
    version: int = abi.WIRE_VERSION
    reserved: int = 0
    tag: int = 0

    def tagged_bytes(self) -> bytes:
        return _TAGGED.pack(
            self.type, self.version, self.flags, self.reserved, self.session_id, self.counter
        )

    def pack(self, key: bytes | None = None) -> bytes:
        """The 32 header bytes; with ``key`` the tag is computed, else kept."""
        tagged = self.tagged_bytes()
        tag = header_tag(key, tagged) if key is not None else self.tag
        return tagged + struct.pack("<Q", tag)

    def tag_valid(self, key: bytes) -> bool:
        return header_tag(key, self.tagged_bytes()) == self.tag


def parse_header(msg: bytes) -> Header:
    if len(msg) < abi.HDR_LEN:
        raise WireError(f"message of {len(msg)} bytes is shorter than the header")
    t, v, flags, reserved, sid, counter, tag = _HDR.unpack_from(msg)
    return Header(
        type=t, version=v, flags=flags, reserved=reserved, session_id=sid, counter=counter, tag=tag
    )


def message(hdr: Header, key: bytes | None, payload: bytes = b"") -> bytes:
    """A whole jvpn message: header (tagged under ``key``) then payload."""
    return hdr.pack(key) + payload
