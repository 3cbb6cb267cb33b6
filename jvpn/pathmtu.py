"""Outer datagram sizing (issue 11): every jvpn datagram fits the path.

The TUN keeps a large MTU (jvpn splits an inner packet into DATA messages
itself, docs/protocol.md "Sizing"), so what must follow the path is the outer
datagram: outer IP header + UDP + the 32-byte header + plaintext + the 16-byte
AEAD tag <= the path MTU. The IP header depends on the outer family.

The client knows its path (the route to the gateway); the gateway does not,
so the client announces its path MTU in the authenticated KEEPALIVE payload
(``announcement`` / ``parse_announcement``): version u8 (1) | path MTU u16 LE.
An empty keepalive payload announces nothing (the gateway's replies).

Only the ABI constants are imported: config.py and tunnel.py both read these.
"""

from __future__ import annotations

import ipaddress
import struct

from jvpn.fastip import address_memo, ipv4_packed
from jvpn.gate.abi import AEAD_TAG_LEN, HDR_LEN

UDP_LEN = 8
IP_HEADER_LEN = {4: 20, 6: 40}  # no options, no extension headers: we send none
# The smallest path each family must carry: IPv4's 576-byte datagrams every
# host reassembles (RFC 791), IPv6's 1280-byte minimum link MTU (RFC 8200).
MIN_PATH_MTU = {4: 576, 6: 1280}
MAX_PATH_MTU = 65535  # the IPv4 total length / a u16 announcement
# Before a peer announced anything: the size every jvpn datagram had before
# issue 11 (a 1500-byte Ethernet path), so a gateway answers at once.
DEFAULT_PATH_MTU = 1500

# the client's TUN (wg-quick's ``MTU =``): large by default (docs/protocol.md
# "Sizing"); at least 1280 so inner IPv6 works, at most what a TUN read takes
DEFAULT_TUN_MTU = 65000
TUN_MTU_RANGE = (1280, 65535)
PATH_MTU_RANGE = (MIN_PATH_MTU[4], MAX_PATH_MTU)  # the config's PathMTU

ANNOUNCE_VERSION = 1
_ANNOUNCE = struct.Struct("<BH")


@address_memo  # per confirmed session and answer (issue 15): bounded, exact short strings
def family_of(addr: str) -> int:
    """4 or 6: the IP version a datagram to ``addr`` goes out with (an
    IPv4-mapped IPv6 address, as a dual-stack socket reports one, is IPv4)."""
    if ipv4_packed(addr) is not None:
        return 4
    ip = ipaddress.ip_address(addr)
    if ip.version == 6 and ip.ipv4_mapped is not None:
        return 4
    return ip.version


def clamp_path_mtu(path_mtu: int, family: int) -> int:
    """The path MTU within what ``family`` must carry and an IP packet can be."""
    return max(MIN_PATH_MTU[family], min(MAX_PATH_MTU, path_mtu))


def max_plaintext(path_mtu: int, family: int) -> int:
    """The largest DATA plaintext whose datagram fits ``path_mtu``."""
    overhead = IP_HEADER_LEN[family] + UDP_LEN + HDR_LEN + AEAD_TAG_LEN
    return clamp_path_mtu(path_mtu, family) - overhead


# the smallest plaintext any session can be sized to: the fragment limits
# (jvpn/tunnel.py) must cover a 65535-byte packet at this size
MIN_MAX_PLAINTEXT = min(max_plaintext(0, f) for f in IP_HEADER_LEN)
MAX_MAX_PLAINTEXT = max(max_plaintext(MAX_PATH_MTU, f) for f in IP_HEADER_LEN)


def announcement(path_mtu: int) -> bytes:
    """The client's KEEPALIVE payload: its path MTU."""
    return _ANNOUNCE.pack(ANNOUNCE_VERSION, min(MAX_PATH_MTU, path_mtu))


def parse_announcement(payload: bytes, family: int) -> int | None:
    """The path MTU an (authenticated) KEEPALIVE payload announces, or None:
    nothing announced (empty), another version (a later peer's field, ignored),
    a wrong length, or a size the family cannot have (refused, no state moves)."""
    if len(payload) != _ANNOUNCE.size:
        return None
    version, path_mtu = _ANNOUNCE.unpack(payload)
    if version != ANNOUNCE_VERSION or path_mtu < MIN_PATH_MTU[family]:
        return None
    return path_mtu
