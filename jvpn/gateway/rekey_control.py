"""Carries out rekey decisions (jvpn/gateway/rekey.py) in order, under the
control lock (docs/protocol.md "Rekey", step 3): the reply's send counter
first, then one commit through the session table (record and key ring in
one compare-and-swap; the element follows with both header keys), then the
REKEY_RESP, sealed under the epoch the gateway still sends under. A store
that refuses changes nothing: no element, no keys in memory, no answer
(the client's re-send tries again). Refusals of the key holder's requests
are RekeyDenied events and sealed REKEY_REJECTs; what is not authentic gets
nothing."""

from __future__ import annotations

from jvpn import wire
from jvpn.codes import EventType, Reason
from jvpn.events import EventLog
from jvpn.gate import abi
from jvpn.gateway import key_writes
from jvpn.gateway.rekey import RekeyDecision, RekeyServer
from jvpn.gateway.sealing import confirms, seal_control
from jvpn.gateway.supervise import Incidents
from jvpn.session import Transport
from jvpn.store import StoreError
from jvpn.tunnel import CounterUnavailable

Send = tuple[bytes, Transport]


# a refused confirmation write is tried again at most this often per
# session (each try holds the control lock: not one per packet, review R1 #7)
CONFIRM_RETRY_MS = 100


class RekeyControl:
    def __init__(self, *, table, server: RekeyServer, events: EventLog, incidents: Incidents):
        """``incidents``: where refused confirmation writes are tallied
        (jvpn/gateway/supervise.py): the gateway's, on its timer clock (no
        default: one built here would pick a clock of its own, review k21r5)."""
        self.table, self.server, self.events = table, server, events
        self.incidents = incidents

    def message(self, msg: bytes, src: Transport) -> list[Send]:
        """One REKEY_INIT as received from ``src``: what to send back."""
        sid = int.from_bytes(msg[8:16], "little") if len(msg) >= 16 else 0
        live = self.table.get(sid)
        if live is not None and not self.confirmed_by(live, msg):
            return []
        d = self.server.check(msg, src, live)
        if d is None:
            return []
        if d.refusal is not None:
            return self._refuse(d, live)
        if d.resend is not None:
            return self._answer(live, d, abi.MSG_REKEY_RESP, d.resend)
        return self._commit(live, d)

    def confirmed_by(self, live, msg: bytes) -> bool:
        """A control message under the unconfirmed new epoch confirms it
        first (step 5). False: it would, but the store refused the write
        (nothing changed; the client's next message tries again)."""
        return not confirms(live.keys, msg) or self.keys_used(live)

    def keys_used(self, live) -> bool:
        """The client sent under the new epoch (the data path: a data message
        or keepalive the channel opened under it). False: the store refused."""
        if live.keys.confirmed:  # another thread's message confirmed it first
            return True
        now = self.table.timer_ms()  # a pace of ours: a wall-clock step moves it not
        if now < live.confirm_retry_ms:
            return False  # refused a moment ago: a later message tries again
        try:
            self.table.confirm_keys(live, self.server.policy.rekey_overlap_ms)
        except StoreError as e:
            live.confirm_retry_ms = now + CONFIRM_RETRY_MS
            self.incidents.report("rekey-confirm", e)  # tallied, one event per interval
            return False
        return True

    def _commit(self, live, d: RekeyDecision) -> list[Send]:
        try:
            counter = live.channel.next_counter()
        except CounterUnavailable as e:
            return self._denied(d, live, Reason.COUNTER_UNAVAILABLE, str(e))
        try:
            self.table.commit(d.base, d.new, d.ring, d.steps, detail=Reason.REKEY_REQUESTED,
                              ring=d.ring)
        except StoreError as e:  # a version conflict included: maybe nothing changed
            return self._ambiguous(d, live, counter, e)
        self.server.settled(d.sid)
        # KeyRotated follows at the confirmation; a re-send gets the ring's answer
        return [(seal_control(live.channel.send_keys, abi.MSG_REKEY_RESP, d.sid, counter,
                              *d.resp), d.src)]

    def _ambiguous(self, d: RekeyDecision, live, counter: int, e: StoreError) -> list[Send]:
        """The commit raised, yet the store may hold it (a deadline after the
        write; review R4 #3): the stored record and ring, if newer, become the
        session's through the table, and the request they answer gets the
        stored RESP. A store that ended the session, or moved it, ends or
        moves it here (RekeyDenied OWNERSHIP_CONFLICT); one that answered
        and holds nothing newer did not apply it: the attempt is taken back
        (review R5 #1, #3). Else RekeyDenied STORE_UNAVAILABLE."""
        found = self.table.refresh_keys(live, d.steps, detail=Reason.REKEY_REQUESTED)
        if found in (key_writes.ENDED, key_writes.MOVED):
            return self._denied(d, live, Reason.OWNERSHIP_CONFLICT,
                                f"the store's record is {found}: {e}")
        if found == key_writes.NOT_APPLIED:
            self.server.take_back(d)
        if found == key_writes.ADOPTED:
            self.server.settled(d.sid)
            answer, ring = live.keys.answer, live.keys
            if (not ring.confirmed and answer is not None and ring.epoch == d.asked
                    and answer.client_ephemeral == d.client_ephemeral):
                return [(seal_control(live.channel.send_keys, abi.MSG_REKEY_RESP, d.sid,
                                      counter, *answer.resp), d.src)]
            return []  # the store moved otherwise: the client's re-send meets it
        return self._denied(d, live, Reason.STORE_UNAVAILABLE, str(e))

    def _refuse(self, d: RekeyDecision, live) -> list[Send]:
        r = d.refusal
        if live is None:  # not served here: nothing opened it, nothing can answer
            self.events.emit_unauthenticated(EventType.REKEY_DENIED, r.reason, d.src, d.sid,
                                             detail=r.detail)
            return []
        self._denied(d, live, r.reason, r.detail)
        if r.compromise:
            self.events.emit(EventType.SECURITY_KEY_COMPROMISE_SUSPECTED,
                             r.security, d.sid, d.src, detail=r.detail,
                             key_epoch=live.keys.epoch)
        elif r.security is not None:
            self.events.emit(EventType.SECURITY_EVENT, r.security, d.sid, d.src,
                             detail=r.detail)
        if not r.answered:
            return []
        fields = (d.asked, live.keys.epoch, live.record.epoch,
                  wire.REJECT_REASONS.index(r.reason), d.counter)  # the refused request
        return self._answer(live, d, abi.MSG_REKEY_REJECT, fields)

    def _denied(self, d: RekeyDecision, live, reason: str, detail: str) -> list[Send]:
        self.events.emit(EventType.REKEY_DENIED, reason, d.sid, d.src, detail=detail,
                         asked_epoch=d.asked, key_epoch=live.keys.epoch)
        return []

    @staticmethod
    def _answer(live, d: RekeyDecision, msg_type: int, fields: tuple) -> list[Send]:
        try:
            counter = live.channel.next_counter()
        except CounterUnavailable:
            return []  # unsaid: the client's re-send asks again
        return [(seal_control(live.channel.send_keys, msg_type, d.sid, counter, *fields),
                 d.src)]
