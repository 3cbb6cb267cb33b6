"""Gateway side of reattach: a client whose transport changed proves
possession of the session's keys from its new transport, the gateway checks
the new path, then switches the session's single binding.

Order (each failure: a reason code, a security event, nothing changed):
  1. session exists                             SESSION_NOT_FOUND (no state allocated)
  2. per-source rate (per-session: after 5)     RATE_LIMITED
  3. state, lifetime, transportless TTL          SESSION_EXPIRED / POLICY_DENY
     no other switch in flight                  OWNERSHIP_CONFLICT
  5. proof (header tag + HMAC under the reattach key)   AUTH_FAIL
     header counter not seen in a verified message   REPLAY_DETECTED
     (the gate does not record control counters: a copy of the header
     with another body must not consume them, issue 10 item 5)
  4. freshness: timestamp age                   FRESHNESS_INVALID
     (after the proof: a stale request of the key holder's is recorded,
     its counter raises the gate's control floor, its copies die there)
     sequence not consumed, epoch               REPLAY_DETECTED / FRESHNESS_INVALID
 5b. cluster: owned here, taken over from a dead owner, or parked until the
     live owner released it (jvpn/gateway/follower.py)  OWNERSHIP_CONFLICT
  -- from here the request is the key holder's: its sequence is consumed
  6. policy: cooldown, switches per minute      POLICY_DENY (storm: DEGRADED, again: TERMINATED)
  7. PATH_CHALLENGE to the new transport; the session is RECOVERING
  8. PATH_RESPONSE from that same transport, under the reattach key
  9. compare-and-swap in the store (RECOVERING -> ATTACHED, epoch + 1)
 10. only then the BPF binding element is replaced, and REATTACH_ACK sent.

This module validates and decides; it changes nothing but its own challenge
table and rate buckets, and calls nothing back. ``check`` runs steps 1-5 and
returns a ``Decision`` (a rejection, or what to commit and send) or, for a
proven request, ``Proven``: the caller settles ownership (5b) and hands the
record back to ``after_claim`` for steps 6-7. The caller commits a decision
through the session table (jvpn/gateway/table.py) and seals its reply
(jvpn/gateway/control.py).
"""


from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING

from jvpn import wire
from jvpn.codes import EventType, Reason, Security
from jvpn.gate import abi
from jvpn.gateway import key_age
from jvpn.gateway.decisions import Decision, Note, Pending, Proven, Reject, Reply
from jvpn.gateway.path_validation import PathValidation
from jvpn.gateway.sealing import opening_keys
from jvpn.keys import KeyRing, SessionKeys, ring_for
from jvpn.policy import Policy
from jvpn.ratelimit import KeyedBuckets, source_prefix
from jvpn.replay import ControlWindows
from jvpn.session import (
    REATTACH_STATES,
    Event,
    IllegalTransition,
    SessionRecord,
    State,
    Transport,
    apply,
)
from jvpn.store import Store, StoreError

if TYPE_CHECKING:
    from jvpn.gateway.table import Live

__all__ = ["Decision", "Note", "Pending", "Proven", "ReattachServer", "Reject", "Reply"]

# sessions whose control windows are kept (the least recently used is forgotten)
WINDOWS_KEPT = 4_096


def _challenge_lost(rec: SessionRecord, now: int) -> bool:
    """A RECOVERING record past its recovery deadline: no answer to its
    challenge can be taken any more. The gateway that holds the challenge
    moves it to DEGRADED at the deadline; one that died or was fenced (a
    cluster owner SIGKILLed or stopped mid-switch) never will, and until
    now every later request was refused as a switch in progress until the
    session expired. A request then starts a new switch; the record's
    version moved, so a late answer to the lost challenge is refused."""
    return rec.recovery_deadline_ms is not None and now >= rec.recovery_deadline_ms


class ReattachServer(PathValidation):
    def __init__(self, store: Store, policy: Policy, *, clock_ms: Callable[[], int],
                 timer_ms: Callable[[], int] | None = None,
                 rand: Callable[[int], bytes] = os.urandom,
                 per_source: KeyedBuckets | None = None,
                 per_session: KeyedBuckets | None = None,
                 live_of: Callable[[int], Live | None] = lambda _sid: None):
        """``live_of``: the session as served here (the table's), for the
        key age of what a message opened under; None: not served here.
        ``timer_ms``: the clock the rate limits refill by (the gateway's
        timer clock: a wall-clock step back emptied them for its length,
        a step forward filled them); ``clock_ms`` without one (a test's)."""
        self.store, self.policy, self.live_of = store, policy, live_of
        self.clock_ms, self.rand = clock_ms, rand
        timer = timer_ms or clock_ms
        timer_s = lambda: timer() / 1000  # noqa: E731
        self.per_source = per_source or KeyedBuckets(10, 20, timer_s)
        self.per_session = per_session or KeyedBuckets(5, 10, timer_s)
        self.pending: dict[int, Pending] = {}
        # header counters of proven control messages, per session, in one
        # window sized as the policy says: a copy of a message (a retry's
        # included) changes nothing; a retry carries a fresh counter, so it
        # still reaches the sequence checks. The gate checks counters but
        # cannot record them (issue 10 item 5): it learns the floor from here
        self.windows = ControlWindows(policy.replay_window_size, WINDOWS_KEPT)
        self._cached_keys: dict[int, KeyRing] = {}

    # ------------------------------------------------------------ requests
    def check(self, msg: bytes, src: Transport, *,
              parked: bool = False) -> Decision | Proven | None:
        """One REATTACH_REQ or PATH_RESPONSE. None: not one (nothing to do).
        ``parked``: a request this gateway proved and parked itself, run again
        now that its owner released the session (never a received message)."""
        try:
            hdr = wire.parse_header(msg)
        except wire.WireError:
            return None
        try:
            if hdr.type == abi.MSG_REATTACH_REQ:
                return self._request(hdr, msg, src, parked)
            if hdr.type == abi.MSG_PATH_RESPONSE:
                return self._path_response(hdr, msg, src)
            return None
        except Reject as r:
            return self.rejected(hdr.session_id, src, r)

    def rejected(self, sid: int, src: Transport, r: Reject) -> Decision:
        keys = self._cached_keys.get(sid) if r.authenticated else None
        if r.authenticated and keys is None:
            keys = self._keys(sid)
        return Decision(sid, src, keys, reject=r)

    def _load(self, sid: int) -> tuple[SessionRecord, KeyRing]:
        rec, keys = self._load_record(sid)
        self._cached_keys = {sid: keys}  # for a reply after the record is gone
        return rec, keys

    def _load_record(self, sid: int) -> tuple[SessionRecord, KeyRing]:
        try:
            got = self.store.get(sid)
        except StoreError as e:
            raise Reject(Reason.OWNERSHIP_CONFLICT, Security.SEC_OWNERSHIP_ANOMALY,
                         f"store unavailable: {e}") from e
        if got is None:
            raise Reject(Reason.SESSION_NOT_FOUND, None, "unknown session")
        rec, secrets = got
        try:
            # the record's own keys, or refused; a stored overlap that is over, over
            return rec, ring_for(rec, secrets).loaded(self.clock_ms())
        except ValueError as e:  # a store value that is no key ring: fail closed
            raise Reject(Reason.OWNERSHIP_CONFLICT, Security.SEC_OWNERSHIP_ANOMALY,
                         f"stored keys unreadable: {e}") from e

    def _keys(self, sid: int) -> KeyRing:
        return self._load(sid)[1]

    def _request(self, hdr: wire.Header, msg: bytes, src: Transport,
                 parked: bool = False) -> Decision | Proven:
        now = self.clock_ms()
        rec, keys = self._load(hdr.session_id)                               # 1
        if not self.per_source.allow(source_prefix(src.addr)):                # 2
            raise Reject(Reason.RATE_LIMITED, Security.SEC_ABUSE_CONTROL_PLANE, "reattach rate")
        self._check_alive(rec, now)                                          # 3
        seq, ts_ms, client_nonce, epoch = self._fields(msg, abi.MSG_REATTACH_REQ)
        self._verify(hdr, msg, rec, keys)                                    # 5
        if not parked:  # a parked request's counter was recorded when we parked it
            self._fresh(hdr)
        if abs(now - ts_ms) > self.policy.reattach_proof_max_age_ms:          # 4
            # the key holder's, but stale (a captured copy, or a skewed
            # clock): recorded, so the gate's control floor rises and its
            # copies die there instead of each costing a store read here
            self.windows.mark(hdr.session_id, hdr.counter)
            raise Reject(Reason.FRESHNESS_INVALID, Security.SEC_REPLAY_ATTEMPT,
                         "timestamp too old/new")
        if not self.per_session.allow(hdr.session_id):  # 2, spent only by proven requests
            raise Reject(Reason.RATE_LIMITED, Security.SEC_ABUSE_CONTROL_PLANE, "reattach rate")
        # Recorded now, before the sequence checks: whatever follows answers
        # it (acted on), and a copy of it, from anywhere, dies as a replay
        # here instead of passing for a retry or a relay.
        self.windows.mark(hdr.session_id, hdr.counter)
        # From here the request is the key holder's (a fresh header counter
        # under its keys): every refusal is answered, sealed, so it converges.
        req = Proven(rec, keys, msg, src, seq, client_nonce, now)
        if seq < rec.reattach_seq:  # told, so that it moves on to a new sequence
            raise self._told(req, Reason.REPLAY_DETECTED, Security.SEC_REPLAY_ATTEMPT,
                             f"sequence {seq} used")
        pending = self.pending.get(rec.session_id)
        if pending is not None:
            return self._while_pending(req, pending)
        if rec.state is State.RECOVERING and not _challenge_lost(rec, now):
            raise self._told(req, Reason.OWNERSHIP_CONFLICT, Security.SEC_OWNERSHIP_ANOMALY,
                             "another switch is in progress")
        if seq == rec.reattach_seq:
            return self._retry_of_consumed(req, epoch)
        if epoch != rec.epoch:
            # refused after 5b (after_claim): only the owner can seal the
            # refusal that tells a key holder who missed an ACK the epoch
            return replace(req, stale_epoch=epoch)
        return req                                                           # 5b: the caller

    @staticmethod
    def _told(req: Proven, reason: Reason, security: Security | None, detail: str) -> Reject:
        """A refusal of a proven request: answered, sealed, to its source."""
        return Reject(reason, security, detail, authenticated=True, seq=req.seq)

    def _while_pending(self, req: Proven, p: Pending) -> Decision:
        """A proven request while a challenge is out. The same sequence from
        the challenged transport: the challenge (or its answer) was lost,
        send it again. The same sequence from another transport: the key
        holder's own retry arrives from elsewhere, so the challenged
        transport got its request by a relay (issue 10 item 6): abort,
        fail closed. Another sequence: a second uplink, the loser is told
        OWNERSHIP_CONFLICT (seed 4.4: explicit rejection on conflict)."""
        sid, rec = req.rec.session_id, req.rec
        if req.seq == p.seq and req.src == p.candidate:
            return Decision(sid, req.src, req.keys, reply=Reply(
                abi.MSG_PATH_CHALLENGE, (p.server_nonce, p.client_nonce), p.candidate))
        if req.seq != p.seq:
            raise self._told(req, Reason.OWNERSHIP_CONFLICT, Security.SEC_OWNERSHIP_ANOMALY,
                             f"another switch is in progress (to {p.candidate})")
        del self.pending[sid]
        detail = (f"relayed path suspected: request {p.seq} came from {p.candidate} and "
                  f"again from {req.src}; switch aborted, binding kept")
        try:
            new, tr = apply(rec, Event.REATTACH_INVALID, req.now, candidate=None)
        except IllegalTransition as e:
            raise self._told(req, Reason.OWNERSHIP_CONFLICT, Security.SEC_OWNERSHIP_ANOMALY,
                             str(e)) from None
        return Decision(sid, req.src, req.keys, rec, new, ((new, tr),), detail=detail,
                        reject=self._told(req, Reason.OWNERSHIP_CONFLICT,
                                          Security.SEC_SESSION_FIXATION_ATTEMPT, detail))

    def _retry_of_consumed(self, req: Proven, epoch: int) -> Decision | Proven:
        """The key holder sends a consumed sequence again (its answer was
        lost). If that request's switch happened (the epoch moved past the
        one it names) and the binding is where it came from, the ACK is sent
        again, nothing changes (item 10a). If the binding is elsewhere, the
        switch went to a transport the key holder is not on: validate where
        it is (item 6, RFC 9000 9.3.3's move back). Otherwise the sequence
        is spent: the client is told to use a new one."""
        rec = req.rec
        if rec.switch_seq == req.seq and epoch < rec.epoch:
            if req.src == rec.binding:
                return Decision(rec.session_id, req.src, req.keys, notes=(Note(
                    EventType.REATTACH_RESULT, Reason.REATTACH_ACCEPT, req.src,
                    dict(version=rec.version, accepted=True, detail="ACK sent again")),),
                    reply=Reply(abi.MSG_REATTACH_ACK, (req.seq, rec.epoch, rec.version),
                                req.src))
            return Proven(rec, req.keys, req.msg, req.src, req.seq, req.client_nonce, req.now,
                          revalidate=True)
        raise self._told(req, Reason.REPLAY_DETECTED, Security.SEC_REPLAY_ATTEMPT,
                         f"sequence {req.seq} used: a new request needs a new one")

    def recorded(self, sid: int, counter: int) -> bool:
        """Whether ``counter`` is in the session's control window: a message
        under it was verified and acted on (read only)."""
        return not self.windows.fresh(sid, counter)

    def _fresh(self, hdr: wire.Header) -> None:
        """The header counter of a verified message, not yet seen here (it is
        recorded once the message is acted on: a proven request that passed
        its bucket (every one is answered), the path response that matched)."""
        if not self.windows.fresh(hdr.session_id, hdr.counter):
            raise Reject(Reason.REPLAY_DETECTED, Security.SEC_REPLAY_ATTEMPT,
                         f"header counter {hdr.counter} used")

    def _check_alive(self, rec: SessionRecord, now: int) -> None:
        if rec.state is State.TERMINATED:
            raise Reject(self._ended_by(rec), None, "terminated")
        if rec.state not in REATTACH_STATES:
            raise Reject(Reason.POLICY_DENY, None, f"invalid_state_for_reattach {rec.state.name}")
        if now - rec.created_ms > self.policy.max_lifetime_ms:
            raise Reject(Reason.SESSION_EXPIRED, None, "session lifetime exceeded")
        lost = rec.transport_lost_ms
        if lost is not None and now - lost > self.policy.transport_lost_ttl_ms:
            raise Reject(Reason.SESSION_EXPIRED, None, "transport_ttl_exceeded")

    def _ended_by(self, rec: SessionRecord) -> Reason:
        """Why a TERMINATED record ended, as far as it tells: SESSION_EXPIRED
        only if a TTL had run out when it ended (last_change_ms); anything
        else (policy, operator, revocation, the client) is not an expiry and
        must not read as a renewable one (review R3 #2). The record keeps no
        cause: an unclear case is the non-renewable one."""
        at, lost = rec.last_change_ms, rec.transport_lost_ms
        if at - rec.created_ms >= self.policy.max_lifetime_ms or (
                lost is not None and at - lost >= self.policy.transport_lost_ttl_ms):
            return Reason.SESSION_EXPIRED
        return Reason.POLICY_TERMINATION

    @staticmethod
    def _fields(msg: bytes, t: int) -> tuple:
        fmt = wire.REATTACH_REQ if t == abi.MSG_REATTACH_REQ else wire.PATH_RESPONSE
        if len(msg) != abi.HDR_LEN + fmt.size + wire.MAC_LEN:
            raise Reject(Reason.AUTH_FAIL, Security.SEC_SESSION_FIXATION_ATTEMPT, "bad length")
        return fmt.unpack_from(msg, abi.HDR_LEN)

    def _verify(self, hdr: wire.Header, msg: bytes, rec: SessionRecord, ring: KeyRing) -> None:
        """Under the live epoch the header's key phase names (a rekey's
        overlap: either; docs/protocol.md "Rekey", interactions), and that
        epoch not past reject_after_* at use (``_expired``)."""
        keys = opening_keys(ring, hdr)
        if keys is None:
            raise Reject(Reason.AUTH_FAIL, Security.SEC_SESSION_FIXATION_ATTEMPT,
                         "no live key epoch of that phase")
        if not hdr.tag_valid(keys.hdr_c2s):
            raise Reject(Reason.AUTH_FAIL, Security.SEC_SESSION_FIXATION_ATTEMPT, "header tag")
        try:
            wire.open_control(msg, keys.reattach)
        except wire.WireError as e:
            raise Reject(Reason.AUTH_FAIL, Security.SEC_SESSION_FIXATION_ATTEMPT,
                         str(e)) from None
        if self._expired(rec, ring, keys):
            raise Reject(Reason.KEY_EXPIRED, None, f"key epoch {keys.epoch} past reject_after_*")

    def _expired(self, rec: SessionRecord, ring: KeyRing, keys: SessionKeys) -> bool:
        """Expired keys prove nothing (review k16r3): refused unanswered
        (nothing sealed under them, no state moved, no counter recorded),
        by the data path's measure where the session is served here (a
        DEGRADED session's way back is the rekey, not a reattach)."""
        now, live = self.clock_ms(), self.live_of(rec.session_id)
        if live is not None and keys.epoch in (live.keys.current.epoch, live.keys.previous
                                               and live.keys.previous.epoch):
            return key_age.opened_expired(live, keys, now, self.policy)
        return key_age.stored_expired(rec, ring, keys, now, self.policy)

    # ------------------------------------------------------------ after proof
    def after_claim(self, p: Proven, rec: SessionRecord) -> Decision:
        """Steps 6-7 for a proven request, on the record ownership settled
        (``rec``): a denial (its sequence consumed) or the path challenge."""
        now, src, keys, sid = p.now, p.src, p.keys, rec.session_id
        if p.stale_epoch is not None and p.stale_epoch != rec.epoch:
            # told the current epoch: a key holder that missed the ACK of a
            # switch (it had moved on to a new request) names it from now on
            stale = self._told(p, Reason.FRESHNESS_INVALID, Security.SEC_REPLAY_ATTEMPT,
                               f"epoch {p.stale_epoch}")
            stale.epoch = rec.epoch
            return Decision(sid, src, keys, reject=stale)
        recent = tuple(t for t in rec.switches_ms if now - t < 60_000)
        consumed = rec.with_(reattach_seq=p.seq, switches_ms=recent)
        last = max(rec.switches_ms, default=None)
        cooling = last is not None and now - last < self.policy.switch_cooldown_ms
        if cooling and not p.revalidate:  # a move back undoes a switch; it is not churn
            return Decision(sid, src, keys, rec, consumed.with_(version=rec.version + 1),
                            reject=Reject(Reason.POLICY_DENY, Security.SEC_ABUSE_CONTROL_PLANE,
                                          "cooldown_active", authenticated=True, seq=p.seq))
        if len(recent) >= self.policy.max_switches_per_min:
            return self._switch_storm(p, rec, consumed)
        steps = self._to_recovering(consumed, src, now)
        new = steps[-1][0]
        nonce = self.rand(wire.NONCE_LEN)
        deadline = new.recovery_deadline_ms
        notes = (Note(EventType.REATTACH_ATTEMPT, Reason.RECOVERY_START, src,
                      dict(version=new.version, candidate_transport=str(src),
                           recovery_deadline_ms=deadline)),)
        if p.revalidate:
            notes = (Note(EventType.SECURITY_EVENT, Security.SEC_SESSION_FIXATION_ATTEMPT, src,
                          dict(detail=f"request {p.seq} switched the session to {rec.binding}, "
                                      f"its key holder retries it from {src}: relayed path "
                                      f"response suspected; validating {src}")), *notes)
        return Decision(sid, src, keys, rec, new, tuple(steps), notes=notes,
                        pending=Pending(src, nonce, p.client_nonce, p.seq, new.version,
                                        deadline),
                        reply=Reply(abi.MSG_PATH_CHALLENGE, (nonce, p.client_nonce), src))

    def await_response(self, sid: int, pending: Pending) -> None:
        """The challenge of a committed decision went out: its answer is due."""
        self.pending[sid] = pending

    def _to_recovering(self, rec: SessionRecord, src: Transport, now: int) -> list:
        steps = []
        cur = rec
        if cur.state is State.RECOVERING:  # its challenge was lost (_challenge_lost)
            cur, tr = apply(cur, Event.REATTACH_INVALID, now, candidate=None)
            steps.append((cur, tr))
        if cur.state is State.ATTACHED:
            cur, tr = apply(cur, Event.INSTABILITY_DETECTED, now,
                            transport_lost_ms=cur.transport_lost_ms or now)
            steps.append((cur, tr))
        cur, tr = apply(cur, Event.SWITCH_INITIATED, now, candidate=src,
                        transport_lost_ms=cur.transport_lost_ms or now,
                        recovery_deadline_ms=now + self.policy.recovery_window_ms)
        steps.append((cur, tr))
        return steps

    def _switch_storm(self, p: Proven, rec: SessionRecord, consumed: SessionRecord) -> Decision:
        """Bounds exceeded: DEGRADED; exceeded again while DEGRADED: TERMINATED,
        and the key holder is told plainly that the session is over."""
        if rec.state is State.DEGRADED:
            steps = [apply(consumed, Event.POLICY_TERMINATE, p.now)]
        else:
            steps = self._to_recovering(consumed, p.src, p.now)
            steps.append(apply(steps[-1][0], Event.REATTACH_INVALID, p.now, candidate=None))
        new = steps[-1][0]
        if new.state is State.TERMINATED:  # told where the key holder is now, not renewable
            reject = Reject(Reason.POLICY_TERMINATION, Security.SEC_ABUSE_CONTROL_PLANE,
                            "RECOVERY_BOUNDS_EXCEEDED: terminated", authenticated=True,
                            seq=p.seq, terminate=Reason.POLICY_TERMINATION)
        else:
            reject = Reject(Reason.POLICY_DENY, Security.SEC_ABUSE_CONTROL_PLANE,
                            "switch_rate_limited", authenticated=True, seq=p.seq)
        return Decision(rec.session_id, p.src, p.keys, rec, new, tuple(steps),
                        detail=Reason.RECOVERY_BOUNDS_EXCEEDED, reject=reject)
