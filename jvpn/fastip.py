"""The common case of an address read at scale, without ipaddress (issue 15:
a restart parses two addresses per session, and ipaddress costs about 20
µs each). Only an exact, canonical IPv4 dotted quad takes this path; every
other spelling goes to ipaddress as before, so the answers are the same."""

from __future__ import annotations

import functools
import socket
from collections.abc import Callable
from typing import Any, TypeVar

_T = TypeVar("_T")


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


# The longest spelling an address can have (an IPv6 address with a scope id
# is under 64 characters); a longer string is not an address worth keeping.
MEMO_MAX_LEN = 64


def address_memo(fn: Callable[[Any], _T]) -> Callable[[Any], _T]:
    """``fn`` memoized for exact ``str`` arguments of an address's length
    only (bounded, 4096 entries). Anything else (a bool, a float, an
    ipaddress object, a 1 MB "address" out of a hostile store) is computed
    uncached: lru_cache keys compare with ``==`` (True == 1 == 1.0, so one
    would answer for the other) and a memo would keep a long string alive
    after its record is gone."""
    cached = functools.lru_cache(maxsize=4096)(fn)

    @functools.wraps(fn)
    def memoized(addr):
        if type(addr) is str and len(addr) <= MEMO_MAX_LEN:
            return cached(addr)
        return fn(addr)

    memoized.cache_clear = cached.cache_clear  # type: ignore[attr-defined]
    memoized.cache_info = cached.cache_info  # type: ignore[attr-defined]
    return memoized
