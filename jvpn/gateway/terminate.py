"""The session table's operator ends: one session (`jvpn-xdp terminate`,
the seed's T20) or every session of a peer (`terminate --peer`, and a peer
revoked by a reload); and the operator's rekey mark (`jvpn-xdp rekey`). A
mixin of :class:`jvpn.gateway.table.SessionTable`: an end goes through the
table's ``commit`` (the store's compare-and-swap first; then the element
leaves the gate, the client gets the authenticated TERMINATE naming the
reason, and the SessionStateChange and SessionTerminated events carry it),
then the session is forgotten at once, not at the next timer tick. Callers
hold the control lock."""

from __future__ import annotations

from typing import TYPE_CHECKING

from jvpn.errors import JvpnError
from jvpn.session import Event, IllegalTransition, SessionRecord, State, apply

if TYPE_CHECKING:
    from jvpn.gateway.table import Live


class NotServedHere(JvpnError):
    """The session is not one this gateway serves: unknown, or another
    gateway's (then the message names the owner)."""


class OperatorEnds:
    def terminate(self, sid: int, event: Event = Event.OPERATOR_TERMINATE,
                  detail: str = "") -> SessionRecord:
        """End session ``sid`` now; returns its TERMINATED record. Raises
        NotServedHere (nothing changed) or StoreError (the store refused or
        did not answer: nothing changed, the session goes on)."""
        live = self.sessions.get(sid)
        if live is None:
            raise NotServedHere(self._not_here(sid))
        rec = live.record
        try:
            new, tr = apply(rec, event, self.clock_ms())
        except IllegalTransition:  # already TERMINATED: the timer forgets it
            self.forget(sid)
            return rec
        self.commit(rec, new, live.keys, [(new, tr)], detail=detail)
        self.forget(sid)
        return new

    def quarantine(self, sid: int, lifts: bool = False) -> None:
        """A session that must end but whose record the store would not end:
        its element leaves the gate and the peer's downstream leaves it now,
        and neither comes back (the revocation is retried until it ends).
        ``lifts``: key expiry's, which ``lift_quarantine`` ends once its
        write lands; it never softens a revocation's."""
        live = self.sessions.get(sid)
        if live is None:
            return
        live.quarantine_lifts = lifts and (live.quarantine_lifts or not live.quarantined)
        live.quarantined = True
        self.timers.touch(sid)  # retried each tick while it holds
        self._unroute(live)
        self.gate.remove(sid)
        live.installed = False

    def sessions_at(self, inner: bytes) -> list[Live]:
        """Every session this gateway serves for the peer whose assigned
        IPv4 is ``inner`` (the routed one, older ones, unconfirmed ones)."""
        return [live for live in self.sessions.values() if live.inner == inner]

    def remote_sessions_at(self, inner: bytes) -> list[tuple[int, str]]:
        """(session id, owner) of the peer's sessions another gateway of the
        cluster owns (our standby elements): not served here, so an
        operator's --peer names them rather than leaving them out."""
        return sorted((sid, owner) for sid, (_keys, owner) in self.standby.items()
                      if self.standby_inner.get(sid) == inner)

    def request_rekey(self, sid: int) -> bool:
        """The operator's forced rekey (`jvpn-xdp rekey`): False if this
        gateway does not serve ``sid``. Only marks the session: the gateway
        then flags its replies and the exchange is the client's
        (docs/protocol.md "Rekey")."""
        live = self.sessions.get(sid)
        if live is None:
            return False
        live.rekey_requested = True
        return True

    def _not_here(self, sid: int) -> str:
        owner = self.standby.get(sid, (None, ""))[1]
        if owner:
            return (f"session {sid:016x} is owned by gateway {owner!r}: terminate it there "
                    "(the operator socket of that gateway)")
        return f"no session {sid:016x} on this gateway"

    def lift_quarantine(self, live) -> None:
        """Key expiry's quarantine, once the store holds the transition it
        waited for (DEGRADED: the gate drops its data, a rekey brings it
        back): the element returns through the normal put, the downstream
        with it. A revocation's quarantine is never lifted."""
        if not (live.quarantined and live.quarantine_lifts):
            return
        live.quarantined = live.quarantine_lifts = False
        self.timers.touch(live.record.session_id)
        if live.record.state is State.TERMINATED or self.sessions.get(
                live.record.session_id) is not live:
            return
        if not self.fenced:
            self._put(live, live.record)
        if live.confirmed:
            self._route(live)
