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
"""

from __future__ import annotations

import errno
import socket

from jvpn.errors import JvpnError


class PortInUse(JvpnError):
    pass


def open_listener(addr: str, port: int, rcvbuf: int) -> socket.socket:
    """A bound UDP/IPv4 socket on ``addr:port`` with a ``rcvbuf``-byte
    receive buffer, that no other socket can share."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # not inheritable (PEP 446)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.bind((addr, port))
    except OSError as e:
        sock.close()
        if e.errno == errno.EADDRINUSE:
            raise PortInUse(f"UDP {addr}:{port} is already in use by another process "
                            f"(find it with `ss -ulpn 'sport = :{port}'`)") from None
        raise JvpnError(f"cannot listen on UDP {addr}:{port}: {e.strerror}") from None
    return sock
