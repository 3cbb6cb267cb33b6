"""The client's routes: its AllowedIPs routed into the TUN, and for a full
tunnel (a /0) the policy routing wg-quick uses, so the tunnel's own outer
datagrams still leave by the best uplink of the main table.

Full tunnel, per address family that has a /0 (``ip rule`` syntax)::

    ip rule add pref 32760 table main suppress_prefixlength 0
    ip route add 0.0.0.0/0 dev jvpn0 table T
    ip rule add pref 32761 not fwmark M table T

The outer UDP socket carries SO_MARK M: its datagrams skip the tunnel's table
and take the main table's default route, whichever uplink that is now. Every
other packet first looks in the main table with its default routes
suppressed (the LAN, the uplinks' own subnets stay reachable), then in table
T: the tunnel. The client watches ``route get <endpoint> mark M``, the very
lookup its datagrams make, so path changes are seen as before. Other
prefixes are plain routes in the main table, as wg-quick does.

:func:`plan` is pure (config in, operations out); :class:`RouteSet` applies
them through netlink and undoes exactly what it applied, in reverse order;
:class:`ClientRouting` adds the full tunnel's firewall table
(jvpn.client_firewall) and is what the agent holds.
"""

from __future__ import annotations

import errno
import socket
from dataclasses import dataclass

from jvpn.client_firewall import FirewallError, MarkFirewall
from jvpn.config import DEFAULT_FWMARK
from jvpn.prefixes import Network

RT_TABLE_MAIN = 254
# Both rules just before the main table's own (32766), like wg-quick's; fixed,
# so that a leftover of a killed client is recognised and replaced at the next up.
RULE_PRIORITY = 32760
FIB_RULE_INVERT = 0x2  # linux/fib_rules.h: the rule matches what its selector does not


class RouteError(Exception):
    """One line: which route or rule could not be installed, and why."""


@dataclass(frozen=True)
class Route:
    """``prefix dev <tun> table <table>``."""
    prefix: Network
    table: int = RT_TABLE_MAIN

    def describe(self) -> str:
        table = "" if self.table == RT_TABLE_MAIN else f" table {self.table}"
        return f"route {self.prefix}{table}"


@dataclass(frozen=True)
class Rule:
    """A policy rule: ``not fwmark M table T`` (``fwmark`` set) or
    ``table T suppress_prefixlength N`` (``suppress_prefixlength`` set)."""
    family: int  # 4 or 6
    priority: int
    table: int
    fwmark: int | None = None  # inverted: the rule matches packets WITHOUT this mark
    suppress_prefixlength: int | None = None

    def describe(self) -> str:
        what = (f"not fwmark {self.fwmark:#x} " if self.fwmark is not None else "")
        tail = (f" suppress_prefixlength {self.suppress_prefixlength}"
                if self.suppress_prefixlength is not None else "")
        return f"ip -{self.family} rule pref {self.priority} {what}table {self.table}{tail}"


@dataclass(frozen=True)
class RoutePlan:
    mark: int | None  # SO_MARK of the outer socket; route get asks with it; None: no mark
    ops: tuple[Route | Rule, ...]  # in the order they are applied (undone in reverse)

    @property
    def full_tunnel(self) -> bool:
        return any(isinstance(op, Rule) for op in self.ops)


def plan(allowed_ips: tuple[Network, ...], fwmark: int | None, table: int) -> RoutePlan:
    """What to install for ``allowed_ips``. Empty: nothing (the TUN address's
    prefix routes the gateway's inner network, as before AllowedIPs existed).
    A /0 of a family: its three full-tunnel operations, in the order that never
    sends everything into a table still empty (suppress rule, the table's
    route, then the rule that leads into it)."""
    full = [n for n in allowed_ips if n.prefixlen == 0]
    mark = fwmark if fwmark is not None or not full else DEFAULT_FWMARK
    ops: list[Route | Rule] = []
    for default in full:
        fam = default.version
        ops += [Rule(fam, RULE_PRIORITY, RT_TABLE_MAIN, suppress_prefixlength=0),
                Route(default, table),
                Rule(fam, RULE_PRIORITY + 1, table, fwmark=mark)]
    ops += [Route(n) for n in allowed_ips if n.prefixlen]
    return RoutePlan(mark, tuple(ops))


def _family(version: int) -> int:
    return socket.AF_INET if version == 4 else socket.AF_INET6


def _rule_args(r: Rule) -> dict:
    args = {"family": _family(r.family), "priority": r.priority, "table": r.table}
    if r.fwmark is not None:
        args.update(fwmark=r.fwmark, flags=FIB_RULE_INVERT)
    if r.suppress_prefixlength is not None:
        args["suppress_prefixlen"] = r.suppress_prefixlength
    return args


def _route_args(r: Route, oif: int) -> dict:
    return {"family": _family(r.prefix.version), "dst": str(r.prefix), "oif": oif,
            "table": r.table}


_GONE = (errno.ENOENT, errno.ESRCH, errno.ENODEV)  # already absent: nothing to undo


class RouteSet:
    """The routes and rules this client installed on its TUN; :meth:`undo`
    removes exactly those (and may be called any number of times)."""

    def __init__(self, ifname: str):
        self.ifname = ifname
        self.applied: list[Route | Rule] = []
        self._oif = 0

    def apply(self, route_plan: RoutePlan) -> None:
        """Install every operation; on a failure, undo what was installed and
        raise RouteError naming the operation."""
        from pyroute2 import IPRoute  # noqa: PLC0415
        from pyroute2.netlink.exceptions import NetlinkError  # noqa: PLC0415

        if not route_plan.ops:
            return  # the default: the TUN address's own prefix, nothing to add
        with IPRoute() as ipr:
            found = ipr.link_lookup(ifname=self.ifname)
            if not found:
                raise RouteError(f"no interface {self.ifname} to route into")
            self._oif = found[0]
            for op in route_plan.ops:
                try:
                    self._add(ipr, op)
                except NetlinkError as e:
                    self.undo()
                    raise RouteError(f"{op.describe()} dev {self.ifname}: {_why(e)}") from None
                self.applied.append(op)

    def _add(self, ipr, op: Route | Rule) -> None:
        if isinstance(op, Route):
            ipr.route("add", **_route_args(op, self._oif))  # exclusive: never takes a route over
            return
        _delete_all(ipr, op)  # the same rule left by a client that was killed
        ipr.rule("add", **_rule_args(op))

    def undo(self) -> list[str]:
        """Remove what :meth:`apply` installed, newest first; what could not be
        removed (other than already gone) as one line each."""
        from pyroute2 import IPRoute  # noqa: PLC0415
        from pyroute2.netlink.exceptions import NetlinkError  # noqa: PLC0415

        failed: list[str] = []
        if not self.applied:
            return failed
        with IPRoute() as ipr:
            while self.applied:
                op = self.applied.pop()
                try:
                    if isinstance(op, Route):
                        ipr.route("del", **_route_args(op, self._oif))
                    else:
                        ipr.rule("del", **_rule_args(op))
                except NetlinkError as e:
                    if e.code not in _GONE:
                        failed.append(f"{op.describe()}: {e}")
        return failed


def _why(e) -> str:
    if e.code == errno.EEXIST:
        return "the table already has a route for this prefix (not ours: left as it is)"
    return e.args[1] if len(e.args) > 1 else str(e)


class ClientRouting:
    """What the client installs on the host for its AllowedIPs: for a full
    tunnel the firewall table first (so the replies pass a strict rp_filter
    from the moment the rules exist), then the routes and rules; undone
    together, the rules first. ``undo`` is idempotent."""

    def __init__(self, ifname: str, route_plan: RoutePlan,
                 firewall: MarkFirewall | None = None):
        self.plan = route_plan
        self.routes = RouteSet(ifname)
        self.firewall = firewall or MarkFirewall(ifname)

    def apply(self, inner: list[str]) -> None:
        """``inner``: the client's inner addresses (guarded against arriving on
        another interface). Raises RouteError with nothing left installed."""
        try:
            if self.plan.full_tunnel:
                self.firewall.apply(self.plan.mark, inner)
            self.routes.apply(self.plan)
        except (RouteError, FirewallError) as e:
            self.firewall.undo()
            raise RouteError(str(e)) from None

    def undo(self) -> list[str]:
        return self.routes.undo() + self.firewall.undo()


def _delete_all(ipr, rule: Rule) -> None:
    from pyroute2.netlink.exceptions import NetlinkError  # noqa: PLC0415

    for _ in range(64):  # bounded: each round removes one copy
        try:
            ipr.rule("del", **_rule_args(rule))
        except NetlinkError as e:
            if e.code in _GONE:
                return
            raise
