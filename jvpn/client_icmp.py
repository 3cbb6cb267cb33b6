"""ICMP errors on the client's unconnected outer socket (IP_RECVERR /
IPV6_RECVERR), during the handshake only. Without them Linux drops an ICMP
port unreachable for an unconnected UDP socket, and "nothing listens
there" looks like "nobody is there". With them, the next receive or send
fails once with ECONNREFUSED and the error itself waits in the socket's
error queue, which must be drained (it is charged to the receive buffer).

An ICMP error is never authenticated: anyone who knows (or guesses) the
client's port can send one, from any address, and while the option is on
each one fails a send (RFC 5927). So it only words the handshake's failure
(jvpn/client_causes.py), counted only if it names the gateway's address and
port as the datagram's destination, and the option is off once the session
is up (jvpn/client_orphan.py: nothing unauthenticated ends a session)."""

from __future__ import annotations

import socket
import struct

from jvpn.session import canonical_ip

IP_RECVERR, IPV6_RECVERR = 11, 25  # linux/in.h, linux/in6.h (not in Python's socket module)
SO_EE_ORIGIN_ICMP, SO_EE_ORIGIN_ICMP6 = 2, 3
_EE = struct.Struct("=IBBBBII")  # struct sock_extended_err
_UNREACHABLE_PORT = {SO_EE_ORIGIN_ICMP: (3, 3), SO_EE_ORIGIN_ICMP6: (1, 4)}
DRAIN_MAX = 64  # one call reads at most this many queued errors


def enable(sock: socket.socket) -> None:
    """Ask for ICMP errors on ``sock`` (best effort: a fake or exotic socket
    without the option simply gives no hints)."""
    try:
        if sock.family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVERR, 1)
        else:
            sock.setsockopt(socket.IPPROTO_IP, IP_RECVERR, 1)
    except (OSError, AttributeError):
        pass


def disable(sock: socket.socket) -> None:
    """No more ICMP errors on ``sock``; a pending one is read and dropped so
    it fails no send of the session."""
    try:
        if sock.family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVERR, 0)
        else:
            sock.setsockopt(socket.IPPROTO_IP, IP_RECVERR, 0)
        sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)  # reading it clears it
    except (OSError, AttributeError):
        return
    port_unreachable_from(sock, ("", 0))


def port_unreachable_from(sock, endpoint: tuple[str, int]) -> int:
    """Drain the error queue; how many of its errors were a port unreachable
    for a datagram we sent to ``endpoint`` (the gateway's canonical address)."""
    found = 0
    for _ in range(DRAIN_MAX):
        try:
            _data, ancdata, _flags, dst = sock.recvmsg(
                1, 512, socket.MSG_ERRQUEUE | socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError, AttributeError):
            return found
        except OSError:
            return found
        if dst and (canonical_ip(dst[0]), dst[1]) == endpoint and _is_port_unreachable(ancdata):
            found += 1
    return found


def _is_port_unreachable(ancdata) -> bool:
    for _level, _type, data in ancdata:
        if len(data) < _EE.size:
            continue
        _errno, origin, icmp_type, code, _pad, _info, _data = _EE.unpack_from(data)
        if _UNREACHABLE_PORT.get(origin) == (icmp_type, code):
            return True
    return False
