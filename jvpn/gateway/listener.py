"""The gateway's UDP socket, exclusively its own.

No SO_REUSEADDR and no SO_REUSEPORT: on Linux, a UDP socket with
SO_REUSEADDR lets any other socket that also sets it bind the same port,
from any user, on the same or a more specific address. A more specific bind
(127.0.0.1 or the public address, next to the gateway's 0.0.0.0) then
receives every datagram for that address: any unprivileged local user could
read the handshakes and data XDP passes, and answer them. Without either
option the kernel refuses every such bind with EADDRINUSE. The cost: a
restart cannot bind while the old socket lingers, which for UDP it does not
(no TIME_WAIT). tests/unit/test_listener.py shows both.

A port already taken (another gateway, or a local user who bound it first)
is a one-line error; the instance lock (jvpn/gateway/instance.py) names the
holder when it is another gateway.

With a ``device`` (the gateway's XdpInterface) the socket hears only
datagrams that arrived on that interface, and so crossed the XDP gate:
SO_BINDTODEVICE (a second NIC, a VLAN sub-interface, a bridge, a tunnel
device or ``lo`` reach no socket; the kernel answers port-unreachable, and
replies leave through that interface only), and a classic BPF socket filter
that accepts only packets whose receiving device is that interface. The
filter is needed too: a local process that sends to the interface's own
address is delivered over ``lo``, yet the kernel's socket lookup counts it as
arriving on the interface (the route's input interface), and XDP never saw it.
The filter reads the receiving device, not the packet, so it works the same
on the IPv6 socket, for IPv6 datagrams and for IPv4 ones alike.

Both families, one socket: the wildcard ``::`` is one AF_INET6 socket with
IPV6_V6ONLY off, which also receives IPv4 (as ``::ffff:a.b.c.d``). One
socket, not an IPv4 and an IPv6 one, because the exclusivity above then
covers both families with one bind: no local user can take ``[::]:PORT``
(V6ONLY) or ``0.0.0.0:PORT`` next to it, and the daemon keeps one receive
loop and one send path. The daemon never sees the mapped spelling:
:class:`DualStackSocket` reports sources in their canonical form and maps
IPv4 destinations back (jvpn/session.py ``canonical_ip``). A host with IPv6
disabled (no AF_INET6: EAFNOSUPPORT) gets an IPv4 socket and one line saying so.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import socket
import struct
from collections.abc import Callable

from jvpn.errors import JvpnError
from jvpn.session import canonical_ip

log = logging.getLogger(__name__)

ANY = "::"  # the wildcard of both families: one dual-stack socket
# How long one send may wait for room in the socket's send buffer. Every
# datagram to a neighbour that does not answer ARP/ND waits in the kernel
# (about 3 s) charged to this socket: a few hundred of them (TERMINATEs to
# a batch of silent clients on our link, k16m2) filled the buffer, and each
# later send, data to live clients included, then blocked ~20 ms under the
# control lock. A UDP send that finds no room is dropped after this instead
# (the kernel rounds it up to one tick: 4 ms at HZ=250). A backstop only:
# the gateway's sends are MSG_DONTWAIT and never wait (jvpn/gateway/sending.py).
SEND_WAIT_US = 1_000
_MAPPED = "::ffff:"


class PortInUse(JvpnError):
    pass


SO_ATTACH_FILTER, SO_LOCK_FILTER = 26, 44
_SKF_AD_IFINDEX = -0x1000 + 8  # the receiving device's ifindex (linux/filter.h)
_LD_W_ABS, _JEQ_K, _RET_K = 0x20, 0x15, 0x06


def _only_from(ifindex: int) -> list[tuple[int, int, int, int]]:
    """cBPF: accept a packet only if ``skb->dev`` is ``ifindex``."""
    return [(_LD_W_ABS, 0, 0, _SKF_AD_IFINDEX & 0xFFFFFFFF),
            (_JEQ_K, 0, 1, ifindex),
            (_RET_K, 0, 0, 0xFFFFFFFF),
            (_RET_K, 0, 0, 0)]


def _attach_filter(sock: socket.socket, program: list[tuple[int, int, int, int]]) -> None:
    code = b"".join(struct.pack("HBBI", *insn) for insn in program)
    buf = ctypes.create_string_buffer(code)
    fprog = struct.pack("HL", len(program), ctypes.addressof(buf))  # struct sock_fprog
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)
    sock.setsockopt(socket.SOL_SOCKET, SO_LOCK_FILTER, 1)


class DualStackSocket(socket.socket):
    """The gateway's AF_INET6 socket, spoken to in canonical addresses: a
    source is (address, port) with IPv4 plain, and an IPv4 destination is
    sent as the mapped address the socket needs. Everything else is the
    socket's own. An IPv6 datagram whose source is itself a mapped address
    (if the kernel delivered one) becomes that IPv4 source: the power of an
    attacker who spoofs that IPv4 source, no more (replies and challenges
    go to the IPv4 address; the gate binds data by the frame's family)."""

    __slots__ = ()

    def recvfrom(self, bufsize: int, flags: int = 0) -> tuple[bytes, tuple[str, int]]:
        msg, src = super().recvfrom(bufsize, flags)
        addr = src[0]
        if "." not in addr:  # inet_ntop's hex form is already canonical (RFC 5952)
            return msg, (addr, src[1])
        if addr.startswith(_MAPPED):  # IPv4 on the dual-stack socket
            return msg, (addr[len(_MAPPED):], src[1])
        return msg, (canonical_ip(addr), src[1])  # IPv4-compatible ::a.b.c.d: rare

    def sendto(self, data, *args):
        *flags, (addr, port) = args
        if ":" not in addr:  # IPv4: as the dual-stack socket names it
            addr = _MAPPED + addr
        return super().sendto(data, *flags, (addr, port))

    def sendmsg(self, buffers, ancdata=(), flags=0, address=None):
        """As ``sendto``: the UDP GSO sends of fragmented DATA (jvpn/tunnel.py
        send_messages) to an IPv4 client go to its mapped address."""
        if address is not None and ":" not in address[0]:
            address = (_MAPPED + address[0], address[1])
        return super().sendmsg(buffers, ancdata, flags, address)


def _warn(line: str) -> None:
    log.warning("%s", line)


def listen_name(sockname: tuple) -> str:
    """A bound socket's address as operators write it: ``ADDR:PORT``, or
    ``[ADDR]:PORT`` for IPv6 (the dual-stack wildcard is ``[::]:PORT``);
    ``getsockname()`` gives a tuple whose repr is no address."""
    addr, port = sockname[0], sockname[1]
    return f"[{addr}]:{port}" if ":" in addr else f"{addr}:{port}"


def _new_socket(addr: str, port: int, warn: Callable[[str], None]) -> tuple[socket.socket, str]:
    """The unbound socket for ``addr`` and the address to bind: the
    wildcard ``::`` is dual-stack, or IPv4 only where the host has no IPv6."""
    if addr != ANY:  # one family; an IPv6 one still reports (address, port) pairs
        cls = DualStackSocket if ":" in addr else socket.socket
        return cls(socket.AF_INET6 if ":" in addr else socket.AF_INET, socket.SOCK_DGRAM), addr
    try:
        sock = DualStackSocket(socket.AF_INET6, socket.SOCK_DGRAM)
    except OSError as e:
        if e.errno != errno.EAFNOSUPPORT:
            raise
        warn(f"jvpn gateway: IPv6 is not available on this host ({e.strerror}): "
             f"listening on IPv4 only, UDP 0.0.0.0:{port}")
        return socket.socket(socket.AF_INET, socket.SOCK_DGRAM), "0.0.0.0"
    try:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    except OSError:
        sock.close()
        raise
    return sock, ANY


def open_listener(addr: str, port: int, rcvbuf: int, device: str | None = None,
                  warn: Callable[[str], None] = _warn) -> socket.socket:
    """A bound UDP socket on ``addr:port`` with a ``rcvbuf``-byte receive
    buffer, that no other socket can share; with ``device``, one that only
    hears that interface. ``addr`` ``::`` (:data:`ANY`): both families on
    one socket (a :class:`DualStackSocket`)."""
    try:
        sock, addr = _new_socket(addr, port, warn)  # not inheritable (PEP 446)
    except OSError as e:
        raise JvpnError(f"cannot listen on UDP {addr}:{port}: {e.strerror}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, struct.pack("ll", 0, SEND_WAIT_US))
        if device is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, device.encode())
            _attach_filter(sock, _only_from(socket.if_nametoindex(device)))
        sock.bind((addr, port))
    except OSError as e:
        sock.close()
        shown = f"[{addr}]" if ":" in addr else addr
        if e.errno == errno.EADDRINUSE:
            raise PortInUse(f"UDP {shown}:{port} is already in use by another process "
                            f"(find it with `ss -ulpn 'sport = :{port}'`)") from None
        on = f" on {device}" if device is not None else ""
        raise JvpnError(f"cannot listen on UDP {shown}:{port}{on}: {e.strerror}") from None
    return sock
