"""Raw Ethernet frames around jvpn messages, for BPF_PROG_TEST_RUN fixtures,
the reference model and the benchmark. Nothing here is sent on a network.
"""

from __future__ import annotations

import ipaddress
import struct

from jvpn.gate.abi import ETH_P_8021Q, ETH_P_IP, ETH_P_IPV6, IPPROTO_TCP, IPPROTO_UDP

__all__ = ["ETH_P_8021Q", "ETH_P_IP", "ETH_P_IPV6", "IPPROTO_TCP", "IPPROTO_UDP"]

_SRC_MAC = bytes.fromhex("020000000001")
_DST_MAC = bytes.fromhex("020000000002")


def _csum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def icmp_port_unreachable(quoted_src: tuple[str, int], quoted_dst: tuple[str, int]) -> bytes:
    """An ICMP destination unreachable (port) quoting a UDP datagram from
    ``quoted_src`` to ``quoted_dst``: what a host with nothing on that port
    answers, and what anyone may forge (issue 12: the client ignores them)."""
    quoted = ipv4(quoted_src[0], quoted_dst[0], 17, udp(quoted_src[1], quoted_dst[1], bytes(32)))
    body = struct.pack("!BBHI", 3, 3, 0, 0) + quoted[:20 + 8]
    return body[:2] + struct.pack("!H", _csum(body)) + body[4:]


def eth(ethertype: int, payload: bytes, vlan: int | None = None) -> bytes:
    head = _DST_MAC + _SRC_MAC
    if vlan is not None:
        head += struct.pack("!HH", ETH_P_8021Q, vlan)
    return head + struct.pack("!H", ethertype) + payload


def ipv4(src: str, dst: str, proto: int, payload: bytes, *, frag_off: int = 0,
         options: bytes = b"") -> bytes:
    if len(options) % 4:
        raise ValueError("IPv4 options must be a multiple of 4 bytes")
    ihl = 5 + len(options) // 4
    total = ihl * 4 + len(payload)
    hdr = struct.pack(
        "!BBHHHBBH4s4s", (4 << 4) | ihl, 0, total, 0, frag_off, 64, proto, 0,
        ipaddress.IPv4Address(src).packed, ipaddress.IPv4Address(dst).packed,
    ) + options
    hdr = hdr[:10] + struct.pack("!H", _csum(hdr)) + hdr[12:]
    return hdr + payload


def ipv6(src: str, dst: str, nexthdr: int, payload: bytes) -> bytes:
    return struct.pack(
        "!IHBB16s16s", 6 << 28, len(payload), nexthdr, 64,
        ipaddress.IPv6Address(src).packed, ipaddress.IPv6Address(dst).packed,
    ) + payload


def udp(sport: int, dport: int, payload: bytes, *, length: int | None = None) -> bytes:
    """UDP header + payload. The checksum is left 0: XDP does not verify it."""
    return struct.pack("!HHHH", sport, dport, length or 8 + len(payload), 0) + payload


def udp_frame(src: str, sport: int, dst: str, dport: int, payload: bytes, *,
              vlan: int | None = None, udp_length: int | None = None) -> bytes:
    """A whole frame, IPv4 or IPv6 by the address given."""
    seg = udp(sport, dport, payload, length=udp_length)
    if ipaddress.ip_address(src).version == 4:
        return eth(ETH_P_IP, ipv4(src, dst, IPPROTO_UDP, seg), vlan=vlan)
    return eth(ETH_P_IPV6, ipv6(src, dst, IPPROTO_UDP, seg), vlan=vlan)


def tcp_frame(src: str, dst: str) -> bytes:
    seg = struct.pack("!HHIIBBHHH", 40000, 22, 1, 0, 5 << 4, 0x02, 65535, 0, 0)
    return eth(ETH_P_IP, ipv4(src, dst, IPPROTO_TCP, seg))
