"""The client's view of its path to the gateway, as the routing table has it:
the lookup its outer datagrams make, a wake-up on any routing change, and
(issue 11) the path MTU: read from the route like wg-quick (the route's
``mtu`` metric if it has one, else the outgoing device's MTU), or set in the
config (``PathMTU =``), and announced to the gateway until it answered
(docs/protocol.md "Sizing")."""

from __future__ import annotations

import threading
from collections.abc import Callable

from jvpn import pathmtu
from jvpn.gate import abi
from jvpn.rtnl import Route, Rtnl, change_socket, from_kernel

ANNOUNCE_RETRY_MS = 200  # a lost announcement is sent again this soon
WATCH_TIMEOUT_S = 0.2  # the watcher looks at its stop flag this often


def route_to(dst: str, mark: int | None = None,
             on_mtu: Callable[[int | None], None] | None = None):
    """(preferred source, output interface index) of ``route get dst``, asked
    with the outer socket's mark when it has one: the lookup its datagrams
    make (full tunnel: the uplink, not the tunnel's own default route).
    None when there is no route: the path is gone. ``on_mtu`` gets the
    route's MTU (:func:`route_mtu`) first. Raw rtnetlink (jvpn/rtnl.py):
    the monitor asks this every step."""
    try:
        with Rtnl() as nl:
            r = nl.route_get(dst, mark=mark)
            if on_mtu is not None:
                on_mtu(route_mtu(nl, r))
            return r.prefsrc, r.oif
    except Exception:  # noqa: BLE001 - no route (or a message we cannot read): the path is gone
        return None


def watch_routing(stop: threading.Event, wake: threading.Event) -> None:
    """Set ``wake`` on any link/address/route change, until ``stop``. The
    change itself is not decoded: the monitor asks what it needs."""
    with change_socket(WATCH_TIMEOUT_S) as s:
        while not stop.is_set():
            try:
                if from_kernel(s):
                    wake.set()
            except (OSError, TimeoutError):
                continue


def route_mtu(nl, route: Route) -> int | None:
    """The MTU of a ``route get`` answer: its RTAX_MTU metric (a route's
    ``mtu``, or the kernel's cached path MTU after an ICMP
    fragmentation-needed / packet-too-big), else the MTU of its outgoing
    device (``nl.link``); None if neither is known."""
    if route.mtu:
        return route.mtu
    if route.oif is None:
        return None
    link = nl.link(route.oif)
    return link.mtu if link is not None and link.mtu else None


class PathSize:
    """The path MTU the client sizes its datagrams to, and whether the
    gateway has heard it: every keepalive announces it, and after a change
    (or a reattach: a new binding) one goes out at once and again every
    ANNOUNCE_RETRY_MS until the gateway answers a keepalive."""

    def __init__(self, family: int, configured: int | None):
        self.family, self.configured = family, configured
        self.path_mtu = pathmtu.clamp_path_mtu(configured or pathmtu.DEFAULT_PATH_MTU, family)
        self._unanswered = True  # nothing announced yet
        self._sent_ms: int | None = None
        self._reattaches = 0

    def update(self, route_mtu: int | None) -> bool:
        """Take the route's MTU (a configured PathMTU wins); True if the size changed."""
        mtu = pathmtu.clamp_path_mtu(
            self.configured or route_mtu or pathmtu.DEFAULT_PATH_MTU, self.family)
        if mtu == self.path_mtu:
            return False
        self.path_mtu, self._unanswered, self._sent_ms = mtu, True, None
        return True

    def announce_due(self, now_ms: int, reattaches: int) -> bool:
        if reattaches != self._reattaches:
            return True  # a new binding: the gateway hears our size from there
        if not self._unanswered:
            return False
        return self._sent_ms is None or now_ms - self._sent_ms >= ANNOUNCE_RETRY_MS

    def announced(self, now_ms: int, reattaches: int) -> None:
        self._sent_ms, self._reattaches = now_ms, reattaches

    def heard(self, msg_type: int) -> None:
        """An authentic message from the gateway: a keepalive answers ours,
        so the gateway has our announcement."""
        if msg_type == abi.MSG_KEEPALIVE and self._sent_ms is not None:
            self._unanswered = False


class PathSizing:
    """The client's keepalive and resize steps (a mixin of
    :class:`jvpn.client.Client`, over its channel, socket and ``size``)."""

    def _keepalive(self, now: int, confirmation: bool = False) -> None:
        """A keepalive that announces our path MTU (the gateway sizes its
        datagrams to us with it: docs/protocol.md "Sizing"); a heartbeat,
        or one of a run's confirmations (jvpn/client_paths.py)."""
        with self._lock:  # never sealed after our TERMINATE (Client.join_loops)
            if self.said_goodbye or self.keepalives_held(now):
                return  # held: our switch's request in flight (client_probe_guard.py)
            msg = self.channel.seal(pathmtu.announcement(self.size.path_mtu), abi.MSG_KEEPALIVE)
        self.size.announced(now, self.reattaches)
        # a heartbeat (jvpn/client_paths.py), counted before it leaves: its
        # echo may be read (receive thread) before sendto returns here
        self.heartbeat_sending(msg, now, confirmation)
        try:
            self.sock.sendto(msg, self.endpoint)
        except OSError:
            self.heartbeat_sent(now, ok=False)  # the active path's send fails: dead
            return
        self.heartbeat_sent(now, ok=True)

    def _announce_due(self, now: int) -> bool:
        """An announcement to send before the next keepalive? Not while a
        reattach is pending: the gate drops keepalives from a transport the
        session is not bound to yet."""
        return self.pending is None and self.size.announce_due(now, self.reattaches)

    def _resize(self, route_mtu: int | None) -> None:
        """Size our datagrams to the MTU of the route to the gateway just
        looked up (each monitor step); a change is announced at once."""
        if self.size.update(route_mtu) and self.channel is not None:
            self.channel.size_to(self.size.path_mtu, self.size.family)
