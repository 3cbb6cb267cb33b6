"""Handshakes on the control path: a mixin of jvpn/gateway/control.py's
ControlPath (its table, admission, follower, events and send). Validated
fully before anything changes (admission.py); then the new session's
durable writes (jvpn/gateway/new_session.py, maybe group-committed) and,
only once they are durable, the response. Runs under the control lock
(the continuation too)."""

from __future__ import annotations

from jvpn.codes import EventType, Reason, Security
from jvpn.gateway.admission import REPLAYED, CookieReply, Refused
from jvpn.gateway.capacity import AttemptAnswerable
from jvpn.session import Transport
from jvpn.store import StoreError


class Handshakes:
    def handshake(self, msg: bytes, src: tuple[str, int]) -> None:
        """An initiation: validated fully (cookie, Noise, peer, timestamp newer
        than the peer's live session and than the store's record, claimed
        there by compare-and-swap, and not dated ahead of our clock) before
        anything changes; then a new session, unconfirmed (see
        :meth:`confirm`), and the response."""
        verdict = self.admission.check(msg, src)
        if isinstance(verdict, CookieReply):
            # anyone can make us send these, to any source: a share of the
            # send buffer, not the room the sessions' traffic needs
            if self.send_unverified(verdict.msg, Transport(*src)) is False:
                return  # dropped: counted there (jvpn_send_drops_total)
            # counted, one summary line per interval: anyone can make us send these
            self.events.emit_unauthenticated(EventType.HANDSHAKE_COOKIE, Reason.RATE_LIMITED,
                                             Transport(*src[:2]), detail="cookie reply sent")
            return
        if isinstance(verdict, Refused):
            self._refuse(verdict, src)
            return
        now = self.clock_ms()  # one reading: the check below and the record's created_ms
        refused = self._stale(verdict) or self.admission.dated_ahead(verdict, now)
        if refused is not None:
            self._refuse(refused, src)
            return
        if not self.follower.may_admit():
            self._refuse(Refused("this gateway's lease is not certainly alive",
                                 Reason.OWNERSHIP_CONFLICT), src)
            return
        self._start_session(verdict, src, now)

    def _stale(self, verdict) -> Refused | None:
        """Not newer than the initiation of the peer's live session, or of
        an attempt awaiting confirmation: a replay (after a restart too: not
        a way to end an attempt, which a new attempt may replace)."""
        inner = verdict.inner.packed
        for live in (self.table.for_inner(inner), *self.table.attempts_of(inner)):
            stale = self.admission.older_than(verdict, live.record if live else None)
            if stale is not None:
                return stale
        return None

    def _start_session(self, verdict, src: tuple[str, int], now: int) -> None:
        """The new session's writes, the initiation's claim first among
        them (one claim per initiation in the whole cluster: no answer, no
        handshake), then, once they are durable, the response
        (``_written``, maybe on the store's writer thread, under the lock).
        ``now``: the record's created_ms, the clock ``dated_ahead`` read."""
        init = verdict.init
        try:
            sid = self.table.unused_id(self.randbits)
            new = self.admission.session(verdict, sid, Transport(*src), now,
                                         owner=self.events.node_id,
                                         owner_lease=self.table.ownership.token)
            self.table.start_new(init.client_public, init.timestamp_ns, new.record, new.keys,
                                 verdict.inner.packed, new.transition,
                                 lambda result: self._written(result, verdict, new, src),
                                 answer=new.response)
        except StoreError as e:  # SessionsFull, AttemptInProgress too (jvpn/gateway/capacity.py)
            detail = str(e)
            if isinstance(e, AttemptAnswerable):
                self._answerable(e, verdict, src)
                detail += "; its answer sent again" if e.answer is not None else ""
            self._refuse(Refused(detail, getattr(e, "reason", Reason.HANDSHAKE_FAIL)), src)

    def _answerable(self, e: AttemptAnswerable, verdict, src: tuple[str, int]) -> None:
        """Refused while the peer's attempt is answerable: the initiation is
        spent (claimed nowhere, it would be fresh again once there is room:
        whoever saw it could then spend the peer's room with it; its
        timestamp is this process's "not newer" bar), and that attempt's
        own response goes out again, once for this authenticated initiation
        (review k19r1 R4: at capacity the client's retries were refused
        until 4.1 s past its first, and two lost answers ended its handshake)."""
        self.admission.spent(verdict)
        if e.answer is not None:
            self.send(e.answer, Transport(*src))

    def _written(self, result, verdict, new, src: tuple[str, int]) -> None:
        """The store kept the session (or refused): only now the response."""
        if result is None:
            self._refuse(Refused(f"{REPLAYED}: not newer than the stored timestamp",
                                 Reason.REPLAY_DETECTED), src)
            return
        if isinstance(result, StoreError):
            self._refuse(Refused(str(result), getattr(result, "reason", Reason.HANDSHAKE_FAIL)),
                         src)
            return
        self.admission.accepted(verdict)
        self.send(new.response, Transport(*src))

    def _refuse(self, refused: Refused, src: tuple[str, int]) -> None:
        extra = ({"security": Security.SEC_REPLAY_ATTEMPT}
                 if refused.reason is Reason.REPLAY_DETECTED else {})
        self.events.emit(EventType.HANDSHAKE_REJECTED, refused.reason,
                         transport=Transport(*src[:2]), detail=refused.detail, **extra)
