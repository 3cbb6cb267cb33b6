"""The session table's routing half (a mixin of ``SessionTable``, like
standby.py): which session a peer's downstream goes to, and with it the
peer's AllowedIPs in the longest-prefix match of the TUN loop and the
kernel routes to the subnets behind the peer (jvpn/gateway/routes.py).

``_route`` and ``_unroute`` are the one place all three change, called by
the table when a session becomes, or stops being, its peer's downstream
target (a routed install, a confirmed handshake, the session dropped).
"""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING

from jvpn.prefixes import Network
from jvpn.session import State

if TYPE_CHECKING:
    from jvpn.gateway.table import Live


class Downstream:
    """Needs from the table: ``sessions``, ``by_inner``, ``downstream`` (a
    PrefixMap), ``peers`` (packed inner IPv4 -> PeerConfig), ``routes``,
    ``sessions_of`` (a peer's sessions: jvpn/gateway/indexes.py)."""

    def for_destination(self, dst: bytes | None) -> Live | None:
        """The session an inner packet to ``dst`` (packed IPv4 or IPv6) goes
        to: the longest of the routed sessions' AllowedIPs holding it."""
        sid = self.downstream.lookup(dst)
        return self.sessions.get(sid) if sid is not None else None

    def _allowed(self, inner: bytes) -> tuple[tuple[Network, ...], tuple[Network, ...]]:
        """(AllowedIPs, subnets) of the peer whose assigned IPv4 is ``inner``."""
        peer = self.peers.get(inner)
        if peer is None:
            return (ipaddress.IPv4Network(inner),), ()
        return peer.allowed_ips, peer.subnets

    def _route(self, live: Live) -> None:
        """The peer's downstream goes to ``live`` from now on, unless a newer
        session of the peer (a later handshake) has it: sessions restored
        or adopted in any order route the newest, so an older one ending
        cannot take the peer's prefixes and subnet routes with it."""
        if live.quarantined:
            return  # revoked, its end not yet stored: never the peer's again
        sid = live.record.session_id
        cur = self.sessions.get(self.by_inner.get(live.inner, sid))
        if (cur is not None and cur.record.session_id != sid
                and cur.record.handshake_ns > live.record.handshake_ns):
            return
        self.by_inner[live.inner] = sid
        for net in live.allowed:
            self.downstream.add(net, sid)
        if live.subnets:  # most peers route no subnet (a restart: one call less each)
            self.routes.install(sid, live.subnets)

    def _unroute(self, live: Live) -> None:
        """``live`` no longer serves its peer's downstream (if it did); the
        peer's newest remaining confirmed session takes it, if any."""
        sid = live.record.session_id
        if self.by_inner.get(live.inner) != sid:
            return  # a newer session of the peer has it (or none had)
        del self.by_inner[live.inner]
        for net in live.allowed:
            self.downstream.remove(net, sid)
        self.routes.remove(sid, live.subnets)
        heir = self._heir(live)
        if heir is not None:
            self._route(heir)

    def _heir(self, gone: Live) -> Live | None:
        """The peer's newest other CONFIRMED session: its downstream goes
        there when ``gone`` stops serving it (review R4 #4: a session the
        client never took must not leave the one it uses without a route)."""
        mates = [other for other in map(self.sessions.get, self.sessions_of(gone.inner))
                 if other is not None and other is not gone and other.inner == gone.inner
                 and other.confirmed and not other.quarantined
                 and other.record.state is not State.TERMINATED]
        return max(mates, key=lambda o: o.record.handshake_ns, default=None)

