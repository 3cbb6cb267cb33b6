"""The common case of an address read at scale, without ipaddress (issue 15:
a restart parses two addresses per session, and ipaddress costs about 20
µs each). Only an exact, canonical IPv4 dotted quad takes this path; every
other spelling goes to ipaddress as before, so the answers are the same."""

from __future__ import annotations

import socket


def ipv4_packed(addr) -> bytes | None:
    """The 4 bytes of ``addr`` if it is an IPv4 address spelled as
    ipaddress would print it ("10.0.0.2"); None for anything else (IPv6,
    a leading zero, whitespace, a non-string), which the caller parses the
    slow way."""
    try:
        packed = socket.inet_pton(socket.AF_INET, addr)
    except (OSError, TypeError, ValueError):
        return None
    return packed if socket.inet_ntop(socket.AF_INET, packed) == addr else None
