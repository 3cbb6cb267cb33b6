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
"""

from __future__ import annotations

import ctypes
import errno
import socket
import struct

from jvpn.errors import JvpnError


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


def open_listener(addr: str, port: int, rcvbuf: int,
                  device: str | None = None) -> socket.socket:
    """A bound UDP/IPv4 socket on ``addr:port`` with a ``rcvbuf``-byte
    receive buffer, that no other socket can share; with ``device``, one
    that only hears that interface."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # not inheritable (PEP 446)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        if device is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, device.encode())
            _attach_filter(sock, _only_from(socket.if_nametoindex(device)))
        sock.bind((addr, port))
    except OSError as e:
        sock.close()
        if e.errno == errno.EADDRINUSE:
            raise PortInUse(f"UDP {addr}:{port} is already in use by another process "
                            f"(find it with `ss -ulpn 'sport = :{port}'`)") from None
        on = f" on {device}" if device is not None else ""
        raise JvpnError(f"cannot listen on UDP {addr}:{port}{on}: {e.strerror}") from None
    return sock
