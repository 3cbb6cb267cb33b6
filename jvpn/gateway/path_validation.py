"""Reattach steps 8 and after: the PATH_RESPONSE from the challenged
transport, and challenges that were not answered in time. A mixin of
:class:`jvpn.gateway.reattach.ReattachServer` (its pending challenges, control
windows, clock and store); it decides and writes nothing."""

from __future__ import annotations

from jvpn import wire
from jvpn.codes import EventType, Reason, Security
from jvpn.gate import abi
from jvpn.gateway.decisions import Decision, Note, Reject, Reply
from jvpn.session import Event, IllegalTransition, Transport, apply


class PathValidation:
    def _path_response(self, hdr: wire.Header, msg: bytes, src: Transport) -> Decision:
        rec, keys = self._load(hdr.session_id)
        server_nonce, client_nonce = self._fields(msg, abi.MSG_PATH_RESPONSE)
        self._verify(hdr, msg, rec, keys)
        self._fresh(hdr)
        p = self.pending.get(hdr.session_id)
        if p is None or server_nonce != p.server_nonce or client_nonce != p.client_nonce:
            raise Reject(Reason.REPLAY_DETECTED, Security.SEC_REPLAY_ATTEMPT, "no such challenge")
        if src != p.candidate:
            raise Reject(Reason.AUTH_FAIL, Security.SEC_SESSION_FIXATION_ATTEMPT,
                         f"answered from {src}, challenged {p.candidate}")
        now = self.clock_ms()
        del self.pending[hdr.session_id]
        self.windows.mark(hdr.session_id, hdr.counter)
        if rec.version != p.version:
            raise Reject(Reason.OWNERSHIP_CONFLICT, Security.SEC_OWNERSHIP_ANOMALY,
                         "record moved", authenticated=True, seq=p.seq)
        try:
            new, tr = apply(rec, Event.REATTACH_VALID, now, binding=p.candidate, candidate=None,
                            transport_lost_ms=None, epoch=rec.epoch + 1, switch_seq=p.seq,
                            switches_ms=(*rec.switches_ms, now),
                            # the client sent this after our challenge: every
                            # counter a previous holder delivered is below it
                            c2s_floor=max(rec.c2s_floor, hdr.counter + 1))
        except IllegalTransition as e:
            raise Reject(Reason.OWNERSHIP_CONFLICT, Security.SEC_OWNERSHIP_ANOMALY,
                         str(e)) from None
        notes = (
            Note(EventType.TRANSPORT_SWITCH, Reason.TRANSPORT_SWITCH_OK, p.candidate,
                 dict(version=new.version, previous_transport=str(rec.binding),
                      new_transport=str(p.candidate), candidate_count=1, explicit=True)),
            Note(EventType.REATTACH_RESULT, Reason.REATTACH_ACCEPT, p.candidate,
                 dict(version=new.version, accepted=True)))
        return Decision(rec.session_id, src, keys, rec, new, ((new, tr),), notes=notes,
                        reply=Reply(abi.MSG_REATTACH_ACK, (p.seq, new.epoch, new.version),
                                    p.candidate))

    # ------------------------------------------------------------ timers
    def expire(self) -> list[Decision]:
        """Challenges not answered in time: RECOVERING -> DEGRADED (to commit;
        a commit that fails is dropped without a word)."""
        now = self.clock_ms()
        due = []
        for sid, p in list(self.pending.items()):
            if now < p.deadline_ms:
                continue
            del self.pending[sid]
            try:
                rec, keys = self._load(sid)
                if rec.version != p.version:
                    continue
                new, tr = apply(rec, Event.REATTACH_INVALID, now, candidate=None)
            except (Reject, IllegalTransition):
                continue
            due.append(Decision(sid, p.candidate, keys, rec, new, ((new, tr),),
                                detail="path validation timed out"))
        return due
