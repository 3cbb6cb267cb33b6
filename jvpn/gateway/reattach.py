"""Gateway side of reattach: a client whose transport changed proves
possession of the session's keys from its new transport, the gateway checks
the new path, then switches the session's single binding.

Order (each failure: a reason code, a security event, nothing changed):
  1. session exists                             SESSION_NOT_FOUND (no state allocated)
  2. per-source and per-session rate            RATE_LIMITED
  3. state, lifetime, transportless TTL          SESSION_EXPIRED / POLICY_DENY
     no other switch in flight                  OWNERSHIP_CONFLICT
  4. freshness: timestamp age, epoch            FRESHNESS_INVALID
     sequence not consumed                      REPLAY_DETECTED
  5. proof (header tag + HMAC under the reattach key)   AUTH_FAIL
 5b. cluster: owned here, taken over from a dead owner, or parked until the
     live owner released it (jvpn/ownership.py)  OWNERSHIP_CONFLICT
  -- from here the request is the key holder's: its sequence is consumed
  6. policy: cooldown, switches per minute      POLICY_DENY (storm: DEGRADED, again: TERMINATED)
  7. PATH_CHALLENGE to the new transport; the session is RECOVERING
  8. PATH_RESPONSE from that same transport, under the reattach key
  9. compare-and-swap in the store (RECOVERING -> ATTACHED, epoch + 1)
 10. only then the BPF binding element is replaced, and REATTACH_ACK sent.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

from jvpn import wire
from jvpn.events import EventLog
from jvpn.gate import abi
from jvpn.keys import SessionKeys
from jvpn.policy import Policy
from jvpn.ratelimit import KeyedBuckets, source_prefix
from jvpn.session import (
    REATTACH_STATES,
    Event,
    IllegalTransition,
    SessionRecord,
    State,
    Transport,
    apply,
)
from jvpn.store import Store, StoreError, VersionConflict

Send = tuple[bytes, Transport]
CHALLENGE_TIMEOUT_MS = 3_000


class Reject(Exception):
    def __init__(self, reason: str, security: str | None = None, detail: str = "",
                 authenticated: bool = False, seq: int = 0):
        super().__init__(f"{reason}: {detail}")
        self.reason, self.security, self.detail = reason, security, detail
        self.authenticated, self.seq = authenticated, seq


@dataclass
class Pending:
    candidate: Transport
    server_nonce: bytes
    client_nonce: bytes
    seq: int
    version: int  # the record's version in RECOVERING
    deadline_ms: int


class ReattachServer:
    def __init__(self, store: Store, policy: Policy, events: EventLog, *,
                 project: Callable[[SessionRecord, SessionKeys], None],
                 next_counter: Callable[[int], int],
                 clock_ms: Callable[[], int],
                 rand: Callable[[int], bytes] = os.urandom,
                 per_source: KeyedBuckets | None = None,
                 per_session: KeyedBuckets | None = None,
                 claim: Callable[..., SessionRecord | None] | None = None):
        self.store, self.policy, self.events = store, policy, events
        self.project, self.next_counter = project, next_counter
        # cluster ownership (jvpn/daemon.py Gateway._claim): the record to go
        # on with, None to park the request, or a Reject
        self.claim = claim or (lambda rec, _keys, _msg, _src: rec)
        self.clock_ms, self.rand = clock_ms, rand
        clock_s = lambda: self.clock_ms() / 1000  # noqa: E731
        self.per_source = per_source or KeyedBuckets(10, 20, clock_s)
        self.per_session = per_session or KeyedBuckets(5, 10, clock_s)
        self.pending: dict[int, Pending] = {}
        self._cached_keys: dict[int, SessionKeys] = {}

    # ------------------------------------------------------------ requests
    def handle(self, msg: bytes, src: Transport) -> list[Send]:
        """One REATTACH_REQ or PATH_RESPONSE; returns what to send."""
        try:
            hdr = wire.parse_header(msg)
        except wire.WireError:
            return []
        try:
            if hdr.type == abi.MSG_REATTACH_REQ:
                return self._request(hdr, msg, src)
            if hdr.type == abi.MSG_PATH_RESPONSE:
                return self._path_response(hdr, msg, src)
            return []
        except Reject as r:
            return self._rejected(hdr, src, r)

    def _rejected(self, hdr: wire.Header, src: Transport, r: Reject) -> list[Send]:
        self.events.emit("ReattachResult", r.reason, hdr.session_id, src, detail=r.detail,
                         accepted=False)
        if r.security:
            self.events.emit("SecurityEvent", r.security, hdr.session_id, src, detail=r.detail)
        if not r.authenticated:
            return []  # never answer what we could not authenticate (no reflection)
        keys = self._cached_keys.get(hdr.session_id) or self._keys(hdr.session_id)
        reply = wire.seal_control(
            wire.Header(type=abi.MSG_REATTACH_REJECT, session_id=hdr.session_id,
                        counter=self.next_counter(hdr.session_id)),
            keys.hdr_s2c, keys.reattach, r.seq, wire.REJECT_REASONS.index(r.reason))
        return [(reply, src)]

    def _load(self, sid: int) -> tuple[SessionRecord, SessionKeys]:
        rec, keys = self._load_record(sid)
        self._cached_keys = {sid: keys}  # for a reply after the record is gone
        return rec, keys

    def _load_record(self, sid: int) -> tuple[SessionRecord, SessionKeys]:
        try:
            got = self.store.get(sid)
        except StoreError as e:
            raise Reject("OWNERSHIP_CONFLICT", "SEC_OWNERSHIP_ANOMALY",
                         f"store unavailable: {e}") from e
        if got is None:
            raise Reject("SESSION_NOT_FOUND", None, "unknown session")
        rec, secrets = got
        return rec, SessionKeys.unpack(secrets)

    def _keys(self, sid: int) -> SessionKeys:
        return self._load(sid)[1]

    def _request(self, hdr: wire.Header, msg: bytes, src: Transport) -> list[Send]:
        now = self.clock_ms()
        rec, keys = self._load(hdr.session_id)                               # 1
        if not (self.per_source.allow(source_prefix(src.addr))
                and self.per_session.allow(hdr.session_id)):                  # 2
            raise Reject("RATE_LIMITED", "SEC_ABUSE_CONTROL_PLANE", "reattach rate")
        self._check_alive(rec, now)                                          # 3
        if hdr.session_id in self.pending or rec.state is State.RECOVERING:
            raise Reject("OWNERSHIP_CONFLICT", "SEC_OWNERSHIP_ANOMALY",
                         "another switch is in progress")
        seq, ts_ms, client_nonce, epoch = self._fields(msg, abi.MSG_REATTACH_REQ)
        if abs(now - ts_ms) > self.policy.reattach_proof_max_age_ms:          # 4
            raise Reject("FRESHNESS_INVALID", "SEC_REPLAY_ATTEMPT", "timestamp too old/new")
        if seq <= rec.reattach_seq:
            raise Reject("REPLAY_DETECTED", "SEC_REPLAY_ATTEMPT", f"sequence {seq} used")
        if epoch != rec.epoch:
            raise Reject("FRESHNESS_INVALID", "SEC_REPLAY_ATTEMPT", f"epoch {epoch}")
        self._verify(hdr, msg, keys)                                         # 5
        rec = self.claim(rec, keys, msg, src)                                # 5b
        if rec is None:
            return []  # parked until the owning gateway releases the session
        return self._authenticated(rec, keys, src, seq, client_nonce, now)

    def _check_alive(self, rec: SessionRecord, now: int) -> None:
        if rec.state is State.TERMINATED:
            raise Reject("SESSION_EXPIRED", None, "terminated")
        if rec.state not in REATTACH_STATES:
            raise Reject("POLICY_DENY", None, f"invalid_state_for_reattach {rec.state.name}")
        if now - rec.created_ms > self.policy.max_lifetime_ms:
            raise Reject("SESSION_EXPIRED", None, "session lifetime exceeded")
        lost = rec.transport_lost_ms
        if lost is not None and now - lost > self.policy.transport_lost_ttl_ms:
            raise Reject("SESSION_EXPIRED", None, "transport_ttl_exceeded")

    @staticmethod
    def _fields(msg: bytes, t: int) -> tuple:
        fmt = wire.REATTACH_REQ if t == abi.MSG_REATTACH_REQ else wire.PATH_RESPONSE
        if len(msg) != abi.HDR_LEN + fmt.size + wire.MAC_LEN:
            raise Reject("AUTH_FAIL", "SEC_SESSION_FIXATION_ATTEMPT", "bad length")
        return fmt.unpack_from(msg, abi.HDR_LEN)

    @staticmethod
    def _verify(hdr: wire.Header, msg: bytes, keys: SessionKeys) -> None:
        if not hdr.tag_valid(keys.hdr_c2s):
            raise Reject("AUTH_FAIL", "SEC_SESSION_FIXATION_ATTEMPT", "header tag")
        try:
            wire.open_control(msg, keys.reattach)
        except wire.WireError as e:
            raise Reject("AUTH_FAIL", "SEC_SESSION_FIXATION_ATTEMPT", str(e)) from None

    # ------------------------------------------------------------ after proof
    def _authenticated(self, rec: SessionRecord, keys: SessionKeys, src: Transport, seq: int,
                       client_nonce: bytes, now: int) -> list[Send]:
        recent = tuple(t for t in rec.switches_ms if now - t < 60_000)
        consumed = rec.with_(reattach_seq=seq, switches_ms=recent)
        last = max(rec.switches_ms, default=None)
        if last is not None and now - last < self.policy.switch_cooldown_ms:
            self._commit(rec, consumed.with_(version=rec.version + 1), keys, [])
            raise Reject("POLICY_DENY", "SEC_ABUSE_CONTROL_PLANE", "cooldown_active",
                         authenticated=True, seq=seq)
        if len(recent) >= self.policy.max_switches_per_min:
            terminated = self._switch_storm(rec, consumed, keys, src, now)
            if terminated:  # tell the key holder plainly: this session is over
                raise Reject("SESSION_EXPIRED", "SEC_ABUSE_CONTROL_PLANE",
                             "RECOVERY_BOUNDS_EXCEEDED: terminated", authenticated=True, seq=seq)
            raise Reject("POLICY_DENY", "SEC_ABUSE_CONTROL_PLANE", "switch_rate_limited",
                         authenticated=True, seq=seq)
        steps = self._to_recovering(consumed, src, now)
        new = steps[-1][0]
        self._commit(rec, new, keys, steps)
        nonce = self.rand(wire.NONCE_LEN)
        self.pending[rec.session_id] = Pending(src, nonce, client_nonce, seq, new.version,
                                               now + CHALLENGE_TIMEOUT_MS)
        self.events.emit("ReattachAttempt", "RECOVERY_START", rec.session_id, src,
                         version=new.version, candidate_transport=str(src),
                         recovery_deadline_ms=now + CHALLENGE_TIMEOUT_MS)
        challenge = wire.seal_control(
            wire.Header(type=abi.MSG_PATH_CHALLENGE, session_id=rec.session_id,
                        counter=self.next_counter(rec.session_id)),
            keys.hdr_s2c, keys.reattach, nonce, client_nonce)
        return [(challenge, src)]

    def _to_recovering(self, rec: SessionRecord, src: Transport, now: int) -> list:
        steps = []
        cur = rec
        if cur.state is State.ATTACHED:
            cur, tr = apply(cur, Event.INSTABILITY_DETECTED, now,
                            transport_lost_ms=cur.transport_lost_ms or now)
            steps.append((cur, tr))
        cur, tr = apply(cur, Event.SWITCH_INITIATED, now, candidate=src,
                        transport_lost_ms=cur.transport_lost_ms or now)
        steps.append((cur, tr))
        return steps

    def _switch_storm(self, rec: SessionRecord, consumed: SessionRecord, keys: SessionKeys,
                      src: Transport, now: int) -> bool:
        """Bounds exceeded: DEGRADED; exceeded again while DEGRADED: TERMINATED
        (returns True)."""
        if rec.state is State.DEGRADED:
            steps = [apply(consumed, Event.OPERATOR_TERMINATE, now)]
        else:
            steps = self._to_recovering(consumed, src, now)
            steps.append(apply(steps[-1][0], Event.REATTACH_INVALID, now, candidate=None))
        self._commit(rec, steps[-1][0], keys, steps, detail="RECOVERY_BOUNDS_EXCEEDED")
        return steps[-1][0].state is State.TERMINATED

    def _commit(self, old: SessionRecord, new: SessionRecord, keys: SessionKeys,
                steps: list, detail: str = "") -> None:
        """Store first (compare-and-swap), then the BPF element, then events."""
        try:
            self.store.cas(old.session_id, old.version, new)
        except VersionConflict as e:
            raise Reject("OWNERSHIP_CONFLICT", "SEC_OWNERSHIP_ANOMALY", str(e)) from None
        except StoreError as e:
            raise Reject("OWNERSHIP_CONFLICT", "SEC_OWNERSHIP_ANOMALY", str(e)) from None
        self.project(new, keys)
        for rec, tr in steps:
            self.events.emit("SessionStateChange", tr.reason_code, rec.session_id,
                             rec.binding, version=tr.version, previous_state=tr.previous.name,
                             new_state=tr.new.name, detail=detail)
            if tr.new is State.TERMINATED:
                self.events.emit("SessionTerminated", tr.reason_code, rec.session_id,
                                 version=tr.version, detail=detail)

    # ------------------------------------------------------------ path response
    def _path_response(self, hdr: wire.Header, msg: bytes, src: Transport) -> list[Send]:
        rec, keys = self._load(hdr.session_id)
        server_nonce, client_nonce = self._fields(msg, abi.MSG_PATH_RESPONSE)
        self._verify(hdr, msg, keys)
        p = self.pending.get(hdr.session_id)
        if p is None or server_nonce != p.server_nonce or client_nonce != p.client_nonce:
            raise Reject("REPLAY_DETECTED", "SEC_REPLAY_ATTEMPT", "no such challenge")
        if src != p.candidate:
            raise Reject("AUTH_FAIL", "SEC_SESSION_FIXATION_ATTEMPT",
                         f"answered from {src}, challenged {p.candidate}")
        now = self.clock_ms()
        del self.pending[hdr.session_id]
        if rec.version != p.version:
            raise Reject("OWNERSHIP_CONFLICT", "SEC_OWNERSHIP_ANOMALY", "record moved",
                         authenticated=True, seq=p.seq)
        try:
            new, tr = apply(rec, Event.REATTACH_VALID, now, binding=p.candidate, candidate=None,
                            transport_lost_ms=None, epoch=rec.epoch + 1,
                            switches_ms=(*rec.switches_ms, now))
        except IllegalTransition as e:
            raise Reject("OWNERSHIP_CONFLICT", "SEC_OWNERSHIP_ANOMALY", str(e)) from None
        self._commit(rec, new, keys, [(new, tr)])
        self.events.emit("TransportSwitch", "TRANSPORT_SWITCH_OK", rec.session_id,
                         p.candidate, version=new.version,
                         previous_transport=str(rec.binding), new_transport=str(p.candidate),
                         candidate_count=1, explicit=True)
        self.events.emit("ReattachResult", "REATTACH_ACCEPT", rec.session_id, p.candidate,
                         version=new.version, accepted=True)
        ack = wire.seal_control(
            wire.Header(type=abi.MSG_REATTACH_ACK, session_id=rec.session_id,
                        counter=self.next_counter(rec.session_id)),
            keys.hdr_s2c, keys.reattach, p.seq, new.epoch, new.version)
        return [(ack, p.candidate)]

    # ------------------------------------------------------------ timers
    def expire(self) -> None:
        """Challenges not answered in time: RECOVERING -> DEGRADED."""
        now = self.clock_ms()
        for sid, p in list(self.pending.items()):
            if now < p.deadline_ms:
                continue
            del self.pending[sid]
            try:
                rec, keys = self._load(sid)
                if rec.version != p.version:
                    continue
                new, tr = apply(rec, Event.REATTACH_INVALID, now, candidate=None)
                self._commit(rec, new, keys, [(new, tr)], detail="path validation timed out")
            except (Reject, IllegalTransition):
                continue
