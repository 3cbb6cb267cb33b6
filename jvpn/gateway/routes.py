"""The gateway's kernel routes to the subnets behind peers (site-to-site).

A peer's AllowedIPs beyond its assigned addresses are subnets behind it
(jvpn/config.py). The gateway's host reaches them through the TUN: while a
session of the peer is the one its downstream goes to, each subnet has a
route ``dev <tun> proto jvpn``; when that stops (the session ends, expires,
is terminated, or the daemon stops), the route goes. Only the session table
calls this (jvpn/gateway/table.py), where the downstream target changes.

Routes are added, never replaced: a route somebody else put there (a
connected network, an operator's route) is not taken over; the clash is
reported. Every failure is an event (``RouteFailed``) and never an
exception: a route that cannot be set must not end a thread or a session.
Our routes carry their own protocol number, so the ones a crashed daemon
left behind are found and removed at the next start (:meth:`flush`).
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Callable, Iterable

from jvpn.codes import EventType, Reason
from jvpn.prefixes import Network

RTPROT_JVPN = 74  # not in iproute2's rt_protos; "ip route show proto 74" lists ours

_FAMILY = {4: socket.AF_INET, 6: socket.AF_INET6}


def _ipr():
    from pyroute2 import IPRoute  # noqa: PLC0415 - netlink only where routes change

    return IPRoute()


class SubnetRoutes:
    """Routes to the subnets behind peers, through the TUN ``ifname``."""

    def __init__(self, ifname: str, events, ipr: Callable[[], object] = _ipr):
        self.ifname, self.events, self._ipr = ifname, events, ipr
        self.installed: set[Network] = set()

    def install(self, sid: int, nets: Iterable[Network]) -> None:
        todo = [n for n in nets if n not in self.installed]
        if todo:
            self._change("add", sid, todo)

    def remove(self, sid: int, nets: Iterable[Network]) -> None:
        todo = [n for n in nets if n in self.installed]
        if todo:
            self._change("del", sid, todo)

    def _change(self, op: str, sid: int, nets: list[Network]) -> None:
        try:
            with self._ipr() as ipr:
                idx = ipr.link_lookup(ifname=self.ifname)[0]
                for net in nets:
                    self._one(ipr, op, idx, sid, net)
        except Exception as e:  # noqa: BLE001 - netlink gone or the TUN gone: reported
            self._failed(op, sid, nets, e)

    def _one(self, ipr, op: str, idx: int, sid: int, net: Network) -> None:
        try:
            ipr.route(op, dst=str(net), oif=idx, proto=RTPROT_JVPN,
                      family=_FAMILY[net.version])
        except Exception as e:  # noqa: BLE001 - NetlinkError: EEXIST, ENETUNREACH, ...
            if op == "del" and getattr(e, "code", None) == errno.ESRCH:  # already gone
                self.installed.discard(net)
                return
            self._failed(op, sid, [net], e)
            return
        if op == "add":
            self.installed.add(net)
        else:
            self.installed.discard(net)

    def _failed(self, op: str, sid: int, nets: list[Network], e: Exception) -> None:
        what = "install" if op == "add" else "remove"
        self.events.emit(EventType.ROUTE_FAILED, Reason.OS_ERROR, sid,
                         detail=f"{what} route to {', '.join(map(str, nets))} "
                                f"dev {self.ifname}: {e}")

    def flush(self) -> None:
        """Remove every route of ours on the TUN: at start (what a crashed
        daemon left) and at stop."""
        self.installed.clear()
        try:
            with self._ipr() as ipr:
                found = ipr.link_lookup(ifname=self.ifname)
                if not found:
                    return
                for family in _FAMILY.values():
                    for r in ipr.get_routes(family=family, oif=found[0], proto=RTPROT_JVPN):
                        ipr.route("del", dst=f"{r.get_attr('RTA_DST')}/{r['dst_len']}",
                                  oif=found[0], proto=RTPROT_JVPN, family=family)
        except Exception as e:  # noqa: BLE001 - reported, never raised
            self.events.emit(EventType.ROUTE_FAILED, Reason.OS_ERROR,
                             detail=f"flush routes dev {self.ifname}: {e}")


class NoRoutes:
    """No kernel routes (a gateway given a TUN it did not open: tests)."""

    installed: set = frozenset()

    def install(self, sid: int, nets: Iterable[Network]) -> None:
        pass

    def remove(self, sid: int, nets: Iterable[Network]) -> None:
        pass

    def flush(self) -> None:
        pass
