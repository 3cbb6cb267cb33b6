"""The client's candidate paths (docs/protocol.md "Candidates", "Probing the
candidates"): which uplinks can reach the gateway (learnt from netlink, as
route changes are), one outer socket per candidate (bound to its source
address and interface, with the outer socket's mark), and the probes that
measure each one that is not active. :func:`discover` asks the kernel;
:class:`Candidates` keeps the sockets, the probe schedule and the
outstanding probes, over an injected clock, randomness and socket maker."""

from __future__ import annotations

import functools
import ipaddress
import itertools
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from jvpn.client_path_health import PathHealth
from jvpn.policy import Policy
from jvpn.rtnl import Route, Rtnl

PROBE_JITTER = 0.10  # each interval drawn in probe_interval_ms · (1 ± 10 %)


@dataclass(frozen=True)
class Uplink:
    """A candidate as the kernel reports it: its key is (source, ifindex),
    the same pair as :func:`jvpn.client_path.route_to` returns."""

    source: str
    ifindex: int
    ifname: str
    metric: int = 0

    @property
    def key(self) -> tuple[str, int]:
        return (self.source, self.ifindex)


def rank(uplinks: list[Uplink], active: tuple | None, preferred: tuple | None,
         limit: int) -> list[Uplink]:
    """At most ``limit``: the active one and the preferred one first, then by metric."""
    def order(u: Uplink):
        return (u.key != active, u.key != preferred, u.metric, u.ifindex)
    return sorted(uplinks, key=order)[:limit]


def _on_link(nl: Rtnl, ifindex: int, endpoint) -> bool:
    """The endpoint is in a network an address of the interface has."""
    return any(endpoint.version == a.version and endpoint in a.network
               for a in nl.addresses(ifindex))


def _route_via(nl: Rtnl, endpoint, ifindex: int, mark: int | None) -> Route | None:
    """``route get endpoint oif ifindex`` (with the mark), or None. The kernel
    answers an oif lookup even without a route through it: only a route
    through a gateway, or an endpoint on the interface's own network,
    is a path."""
    try:
        r = nl.route_get(str(endpoint), oif=ifindex, mark=mark)
    except OSError:  # no route through it
        return None
    if r.oif != ifindex or r.prefsrc is None:
        return None
    if r.gateway is None and not _on_link(nl, ifindex, endpoint):
        return None
    return r


IFF_UP, IFF_LOOPBACK, IFF_RUNNING = 0x1, 0x8, 0x40  # linux/if.h


def _usable(link, skip: frozenset[str]) -> bool:
    """Up and with a carrier (RUNNING: a Wi-Fi that lost its association,
    a cable pulled, a veth whose peer went down are UP but carry nothing),
    not loopback, not named in ``skip``."""
    return (link.name not in skip and bool(link.flags & IFF_UP)
            and bool(link.flags & IFF_RUNNING) and not link.flags & IFF_LOOPBACK)


def discover(endpoint: str, mark: int | None, skip: frozenset[str]) -> list[Uplink] | None:
    """Every interface that is up with a carrier, not loopback, not named
    in ``skip`` (the TUN), with a route to ``endpoint`` through it (asked with ``mark``).
    None when netlink cannot be asked. Raw rtnetlink (jvpn/rtnl.py): a
    link change asks this at once, while a reattach waits for it."""
    gw = ipaddress.ip_address(endpoint)
    found = []
    try:
        with Rtnl() as nl:
            for link in nl.links():
                if not _usable(link, skip):
                    continue
                r = _route_via(nl, gw, link.index, mark)
                if r is not None:
                    found.append(Uplink(r.prefsrc, link.index, link.name, r.priority or 0))
    except Exception:  # noqa: BLE001 - netlink unavailable: no candidates this time
        return None
    return found


def candidate_socket(uplink: Uplink, family: int, mark: int | None,
                     timeout_s: float) -> socket.socket:
    """A candidate's own outer socket: bound to the uplink's source address
    (ephemeral port) and interface (SO_BINDTODEVICE), with the outer
    socket's mark: its datagrams leave by that uplink whatever the routing
    table prefers. OSError if the kernel refuses (the address is gone)."""
    s = socket.socket(family, socket.SOCK_DGRAM)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        if mark is not None:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, mark)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, uplink.ifname.encode())
        s.bind((uplink.source, 0))
        s.settimeout(timeout_s)
    except OSError:
        s.close()
        raise
    return s


def pin(sock, ifname: str) -> None:
    """Pin a socket that is already bound (the handshake's, a rebind's) to
    its uplink's interface, so a route that later prefers another uplink
    does not carry its datagrams out with another source address (the
    gateway would drop them: not its binding). Best effort: a test's socket
    has no such option."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, ifname.encode())
    except (OSError, AttributeError, TypeError):
        pass


@dataclass
class Path:
    """One candidate: its uplink, socket, measurement and probe schedule."""

    uplink: Uplink
    sock: object
    health: PathHealth
    next_probe_ms: int = 0
    probes: dict[int, int] = field(default_factory=dict)  # outstanding probe id -> sent ms
    lost_in_a_row: int = 0  # its probes counted lost since its last answer


def _serialized(method):
    """Runs ``method`` under the set's lock. Two threads change and walk
    the same dicts: the receive thread (a switch's take and adopt, a probe
    reply) and the monitor (tick, due, refresh); unserialized, the monitor
    died on "dictionary changed size during iteration" (review r14b B)."""

    @functools.wraps(method)
    def under_lock(self, *args, **kwargs):
        with self._lock:
            return method(self, *args, **kwargs)

    return under_lock


class Candidates:
    """The candidate set: ``refresh`` from a discovery, ``due`` probes to
    send, ``reply`` for a probe reply. The active path is not probed (its
    heartbeats measure it); its socket is the client's, not owned here."""

    def __init__(self, policy: Policy, clock_ms: Callable[[], int], rand: Callable[[], float],
                 open_socket: Callable[[Uplink], object],
                 changed: Callable[[], None] = lambda: None):
        self.policy, self.clock_ms, self.rand = policy, clock_ms, rand
        self.open_socket = open_socket
        self.changed = changed  # a socket joined or left the set: the receive loop lists again
        self._lock = threading.RLock()  # reentrant: drop takes, refresh drops
        self.paths: dict[tuple, Path] = {}  # walked from outside only through listed()
        self.preferred: tuple | None = None
        self._ids = itertools.count(1)  # the probe id: the client's own counter
        self._probe_of: dict[int, tuple] = {}  # outstanding probe id -> candidate key

    @_serialized
    def refresh(self, found: list[Uplink], active: tuple | None, preferred: tuple | None,
                keep: frozenset = frozenset()) -> tuple[list[Uplink], list[Uplink]]:
        """Take a discovery: (added, removed). Sockets open for new
        candidates and close for gone ones, except those in ``keep`` (a
        switch in flight through it, the active one: the client owns it)."""
        self.preferred = preferred
        wanted = {u.key: u for u in rank(found, active, preferred,
                                          self.policy.max_candidate_count)}
        removed = [p.uplink for k, p in self.paths.items()
                   if (k not in wanted or k == active) and k not in keep]
        for u in removed:
            self.drop(u.key)
        added = []
        for key, u in wanted.items():
            if key in self.paths or key == active:
                continue
            try:
                sock = self.open_socket(u)
            except OSError:
                continue  # the address went away meanwhile: the next refresh sees it
            self.paths[key] = Path(u, sock, PathHealth(self.policy, self.clock_ms()),
                                   next_probe_ms=self.clock_ms())
            added.append(u)
        if added:
            self.changed()
        return added, removed

    @_serialized
    def adopt(self, uplink: Uplink, sock, health: PathHealth) -> None:
        """The former active path becomes a candidate (its socket stays open)."""
        self.paths[uplink.key] = Path(uplink, sock, health, next_probe_ms=self.clock_ms())
        self.changed()

    @_serialized
    def take(self, key: tuple) -> Path | None:
        """The chosen candidate becomes active: no longer probed or owned here."""
        p = self.paths.pop(key, None)
        if p is not None:
            for pid in p.probes:
                self._probe_of.pop(pid, None)
            p.probes.clear()
            self.changed()
        return p

    @_serialized
    def drop(self, key: tuple) -> None:
        p = self.take(key)
        if p is not None:
            try:
                p.sock.close()
            except OSError:
                pass

    @_serialized
    def in_flight(self) -> bool:
        """A probe of ours is outstanding: neither answered nor counted lost."""
        return any(p.probes for p in self.paths.values())

    @_serialized
    def due(self, now_ms: int) -> list[tuple[Path, int]]:
        """(path, probe id) of the next probe to send, if any: one probe in
        flight at a time across all candidates, so none while one is
        outstanding, else the candidate whose probe is due the longest (the
        others follow once it is answered or lost). The gateway raises the
        gate's probe floor to each probe it verifies: a probe of ours that
        overtook another would have the gate drop the other as a replay
        (jvpn/client_probe_guard.py).
        A candidate whose probe was just counted lost goes first, at once:
        the probe may only be late (a delay spike), and another candidate's
        probe would raise the floor past it, so that it dies at the gate
        when it arrives and the candidate stays unproven (a failover then
        waited seconds, review D). A probe on the same path cannot overtake
        the late one; answered, it proves the path again. Only once per
        loss streak: a dead candidate's follow-up is lost too and it waits
        its turn, never starving the others (and, unanswered, it is never
        eligible: jvpn/client_path_select.py)."""
        if self.in_flight():
            return []
        follow_up = [p for p in self.paths.values() if p.lost_in_a_row == 1]
        waiting = follow_up or [p for p in self.paths.values() if now_ms >= p.next_probe_ms]
        if not waiting:
            return []
        p = min(waiting, key=lambda q: q.next_probe_ms)
        jitter = 1 + PROBE_JITTER * (2 * self.rand() - 1)
        p.next_probe_ms = now_ms + int(self.policy.probe_interval_ms * jitter)
        pid = next(self._ids)
        p.probes[pid] = now_ms
        p.health.sent(pid, now_ms)
        self._probe_of[pid] = p.uplink.key
        return [(p, pid)]

    @_serialized
    def reply(self, sock, probe_id: int, now_ms: int) -> Path | None:
        """A probe reply that came on ``sock``: taken once, only for an
        outstanding probe, and only on the socket its probe left from."""
        key = self._probe_of.get(probe_id)
        p = self.paths.get(key) if key is not None else None
        if p is None or p.sock is not sock:
            return None
        if probe_id not in p.probes:  # lost at its timeout: a late reply still measures the path
            if probe_id in p.health.lost_late:
                del self._probe_of[probe_id]
                p.health.answered(probe_id, now_ms)  # PathHealth._late: RTT sample, revised
                p.health.last_answered = True
                p.lost_in_a_row = 0
            return None
        del self._probe_of[probe_id]
        del p.probes[probe_id]
        p.lost_in_a_row = 0
        return p if p.health.answered(probe_id, now_ms) else None

    @_serialized
    def tick(self, now_ms: int) -> None:
        """Probes past their loss timeout are lost (and forgotten)."""
        for p in self.paths.values():
            p.health.tick(now_ms)
            for pid in [i for i in p.probes if i not in p.health.outstanding]:
                del p.probes[pid]
                p.lost_in_a_row += 1  # the first: its follow-up goes next (due)
                if pid not in p.health.lost_late:
                    self._probe_of.pop(pid, None)  # (kept while a late reply still counts)
        for pid, key in list(self._probe_of.items()):  # a late reply no longer counts
            q = self.paths.get(key)
            if q is None or (pid not in q.probes and pid not in q.health.lost_late):
                del self._probe_of[pid]

    @_serialized
    def listed(self) -> list[tuple[tuple, Path]]:
        """(key, path) of every candidate, a copy: to walk from another
        thread while the set changes."""
        return list(self.paths.items())

    @_serialized
    def sockets(self) -> list:
        return [p.sock for p in self.paths.values()]

    @_serialized
    def close(self) -> None:
        for key in list(self.paths):
            self.drop(key)
