"""The control path: handshakes and reattach messages. Validation happens in
jvpn/gateway/admission.py and jvpn/gateway/reattach.py, ownership in the
follower; this module carries out their decisions in order: commit through
the session table, then the events that follow, then the reply, sealed under
the session's keys with the session's send counter, taken before the commit
(no counter: refused, nothing changed). Runs under the gateway's control
lock."""

from __future__ import annotations

from collections.abc import Callable

from jvpn import wire
from jvpn.codes import EventType, Reason, Security
from jvpn.events import EventLog
from jvpn.gate import abi
from jvpn.gateway import client_stop, key_age
from jvpn.gateway.admission import Admission
from jvpn.gateway.handshakes import Handshakes
from jvpn.gateway.reattach import Decision, Proven, ReattachServer, Reject, Reply
from jvpn.gateway.sealing import seal_control
from jvpn.gateway.table import Live, SessionTable
from jvpn.session import Event, State, Transport
from jvpn.store import StoreError
from jvpn.tunnel import CounterUnavailable

Send = tuple[bytes, Transport]


class SendExpired(CounterUnavailable):
    """The epoch a reply would be sealed under is past reject_after_* (a
    rekey's confirmation write failed, or the expiry timer has not run yet):
    no reply, and so no accepting decision (review k16r5 #2)."""
CONFIRM_WAITERS = 16  # messages of one session held for its confirmation's write; then dropped


class ControlPath(Handshakes):
    def __init__(self, *, table: SessionTable, admission: Admission, reattach: ReattachServer,
                 follower, events: EventLog, send: Callable[[bytes, Transport], None],
                 clock_ms: Callable[[], int], randbits: Callable[[int], int], rekey=None,
                 send_unverified: Callable[[bytes, Transport], bool | None] | None = None):
        """``rekey``: jvpn/gateway/rekey_control.py (None: REKEY_INIT ignored).
        ``send_unverified``: how cookie replies go (jvpn/gateway/sending.py:
        within their share of the send buffer; False: dropped); None: as
        ``send``."""
        self.table, self.admission, self.reattach = table, admission, reattach
        self.rekey = rekey
        self.follower, self.events, self.send = follower, events, send
        self.send_unverified = send_unverified or send
        self.clock_ms, self.randbits = clock_ms, randbits
        # unconfirmed sessions whose confirmation is being written: the
        # deliveries waiting for it (``confirm``)
        self._confirming: dict[int, list[Callable[[], None]]] = {}

    # ------------------------------------------------------------ handshake
    def confirm(self, live: Live, src: Transport,
                then: Callable[[], None] | None = None) -> None:
        """The first authenticated message of an unconfirmed session, from
        ``src`` (the data path, under the control lock): the initiator holds
        the keys and receives at the bound address. Only now does the
        peer's downstream move here and its previous session end (as
        WireGuard's responder waits for the initiator's first message).
        ``then``: the message's delivery, once the confirmation is durable
        (maybe on the store writer's thread); never if it is not (another
        address, a refused write: the initiator's next message retries).
        Messages that arrive meanwhile wait for the same write (a few)."""
        rec = live.record
        if live.confirmed or rec.session_id not in self.table or src != rec.binding:
            return
        sid = rec.session_id
        waiting = self._confirming.get(sid)
        if waiting is not None:
            if then is not None and len(waiting) < CONFIRM_WAITERS:
                waiting.append(then)
            return
        self._confirming[sid] = [then] if then is not None else []
        old = self.table.for_inner(live.inner)

        def recorded(ok: bool) -> None:
            waiting = self._confirming.pop(sid, [])
            if ok:  # the previous session, unless it ended meanwhile
                gone = old is not None and self.table.get(old.record.session_id) is not old
                self._confirmed(live, None if gone else old)
                for deliver in waiting:
                    deliver()
        try:
            self.table.confirm(live, recorded)
        except StoreError:  # a stopped writer: not recorded, not confirmed
            self._confirming.pop(sid, None)

    def _confirmed(self, live: Live, old: Live | None) -> None:
        """The confirmation is durable: the peer's previous session ends,
        and its older attempts with it."""
        if old is not None and old is not live:
            self.table.transition(old, Event.POLICY_TERMINATE,
                                  detail="replaced by a new handshake")
        for other in list(self.table.attempts_of(live.inner)):  # a few (ATTEMPTS_KEPT)
            self.table.forget(other.record.session_id)  # another attempt of this peer

    def expire_unconfirmed(self) -> None:
        """Unconfirmed sessions end quietly: nothing is sent to their address.
        Every tick: the table's index of them, not every session (issue 15)."""
        now = self.clock_ms()
        for live in list(self.table.unconfirmed.values()):
            rec = live.record
            if self.table.attempt_expired(live, now):
                self.table.forget(rec.session_id)
                self.events.emit(EventType.HANDSHAKE_REJECTED, Reason.HANDSHAKE_FAIL,
                                 rec.session_id, rec.binding,
                                 detail="the initiator never confirmed the session")

    # ------------------------------------------------------------ reattach
    def reattach_message(self, msg: bytes, src: Transport, *,
                         parked: bool = False) -> list[Send]:
        """One REATTACH_REQ, PATH_RESPONSE or the client's TERMINATE; returns
        what to send. ``parked``: our own parked request, run again after the
        owner's release (its header counter is already recorded: it is not a copy)."""
        try:
            if msg[:1] == bytes([abi.MSG_REKEY_INIT]):
                return self.rekey.message(msg, src) if self.rekey is not None else []
            self._keys_used(msg)
            if msg[:1] == bytes([abi.MSG_TERMINATE]):
                self.client_terminate(msg, src)
                return []
            return self._reattach_message(msg, src, parked)
        finally:
            self._raise_control_floor(msg)

    def client_terminate(self, msg: bytes, src: Transport) -> None:
        """The client stopped (docs/protocol.md, "TERMINATE, both ways"): a
        session served here ends at once if the message is the key holder's
        (header tag, MAC) and fresh (its counter unseen in the session's
        control window, which records it). Anything else changes nothing."""
        sid = int.from_bytes(msg[8:16], "little") if len(msg) >= 16 else 0
        live = self.table.get(sid)
        if live is None:  # a cluster non-owner's standby, or nothing (client_stop.py)
            client_stop.not_served(msg, src, sid, self.table, self.reattach.windows,
                                   self.follower, self.events, self.clock_ms())
            return
        reason = client_stop.verified(msg, live, self.reattach.windows)
        if reason is None:
            return
        self.table.transition(live, Event.CLIENT_STOP, detail=f"the client's TERMINATE from "
                                                              f"{src} ({reason})")

    def _keys_used(self, msg: bytes) -> None:
        """A reattach message (or TERMINATE) under a rekey's unconfirmed new
        epoch is its confirmation too (docs/protocol.md "Rekey", interactions).
        A refused write leaves it unconfirmed; the message is handled anyway
        (it opens under either live epoch)."""
        live = self.table.get(int.from_bytes(msg[8:16], "little")) if len(msg) >= 16 else None
        if live is not None and self.rekey is not None:
            self.rekey.confirmed_by(live, msg)

    def _raise_control_floor(self, msg: bytes) -> None:
        """Once the validator recorded the message's counter (it acted on a
        verified message, now or before), the gate drops its replays before
        any bucket (issue 10 item 5). Copies with another body never get here.
        A retry answered with the challenge or the ACK again counts: its copies
        must not pass for a relay, and the client's next retry takes a newer
        counter (its channel's), so the floor never drops it."""
        try:
            hdr = wire.parse_header(msg)
        except wire.WireError:
            return
        if self.reattach.recorded(hdr.session_id, hdr.counter):
            self.table.raise_control_floor(hdr.session_id, hdr.counter)

    def _reattach_message(self, msg: bytes, src: Transport, parked: bool) -> list[Send]:
        step = self.reattach.check(msg, src, parked=parked)
        if isinstance(step, Proven) and step.revalidate and not self.follower.ownership.owns(
                step.rec):
            # a move back is evidence only where the switch it undoes happened:
            # elsewhere it is a replayed, spent request and must not start a
            # handoff (one copied packet would take the session from its owner)
            return self._carry_out(self.reattach.rejected(step.rec.session_id, src, Reject(
                Reason.REPLAY_DETECTED, Security.SEC_REPLAY_ATTEMPT,
                f"sequence {step.seq} used, and not switched on this gateway",
                authenticated=True, seq=step.seq)))
        if isinstance(step, Proven):
            try:
                rec = self.follower.claim(step.rec, step.keys, step.msg, step.src)
            except Reject as r:
                return self._carry_out(self.reattach.rejected(step.rec.session_id, src, r))
            if rec is None:
                return []  # parked until the owning gateway releases the session
            step = self.reattach.after_claim(step, rec)
        return self._carry_out(step) if step is not None else []

    def _carry_out(self, d: Decision) -> list[Send]:
        """The send counter of the reply first: a decision whose reply cannot
        be sealed (no durable counter, a retired channel, a send epoch past
        reject_after_*: review k16r5 #2) is refused before anything changes.
        Then commit, events, the challenge, the reply."""
        reply = d.reply if d.reject is None else d.rejection_reply()
        counter = None
        if reply is not None:
            try:
                counter = self._counter(d.sid)
            except CounterUnavailable as e:
                if d.reject is None:
                    reason = (Reason.KEY_EXPIRED if isinstance(e, SendExpired)
                              else Reason.COUNTER_UNAVAILABLE)
                    return self._report(Decision(d.sid, d.src, reject=Reject(
                        reason, None, str(e))), None)
                # a refusal still commits what it decided (a storm's DEGRADED): unanswered
        if d.new is not None:
            try:
                self.table.commit(d.base, d.new, d.keys, d.steps, detail=d.detail)
            except StoreError as e:  # a version conflict included: nothing changed
                return self._report(Decision(d.sid, d.src, reject=Reject(
                    Reason.OWNERSHIP_CONFLICT, Security.SEC_OWNERSHIP_ANOMALY, str(e))), None)
            if d.base.state is State.RECOVERING and d.new.state is State.ATTACHED:
                self._heard_from(d.sid)
        for note in d.notes:
            self.events.emit(note.type, note.reason, d.sid, note.transport, **note.fields)
        if d.pending is not None:
            self.reattach.await_response(d.sid, d.pending)
        if d.reject is not None:
            return self._report(d, counter)
        return self._sealed(d, reply, counter)

    def _heard_from(self, sid: int) -> None:
        """A proven path response is traffic from the client: without this
        the heartbeat timer saw the silence before the switch and made the
        session VOLATILE again at once (a redundant switch, counted in the
        churn bounds: issue 10 item 10)."""
        live = self.table.get(sid)
        if live is not None:
            live.last_rx_ms = self.table.timer_ms()  # the timer clock: Live.last_rx_ms

    def _counter(self, sid: int) -> int:
        live = self.table.get(sid)
        if live is None:  # not served here (a standby, or gone): no channel to count on
            raise CounterUnavailable(f"session {sid:016x} has no send channel here")
        if key_age.sending_expired(live, self.clock_ms(), self.reattach.policy):
            raise SendExpired(f"session {sid:016x}: its send epoch is past reject_after_*")
        return live.channel.next_counter()

    def _report(self, d: Decision, counter: int | None) -> list[Send]:
        r = d.reject
        self.events.emit(EventType.REATTACH_RESULT, r.reason, d.sid, d.src, detail=r.detail,
                         accepted=False)
        if r.security:
            self.events.emit(EventType.SECURITY_EVENT, r.security, d.sid, d.src, detail=r.detail)
        return self._sealed(d, d.rejection_reply(), counter)

    @staticmethod
    def _sealed(d: Decision, reply: Reply | None, counter: int | None) -> list[Send]:
        if reply is None or counter is None:
            return []
        return [(seal_control(d.keys.send, reply.type, d.sid, counter, *reply.fields),
                 reply.to)]

    def expire_challenges(self) -> None:
        """Unanswered path challenges: DEGRADED (a refused commit: nothing)."""
        for d in self.reattach.expire():
            try:
                self.table.commit(d.base, d.new, d.keys, d.steps, detail=d.detail)
            except StoreError:
                continue
