"""Longest-prefix match over inner addresses (IPv4 and IPv6), per packet.

The gateway's TUN loop finds a packet's session by its destination, and each
session's ingress filter checks a packet's source, against the prefixes the
peers own (their AllowedIPs). Both run once per packet, so a lookup never
scans the peers: host prefixes (/32, /128, the common case) are one exact
dict lookup; other prefixes live in one dict per (family, length), tried
longest first, one masked dict lookup each (at most as many as there are
distinct prefix lengths).

Thread safety: the data loops read without a lock while the control thread
writes (under its lock). Single dict operations are atomic in CPython, and
the tuple of per-length tables is replaced whole, never changed in place.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

_ADDR_LEN = {4: 4, 6: 16}  # IP version -> packed address length


def _is_host(net: Network) -> bool:
    return net.prefixlen == net.max_prefixlen


class PrefixMap:
    """prefix -> value (never None); :meth:`lookup` gives the value of the
    longest prefix holding an address (packed: 4 or 16 bytes), or None."""

    def __init__(self) -> None:
        self._hosts: dict[bytes, object] = {}
        self._tables: dict[tuple[int, int], dict[int, object]] = {}  # (addr len, plen) -> ...
        # addr len -> ((mask, table), ...), longest prefix first
        self._order: dict[int, tuple[tuple[int, dict[int, object]], ...]] = {4: (), 16: ()}

    def add(self, net: Network, value: object) -> None:
        if value is None:
            raise ValueError("a prefix maps to a value, not None")
        if _is_host(net):
            self._hosts[net.network_address.packed] = value
            return
        key = (_ADDR_LEN[net.version], net.prefixlen)
        table = self._tables.get(key)
        if table is None:
            table = self._tables[key] = {}
            table[int(net.network_address)] = value
            self._reorder(key[0])
            return
        table[int(net.network_address)] = value

    def remove(self, net: Network, value: object = None) -> None:
        """Forget ``net`` (only if it still maps to ``value``, when given)."""
        if _is_host(net):
            key_bytes = net.network_address.packed
            if value is None or self._hosts.get(key_bytes) == value:
                self._hosts.pop(key_bytes, None)
            return
        key = (_ADDR_LEN[net.version], net.prefixlen)
        table = self._tables.get(key)
        if table is None:
            return
        n = int(net.network_address)
        if value is None or table.get(n) == value:
            table.pop(n, None)
        if not table:
            del self._tables[key]
            self._reorder(key[0])

    def _reorder(self, addr_len: int) -> None:
        bits = addr_len * 8
        lengths = sorted((plen for (alen, plen) in self._tables if alen == addr_len),
                         reverse=True)
        full = (1 << bits) - 1
        self._order[addr_len] = tuple(
            ((full >> (bits - plen)) << (bits - plen), self._tables[(addr_len, plen)])
            for plen in lengths)

    def lookup(self, addr: bytes | None) -> object | None:
        if addr is None:
            return None
        v = self._hosts.get(addr)
        if v is not None:
            return v
        order = self._order.get(len(addr))
        if not order:
            return None
        n = int.from_bytes(addr, "big")
        for mask, table in order:
            v = table.get(n & mask)
            if v is not None:
                return v
        return None

    def __len__(self) -> int:
        return len(self._hosts) + sum(len(t) for t in self._tables.values())


class PrefixSet:
    """Whether a packed address is inside any of the given prefixes."""

    def __init__(self, nets: Iterable[Network]):
        self._map = PrefixMap()
        self.nets = tuple(nets)
        for net in self.nets:
            self._map.add(net, True)

    def __contains__(self, addr: bytes) -> bool:
        return self._map.lookup(addr) is not None
