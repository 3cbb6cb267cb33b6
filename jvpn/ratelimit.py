"""Token buckets for the daemon (the XDP gate has its own in gcra.h): per
source prefix and per session, bounded memory (least recently used entries
are forgotten first), injected clock."""

from __future__ import annotations

import ipaddress
from collections import OrderedDict
from collections.abc import Callable


def source_prefix(addr: str) -> str:
    """IPv4 /32, IPv6 /64: what one attacker can be expected to control."""
    ip = ipaddress.ip_address(addr)
    if ip.version == 6:
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


class KeyedBuckets:
    def __init__(self, rate_per_s: float, burst: float, clock_s: Callable[[], float],
                 max_keys: int = 65536):
        self.rate, self.burst = rate_per_s, burst
        self._clock = clock_s
        self._max = max_keys
        self._buckets: OrderedDict = OrderedDict()  # key -> (tokens, last)

    def allow(self, key, cost: float = 1.0) -> bool:
        now = self._clock()
        tokens, last = self._buckets.pop(key, (self.burst, now))
        # a clock read lower than the furthest reading so far (a stepped
        # wall clock, a test's) refills nothing and takes nothing: never a
        # debt, and a swing forward again refills nothing twice (review k21rall)
        tokens = min(self.burst, tokens + max(0.0, now - last) * self.rate)
        ok = tokens >= cost
        self._buckets[key] = (tokens - cost if ok else tokens, max(now, last))
        while len(self._buckets) > self._max:
            self._buckets.popitem(last=False)
        return ok

    def __len__(self) -> int:
        return len(self._buckets)
