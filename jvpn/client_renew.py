"""``Reconnect = yes``: when the gateway ended the session by itself (its
TTLs), or forgot it (a reattach refused as unknown or expired; no
authenticated answer for OrphanTimeout), the client starts a NEW session: a
fresh handshake, a new session id, new keys. It is never silent: a
``SessionRenewed`` event and a stderr line carry the old and the new
session id. The TUN, its routes and DNS stay up across it: they are only
kept if the gateway assigns the same inner addresses (it assigns them per
peer); otherwise the client stops (``client up`` again sets them up anew).

A session whose keys expired (the gateway's TERMINATE KEY_EXPIRED: no
rekey completed within its keys.reject_after_ms) is renewed too: like a
TTL it is the gateway's timer, not a decision to end the session.

Not renewed: a session the operator or the policy ended on purpose
(POLICY_TERMINATION and any reason not listed in ``RENEWABLE``: an
operator's terminate must not be undone by the client it ended), and a
stop by a signal. A failed handshake ends the client as at start.

The handshake runs in the receive loop's thread: it is the one reader of
the socket, so the handshake's answer cannot be taken by the loop. The
monitor does nothing for the session meanwhile (no keepalive, no reattach,
no orphan tick). A mixin of :class:`jvpn.client.Client`."""

from __future__ import annotations

from jvpn.client_handshake import ClientError
from jvpn.codes import EventType, Reason

# KEY_EXPIRED (issue 13): the keys aged out before a rekey completed -- a
# timer of the gateway's policy like its TTLs, not an operator's decision;
# the new session is said as any renewal is (never a silent rehandshake)
RENEWABLE = frozenset({"TTL_SESSION_EXPIRED", "TTL_TRANSPORT_LOSS_EXPIRED", "SESSION_NOT_FOUND",
                       "SESSION_EXPIRED", "ORPHANED", "KEY_EXPIRED"})


class ClientRenew:
    def renew_wanted(self, code: str) -> bool:
        """Whether a session that ended with ``code`` is renewed (under the lock)."""
        return self.reconnect and code in RENEWABLE and not self._stop.is_set()

    def renew(self) -> None:
        """The new session (receive loop's thread), or the agent stops with why."""
        old_sid, old = self.session_id, self.assignment
        kept = (self.assignment, self.keys, self.channel)  # put back if the new one is left
        self.progress(f"session {old_sid:016x} ended ({self.failed}): a new handshake")
        try:
            a = self.handshake()
        except ClientError as e:
            self._renew_failed(str(e))
            return
        if (a.client_inner, a.client_inner6) != (old.client_inner, old.client_inner6):
            self._leave_new_session(kept)
            self._renew_failed(f"the new session {a.session_id:016x} has other inner addresses "
                               f"({a.client_inner}) than the TUN ({old.client_inner}): told "
                               "the gateway it is not used")
            return
        with self._lock:
            self.epoch, self.pending, self.retry_at = 0, None, None
            self.failed = self.ended = None
            self.gateway_ended = self.said_goodbye = False
            self.renewing = False
        self.renewals += 1
        line = f"new session {a.session_id:016x} replaces {old_sid:016x} (Reconnect = yes)"
        self.events.emit(EventType.SESSION_RENEWED, Reason.HANDSHAKE_OK, a.session_id,
                         old_session_id=f"{old_sid:016x}", detail=line)
        self.notice(f"jvpn client: {line}")

    def _leave_new_session(self, kept: tuple) -> None:
        """A new session the client will not use (its addresses are not the
        TUN's): the gateway is told at once (our TERMINATE under its keys),
        then the client's state names the old session again (the one its
        TUN, its report and its exit line are about), which was told before."""
        with self._lock:
            self.gateway_ended = self.said_goodbye = False
        self.send_terminate()
        with self._lock:
            self.assignment, self.keys, self.channel = kept
            self.said_goodbye = True

    def _renew_failed(self, why: str) -> None:
        with self._lock:
            self.ended = f"{self.ended}; no new session: {why}"
            self.renewing = False
        self._stop.set()
        self._wake.set()
