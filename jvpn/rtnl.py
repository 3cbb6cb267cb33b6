"""A minimal rtnetlink client for the client's hot path: ``route get``,
the link and address dumps, and reading change notifications.

Why not pyroute2 here: its requests run an asyncio loop and decode every
attribute of every message, about 1 ms of CPU a request on this machine
(5 ms for one discovery of four interfaces). The monitor asks the route
every step, and a link change asks everything at once; in a process whose
receive loop shares the GIL, those milliseconds were added to the
latency of the very packets a reattach waits for (docs/benchmarks.md
"bench reattach: where the milliseconds went"). This module reads only
the few attributes the client uses, with ``struct``. Route *changes*
(the full-tunnel routes, the TUN) still go through pyroute2: they are
rare.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import struct
from dataclasses import dataclass

# netlink / rtnetlink numbers (linux/netlink.h, linux/rtnetlink.h)
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST, NLM_F_ACK, NLM_F_DUMP = 0x1, 0x4, 0x300
RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK = 16, 17, 18
RTM_NEWADDR, RTM_DELADDR, RTM_GETADDR = 20, 21, 22
RTM_NEWROUTE, RTM_DELROUTE, RTM_GETROUTE = 24, 25, 26
RTA_DST, RTA_OIF, RTA_GATEWAY, RTA_PRIORITY, RTA_PREFSRC, RTA_METRICS, RTA_MARK = (
    1, 4, 5, 6, 7, 8, 16)
RTAX_MTU = 2
IFLA_IFNAME, IFLA_MTU = 3, 4
IFA_ADDRESS, IFA_LOCAL = 1, 2
# the groups a routing change arrives on: links, IPv4/IPv6 addresses and routes
RTMGRP_LINK, RTMGRP_IPV4_IFADDR, RTMGRP_IPV4_ROUTE = 0x1, 0x10, 0x40
RTMGRP_IPV6_IFADDR, RTMGRP_IPV6_ROUTE = 0x100, 0x400
CHANGE_GROUPS = (RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV4_ROUTE
                 | RTMGRP_IPV6_IFADDR | RTMGRP_IPV6_ROUTE)

_NLMSGHDR = struct.Struct("=IHHII")  # len, type, flags, seq, pid
# family, dst_len, src_len, tos, table, protocol, scope, type, flags
_RTMSG = struct.Struct("=BBBBBBBBI")
_IFINFOMSG = struct.Struct("=BxHiII")  # family, type, index, flags, change
_IFADDRMSG = struct.Struct("=BBBBI")  # family, prefixlen, flags, scope, index
_RTATTR = struct.Struct("=HH")
RECV_BYTES = 1 << 16
REQUEST_TIMEOUT_S = 1.0  # the kernel answers at once; a lost answer must not hang the monitor
KERNEL = 0  # the netlink port id of the kernel: the only sender we read


class NetlinkError(OSError):
    """The kernel answered a request with an error (errno: its code)."""


@dataclass(frozen=True)
class Route:
    """What the client reads of a ``route get`` answer."""

    oif: int | None
    prefsrc: str | None
    gateway: str | None
    priority: int | None
    mtu: int | None  # the route's RTAX_MTU metric (a route's mtu, a cached PMTU)


@dataclass(frozen=True)
class Link:
    index: int
    name: str
    flags: int
    mtu: int | None


def _align(n: int) -> int:
    return (n + 3) & ~3


def attrs(buf: bytes, offset: int, end: int) -> dict[int, bytes]:
    """The rtattrs in ``buf[offset:end]`` by type (nested flag cleared);
    a truncated attribute ends the list."""
    out = {}
    while offset + _RTATTR.size <= end:
        length, kind = _RTATTR.unpack_from(buf, offset)
        if length < _RTATTR.size or offset + length > end:
            break
        out[kind & 0x3FFF] = buf[offset + _RTATTR.size:offset + length]
        offset += _align(length)
    return out


def _attr(kind: int, value: bytes) -> bytes:
    length = _RTATTR.size + len(value)
    return _RTATTR.pack(length, kind) + value + bytes(_align(length) - length)


def _address(family: int, raw: bytes | None) -> str | None:
    if raw is None:
        return None
    try:
        return socket.inet_ntop(family, raw)
    except (OSError, ValueError):
        return None


def _u32(raw: bytes | None) -> int | None:
    return struct.unpack("=I", raw[:4])[0] if raw is not None and len(raw) >= 4 else None


def messages(buf: bytes):
    """(type, flags, seq, body) of each netlink message in one datagram."""
    offset = 0
    while offset + _NLMSGHDR.size <= len(buf):
        length, kind, flags, seq, _pid = _NLMSGHDR.unpack_from(buf, offset)
        if length < _NLMSGHDR.size or offset + length > len(buf):
            return
        yield kind, flags, seq, buf[offset + _NLMSGHDR.size:offset + length]
        offset += _align(length)


def parse_route(body: bytes) -> Route:
    family = body[0]
    a = attrs(body, _RTMSG.size, len(body))
    metrics = a.get(RTA_METRICS)
    mtu = _u32(attrs(metrics, 0, len(metrics)).get(RTAX_MTU)) if metrics else None
    return Route(oif=_u32(a.get(RTA_OIF)), prefsrc=_address(family, a.get(RTA_PREFSRC)),
                 gateway=_address(family, a.get(RTA_GATEWAY)),
                 priority=_u32(a.get(RTA_PRIORITY)), mtu=mtu or None)


def parse_link(body: bytes) -> Link:
    _family, _type, index, flags, _change = _IFINFOMSG.unpack_from(body)
    a = attrs(body, _IFINFOMSG.size, len(body))
    name = a.get(IFLA_IFNAME, b"").split(b"\0", 1)[0].decode(errors="replace")
    return Link(index, name, flags, _u32(a.get(IFLA_MTU)))


def parse_address(body: bytes) -> tuple[int, ipaddress.IPv4Interface | ipaddress.IPv6Interface]:
    """(interface index, address/prefix) of an RTM_NEWADDR."""
    family, prefixlen, _flags, _scope, index = _IFADDRMSG.unpack_from(body)
    a = attrs(body, _IFADDRMSG.size, len(body))
    addr = _address(family, a.get(IFA_ADDRESS) or a.get(IFA_LOCAL))
    return index, ipaddress.ip_interface(f"{addr}/{prefixlen}")


class Rtnl:
    """One NETLINK_ROUTE socket for requests (``with Rtnl() as nl``)."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
        try:
            self.sock.bind((0, 0))
            self.sock.settimeout(REQUEST_TIMEOUT_S)
        except OSError:
            self.sock.close()
            raise
        self._seq = int.from_bytes(os.urandom(2), "little")

    def __enter__(self) -> Rtnl:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()

    def _request(self, kind: int, flags: int, body: bytes) -> list[tuple[int, bytes]]:
        """Send one request; its answers' (type, body) until the last one.
        NetlinkError if the kernel refused it."""
        self._seq += 1
        seq = self._seq
        self.sock.send(_NLMSGHDR.pack(_NLMSGHDR.size + len(body), kind,
                                      NLM_F_REQUEST | flags, seq, 0) + body)
        out = []
        while True:
            for got, _flags, mseq, payload in messages(from_kernel(self.sock)):
                if mseq != seq:
                    continue  # an answer to an earlier request we gave up on
                if got == NLMSG_DONE:
                    return out
                if got == NLMSG_ERROR:
                    code = -struct.unpack_from("=i", payload)[0]
                    if code:
                        raise NetlinkError(code, os.strerror(code))
                    return out
                out.append((got, payload))
                if not flags & NLM_F_DUMP:
                    return out

    def route_get(self, dst: str, oif: int | None = None, mark: int | None = None) -> Route:
        """``ip route get dst [oif N] [mark M]``. NetlinkError: no route."""
        ip = ipaddress.ip_address(dst)
        family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
        body = _RTMSG.pack(family, ip.max_prefixlen, 0, 0, 0, 0, 0, 0, 0)
        body += _attr(RTA_DST, ip.packed)
        if oif is not None:
            body += _attr(RTA_OIF, struct.pack("=I", oif))
        if mark:
            body += _attr(RTA_MARK, struct.pack("=I", mark))
        answers = [b for kind, b in self._request(RTM_GETROUTE, 0, body) if kind == RTM_NEWROUTE]
        if not answers:
            raise NetlinkError(0, "no route")
        return parse_route(answers[0])

    def links(self) -> list[Link]:
        body = _IFINFOMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0)
        return [parse_link(b) for kind, b in self._request(RTM_GETLINK, NLM_F_DUMP, body)
                if kind == RTM_NEWLINK]

    def link(self, index: int) -> Link | None:
        body = _IFINFOMSG.pack(socket.AF_UNSPEC, 0, index, 0, 0)
        try:
            got = [b for kind, b in self._request(RTM_GETLINK, 0, body) if kind == RTM_NEWLINK]
        except NetlinkError:
            return None
        return parse_link(got[0]) if got else None

    def addresses(self, index: int) -> list:
        """The interface's addresses (with their prefixes)."""
        body = _IFADDRMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0)
        found = []
        for kind, b in self._request(RTM_GETADDR, NLM_F_DUMP, body):
            if kind != RTM_NEWADDR:
                continue
            try:
                at, address = parse_address(b)
            except ValueError:
                continue
            if at == index:
                found.append(address)
        return found


def from_kernel(sock: socket.socket) -> bytes:
    """The next datagram the kernel sent (another process's is skipped:
    only CAP_NET_ADMIN may send one, but it says nothing of the kernel's
    state). TimeoutError/OSError as recv."""
    while True:
        data, (port_id, _groups) = sock.recvfrom(RECV_BYTES)
        if port_id == KERNEL:
            return data


def change_socket(timeout_s: float) -> socket.socket:
    """A socket that receives every link, address and route change."""
    s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
    try:
        s.bind((0, CHANGE_GROUPS))
        s.settimeout(timeout_s)
    except OSError:
        s.close()
        raise
    return s
