"""Frames that test how far the XDP parser goes before it gives up: VLAN
stacks (802.1Q / 802.1AD, any VID), IPv6 extension chains (hop-by-hop,
routing, destination options, fragment headers) and IPv4 fragments and
options, around a jvpn message, optionally cut short. Used by the verdict
table and the kernel-vs-model property test."""

from __future__ import annotations

import ipaddress
import struct

from jvpn.gate import abi
from jvpn.lab import frames

VLAN_Q, VLAN_AD = abi.ETH_P_8021Q, 0x88A8
HOPOPTS, ROUTING, FRAGMENT, DSTOPTS, NO_NEXT = 0, 43, 44, 60, 59

# IPv6 extension headers by name; ("frag", offset in 8-octet units, more flag)
HOP, RT, DST = "hop", "routing", "dst"
FIRST_FRAG, LATER_FRAG = ("frag", 0, 1), ("frag", 1, 0)

_MACS = bytes.fromhex("020000000002" "020000000001")


def _proto(ext) -> int:
    if isinstance(ext, tuple):
        return FRAGMENT
    return {HOP: HOPOPTS, RT: ROUTING, DST: DSTOPTS}[ext]


def _ext_bytes(ext, nexthdr: int) -> bytes:
    if isinstance(ext, tuple):
        _, offset, more = ext
        return struct.pack("!BBHI", nexthdr, 0, offset << 3 | more, 0x1234)
    if ext == RT:  # type 0, no segments left: 8 bytes
        return bytes([nexthdr, 0, 0, 0]) + bytes(4)
    return bytes([nexthdr, 0]) + b"\x01\x04\0\0\0\0"  # PadN: 8 bytes in all


def ipv6_chain(src: str, dst: str, chain, l4_proto: int, l4: bytes) -> bytes:
    protos = [_proto(e) for e in chain] + [l4_proto]
    body = b"".join(_ext_bytes(e, nxt) for e, nxt in zip(chain, protos[1:], strict=True))
    return frames.ipv6(src, dst, protos[0], body + l4)


def with_tags(ethertype: int, payload: bytes, tags=()) -> bytes:
    """``tags``: (TPID, VID) outermost first."""
    head = b"".join(struct.pack("!HH", tpid, vid) for tpid, vid in tags)
    return _MACS + head + struct.pack("!H", ethertype) + payload


def jvpn_frame(msg: bytes, *, src: str, sport: int, dst: str | None = None,
               dport: int = abi.DEFAULT_PORT, tags=(), chain=(), frag_off: int = 0,
               options: bytes = b"", l4_proto: int = abi.IPPROTO_UDP,
               cut: int | None = None) -> bytes:
    """A jvpn message in UDP, IPv4 or IPv6 by ``src``, behind ``tags`` and
    (IPv6) ``chain``; ``cut`` keeps only the first ``cut`` bytes after the
    Ethernet header and the tags."""
    seg = frames.udp(sport, dport, msg)
    if ipaddress.ip_address(src).version == 4:
        ip = frames.ipv4(src, dst or "192.0.2.1", l4_proto, seg, frag_off=frag_off,
                         options=options)
        ethertype = abi.ETH_P_IP
    else:
        ip = ipv6_chain(src, dst or "2001:db8::1", chain, l4_proto, seg)
        ethertype = abi.ETH_P_IPV6
    if cut is not None:
        ip = ip[:cut]
    return with_tags(ethertype, ip, tags)


def chain_len(chain) -> int:
    """Bytes of extension headers before the upper-layer header."""
    return 8 * len(chain)
