"""The control path: handshakes and reattach messages. Validation happens in
jvpn/gateway/admission.py and jvpn/gateway/reattach.py, ownership in the
follower; this module carries out their decisions in order: commit through
the session table, then the events that follow, then the reply, sealed under
the session's keys with the session's send counter. Runs under the
gateway's control lock."""

from __future__ import annotations

from collections.abc import Callable

from jvpn import wire
from jvpn.codes import EventType, Reason, Security
from jvpn.events import EventLog
from jvpn.gateway.admission import Admission, CookieReply, Refused
from jvpn.gateway.reattach import Decision, Proven, ReattachServer, Reject, Reply
from jvpn.gateway.table import SessionTable
from jvpn.session import Event, Transport
from jvpn.store import StoreError

Send = tuple[bytes, Transport]


class ControlPath:
    def __init__(self, *, table: SessionTable, admission: Admission, reattach: ReattachServer,
                 follower, events: EventLog, send: Callable[[bytes, Transport], None],
                 clock_ms: Callable[[], int], randbits: Callable[[int], int]):
        self.table, self.admission, self.reattach = table, admission, reattach
        self.follower, self.events, self.send = follower, events, send
        self.clock_ms, self.randbits = clock_ms, randbits

    # ------------------------------------------------------------ handshake
    def handshake(self, msg: bytes, src: tuple[str, int]) -> None:
        verdict = self.admission.check(msg, src)
        if isinstance(verdict, CookieReply):
            self.send(verdict.msg, Transport(*src))
            return
        if isinstance(verdict, Refused):
            self.events.emit(EventType.HANDSHAKE_REJECTED, Reason.HANDSHAKE_FAIL,
                             transport=Transport(*src), detail=verdict.detail)
            return
        old = self.table.for_inner(verdict.inner.packed)
        if old is not None:  # explicit: a new handshake ends the previous session
            self.table.transition(old, Event.OPERATOR_TERMINATE,
                                  detail="replaced by a new handshake")
        sid = self.table.unused_id(self.randbits)
        if not self.follower.may_admit():
            self.events.emit(EventType.HANDSHAKE_REJECTED, Reason.OWNERSHIP_CONFLICT,
                             transport=Transport(*src),
                             detail="this gateway's lease is not certainly alive")
            return
        new = self.admission.session(verdict, sid, Transport(*src), self.clock_ms(),
                                     owner=self.events.node_id,
                                     owner_lease=self.table.ownership.token)
        try:
            self.table.create(new.record, new.keys, verdict.inner.packed, new.transition)
        except StoreError as e:
            self.events.emit(EventType.HANDSHAKE_REJECTED, Reason.HANDSHAKE_FAIL, sid,
                             detail=str(e))
            return
        self.send(new.response, Transport(*src))

    # ------------------------------------------------------------ reattach
    def reattach_message(self, msg: bytes, src: Transport) -> list[Send]:
        """One REATTACH_REQ or PATH_RESPONSE; returns what to send."""
        try:
            return self._reattach_message(msg, src)
        finally:
            self._raise_control_floor(msg)

    def _raise_control_floor(self, msg: bytes) -> None:
        """Once the validator recorded the message's counter (it acted on a
        verified message, now or before), the gate drops its replays before
        any bucket (issue 10 item 5). Copies with another body never get here."""
        try:
            hdr = wire.parse_header(msg)
        except wire.WireError:
            return
        if self.reattach.recorded(hdr.session_id, hdr.counter):
            self.table.raise_control_floor(hdr.session_id, hdr.counter)

    def _reattach_message(self, msg: bytes, src: Transport) -> list[Send]:
        step = self.reattach.check(msg, src)
        if isinstance(step, Proven):
            try:
                rec = self.follower.claim(step.rec, step.keys, step.msg, step.src)
            except Reject as r:
                return self._report(self.reattach.rejected(step.rec.session_id, src, r))
            if rec is None:
                return []  # parked until the owning gateway releases the session
            step = self.reattach.after_claim(step, rec)
        return self._carry_out(step) if step is not None else []

    def _carry_out(self, d: Decision) -> list[Send]:
        if d.new is not None:
            try:
                self.table.commit(d.base, d.new, d.keys, d.steps, detail=d.detail)
            except StoreError as e:  # a version conflict included: nothing changed
                return self._report(Decision(d.sid, d.src, reject=Reject(
                    Reason.OWNERSHIP_CONFLICT, Security.SEC_OWNERSHIP_ANOMALY, str(e))))
        for note in d.notes:
            self.events.emit(note.type, note.reason, d.sid, note.transport, **note.fields)
        if d.pending is not None:
            self.reattach.await_response(d.sid, d.pending)
        if d.reject is not None:
            return self._report(d)
        return self._sealed(d, d.reply)

    def _report(self, d: Decision) -> list[Send]:
        r = d.reject
        self.events.emit(EventType.REATTACH_RESULT, r.reason, d.sid, d.src, detail=r.detail,
                         accepted=False)
        if r.security:
            self.events.emit(EventType.SECURITY_EVENT, r.security, d.sid, d.src, detail=r.detail)
        return self._sealed(d, d.rejection_reply())

    def _sealed(self, d: Decision, reply: Reply | None) -> list[Send]:
        if reply is None:
            return []
        msg = wire.seal_control(
            wire.Header(type=reply.type, session_id=d.sid,
                        counter=self.table.next_counter(d.sid)),
            d.keys.hdr_s2c, d.keys.reattach, *reply.fields)
        return [(msg, reply.to)]

    def expire_challenges(self) -> None:
        """Unanswered path challenges: DEGRADED (a refused commit: nothing)."""
        for d in self.reattach.expire():
            try:
                self.table.commit(d.base, d.new, d.keys, d.steps, detail=d.detail)
            except StoreError:
                continue
