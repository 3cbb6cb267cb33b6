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

With a ``device`` (the gateway's XdpInterface) the socket is also bound to
that interface (SO_BINDTODEVICE): only datagrams that arrived on it, and so
crossed the XDP gate, are delivered. A second NIC, a VLAN sub-interface, a
bridge, a tunnel device or ``lo`` reach no socket (the kernel answers
port-unreachable), and replies leave through that interface only.
"""

from __future__ import annotations

import errno
import socket

from jvpn.errors import JvpnError


class PortInUse(JvpnError):
    pass


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
        sock.bind((addr, port))
    except OSError as e:
        sock.close()
        if e.errno == errno.EADDRINUSE:
            raise PortInUse(f"UDP {addr}:{port} is already in use by another process "
                            f"(find it with `ss -ulpn 'sport = :{port}'`)") from None
        on = f" on {device}" if device is not None else ""
        raise JvpnError(f"cannot listen on UDP {addr}:{port}{on}: {e.strerror}") from None
    return sock
