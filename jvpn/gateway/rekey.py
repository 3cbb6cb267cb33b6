"""Gateway side of the rekey (issue 13, docs/protocol.md "Rekey", steps 2
and 3): validates a client's REKEY_INIT and decides what to commit and
answer. It changes nothing but its own tables (answers to re-send, accepted
attempts per epoch) and the session's control window, and calls nothing
back: the control path carries the decision out through the session table
(jvpn/gateway/rekey_control.py).

Checks, in the spec's order, each before anything changes:
  1. the session is served here                   OWNERSHIP_CONFLICT (unanswered)
     and not quarantined by a refused revocation  POLICY_DENY (review R5 #4)
  2. the message opens under a live epoch         (unauthentic: nothing, no answer)
  3. its header counter is fresh                  REPLAY_DETECTED (unanswered)
  -- from here the request is the key holder's; refusals are answered, sealed
     (to its source, as a reattach's)
  3a. before anything else (review R4 #1): a committed, unconfirmed epoch's
      own request again (the stored answer's ephemeral, a counter above the
      stored key_c2s_base: the committed request itself is at or below it,
      review R5 #5) gets the stored answer (the ring's, across restarts),
      from any source, in any state; a request at or below key_c2s_base from
      another source than the binding: REPLAY_DETECTED (unanswered)
  3b. not under the previous epoch once the new one is confirmed: the
      client's own late request REPLAY_DETECTED, else a second holder
      (SecurityKeyCompromiseSuspected)            REPLAY_DETECTED
  4. it came from the bound transport             POLICY_DENY
  5. ATTACHED or VOLATILE, or DEGRADED with expired keys   POLICY_DENY
  -- a committed, unconfirmed epoch (review R1 #2): anything else is
     refused, never a replacement: an older attempt REPLAY_DETECTED, a
     second ephemeral REPLAY_DETECTED + SecurityKeyCompromiseSuspected
  6. the switch epoch is the record's             FRESHNESS_INVALID
  7. new_epoch is the next one                    lower: REPLAY_DETECTED, higher:
                                                  FRESHNESS_INVALID
  8. the gateway asked (FLAG_REKEY's predicate, or expired keys)   POLICY_DENY
  9. fewer than max_rekey_attempts client ephemerals for the epoch   RATE_LIMITED
     (a re-send counts once; a commit the store did not apply is taken
     back; DEGRADED by expiry starts afresh; review R5 #1)
  (before 6) expired keys on a session not yet DEGRADED by them: KEY_EXPIRED
     if the policy terminates, else POLICY_DENY (review R4 #6)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from jvpn import wire
from jvpn.codes import Reason, Security
from jvpn.gate import abi
from jvpn.gateway import key_age
from jvpn.gateway.sealing import open_client
from jvpn.keys import (
    Ephemeral,
    KeyRing,
    RekeyBinding,
    RekeyError,
    SessionKeys,
    derive_rekey,
    gateway_rekey_secret,
    rekey_confirm,
)
from jvpn.rekey_answer import RekeyAnswer
from jvpn.session import Event, SessionRecord, State, Transport, apply

REKEY_STATES = (State.ATTACHED, State.VOLATILE)


@dataclass(frozen=True)
class Refusal:
    reason: Reason
    detail: str
    answered: bool  # the request was the key holder's: a sealed REKEY_REJECT
    security: Security | None = None
    compromise: bool = False  # SecurityKeyCompromiseSuspected


@dataclass(frozen=True)
class RekeyDecision:
    """What validation concluded: a ``refusal``, ``resend`` (the stored
    RESP fields), or ``ring`` (commit ``new`` over ``base`` with it, then
    send ``resp``)."""

    sid: int
    src: Transport
    asked: int = 0  # the new_epoch the request named
    counter: int = 0  # its header counter
    refusal: Refusal | None = None
    resend: tuple | None = None
    base: SessionRecord | None = None
    new: SessionRecord | None = None
    steps: tuple = ()
    ring: KeyRing | None = None
    resp: tuple | None = None
    client_ephemeral: bytes = b""


class RekeyServer:
    def __init__(self, reattach, *, clock_ms: Callable[[], int],
                 statics: Callable[[str], tuple[bytes, bytes] | None],
                 ephemeral: Callable[[], Ephemeral] = Ephemeral):
        """``reattach``: the ReattachServer whose control windows (one per
        session, shared by every control message) and policy this uses.
        ``statics``: for a record's ``peer_key``, the gateway's static
        private key and the client's static public key a rekey is bound to
        (None: not a configured peer; jvpn/gateway/admission.py)."""
        self.reattach, self.clock_ms, self.ephemeral = reattach, clock_ms, ephemeral
        self.statics = statics
        # sid -> ((base epoch, DEGRADED), the client ephemerals counted for
        # its next epoch): a re-send of one counts once, a commit the store
        # did not apply is taken back, and DEGRADED by expiry starts afresh
        # (review R5 #1); a committed one's re-send gets the ring's answer
        self.attempts: dict[int, tuple[tuple[int, bool], set[bytes]]] = {}
        # sid -> ((base epoch, version, client ephemeral), (gateway ephemeral,
        # shared secret)): the last derivation, until its commit lands, so a
        # re-send during a store outage costs no second X25519
        self.derived: dict[int, tuple[tuple, tuple]] = {}

    @property
    def policy(self):
        return self.reattach.policy

    def check(self, msg: bytes, src: Transport, live) -> RekeyDecision | None:
        """One REKEY_INIT for ``live`` (None: not served here). None: not
        one, or not authentic: nothing is done and nothing answers. A
        request sealed under an unconfirmed new epoch is the confirmation:
        the caller confirms it first (jvpn/gateway/sealing.py ``confirms``)."""
        try:
            hdr = wire.parse_header(msg)
        except wire.WireError:
            return None
        if hdr.type != abi.MSG_REKEY_INIT:
            return None
        if live is None:
            return RekeyDecision(hdr.session_id, src, refusal=Refusal(
                Reason.OWNERSHIP_CONFLICT, "not served by this gateway", answered=False))
        opened = open_client(live.keys, msg)
        if opened is None or opened[0].session_id != live.record.session_id:
            return None
        hdr, (new_epoch, switch_epoch, client_eph), keys = opened
        d = RekeyDecision(hdr.session_id, src, new_epoch, hdr.counter)
        windows = self.reattach.windows
        if not windows.fresh(hdr.session_id, hdr.counter):
            return _refused(d, Reason.REPLAY_DETECTED, f"header counter {hdr.counter} used",
                            answered=False, security=Security.SEC_REPLAY_ATTEMPT)
        windows.mark(hdr.session_id, hdr.counter)  # acted on from here: a copy dies above
        return self._validate(d, live, keys, switch_epoch, client_eph)

    def _validate(self, d: RekeyDecision, live, keys: SessionKeys, switch_epoch: int,
                  client_eph: bytes) -> RekeyDecision:
        rec, ring, now = live.record, live.keys, self.clock_ms()
        if live.quarantined and not live.quarantine_lifts:
            # a revocation the store refused (review R5 #4): the session
            # ends, it is never given new keys, not even the stored answer
            return _refused(d, Reason.POLICY_DENY, "quarantined: awaits its revocation")
        if d.counter <= rec.key_c2s_base and (d.src != rec.binding
                                              or _committed(ring, client_eph)):
            # from before the last commit, from elsewhere, or the committed
            # request itself: a captured copy replayed where no window
            # remembers it (a restart; review R5 #5): no reflection to a
            # spoofed source, and no REJECT that ends the client's attempt
            return _refused(d, Reason.REPLAY_DETECTED, f"header counter {d.counter} is from "
                            "before the last rekey", answered=False,
                            security=Security.SEC_REPLAY_ATTEMPT)
        if _resent(d, ring, rec, client_eph):
            # before the binding and state checks (review R4 #1): a refusal
            # would make the client drop the ephemeral the committed epoch
            # needs; answering changes nothing, and goes where it came from
            return _with(d, resend=ring.answer.resp)
        if ring.confirmed and ring.previous is not None and keys is ring.previous:
            return self._late(d, rec, ring, client_eph)
        if d.src != rec.binding:
            return _refused(d, Reason.POLICY_DENY, "not from the bound transport: reattach first")
        expired = key_age.expired(live, now, self.policy)
        if rec.state not in REKEY_STATES and not (rec.state is State.DEGRADED and expired):
            return _refused(d, Reason.POLICY_DENY, f"invalid_state_for_rekey {rec.state.name}")
        if not ring.confirmed:
            return self._pending(d, rec, ring, client_eph)
        if expired and rec.state is not State.DEGRADED:
            return self._expired(d, ring)
        if switch_epoch != rec.epoch:
            return _refused(d, Reason.FRESHNESS_INVALID,
                            f"switch epoch {switch_epoch}, the session's is {rec.epoch}")
        target = ring.epoch + 1
        if d.asked != target:
            return _wrong_epoch(d, target)
        if not (expired or key_age.wants_rekey(live, now, self.policy)):
            # before any X25519 or store write: only the gateway starts a rekey
            return _refused(d, Reason.POLICY_DENY, f"not asked: epoch {ring.epoch}'s keys "
                            "are neither old nor worn, and no operator asked")
        refused = self._count(d, (ring.epoch, rec.state is State.DEGRADED), client_eph)
        return refused or self._derive(d, live, ring.current, client_eph, now)

    def _count(self, d: RekeyDecision, key: tuple[int, bool],
               client_eph: bytes) -> RekeyDecision | None:
        """Step 9: a new ephemeral counts toward max_rekey_attempts, a
        re-send of a counted one does not. None: go on."""
        base, seen = self.attempts.get(d.sid, (key, set()))
        if base != key:
            seen = set()
        if client_eph not in seen and len(seen) >= self.policy.max_rekey_attempts:
            return _refused(d, Reason.RATE_LIMITED,
                            f"{len(seen)} rekey attempts for epoch {key[0]}",
                            security=Security.SEC_ABUSE_CONTROL_PLANE)
        self.attempts[d.sid] = (key, seen | {client_eph})
        return None

    def take_back(self, d: RekeyDecision) -> None:
        """The store refused ``d``'s commit and did not apply it: the
        attempt does not count (the derivation is kept for its re-send)."""
        got = self.attempts.get(d.sid)
        if got is not None:
            got[1].discard(d.client_ephemeral)

    def settled(self, sid: int) -> None:
        """``sid``'s commit landed: its derivation's secret leaves memory."""
        self.derived.pop(sid, None)

    def _exchange(self, d: RekeyDecision, rec: SessionRecord, epoch: int, client_eph: bytes,
                  statics: tuple[bytes, bytes]) -> tuple[Ephemeral, bytes]:
        """The gateway's ephemeral and the shared secret: the last refused
        commit's again for its re-send (same epoch, version and ephemeral),
        else a fresh X25519 (raises RekeyError)."""
        key = (epoch, rec.version, client_eph)
        got = self.derived.get(d.sid)
        if got is not None and got[0] == key:
            return got[1]
        eph = self.ephemeral()
        shared = gateway_rekey_secret(eph, client_eph, *statics)
        self.derived[d.sid] = (key, (eph, shared))
        return eph, shared

    @staticmethod
    def _pending(d: RekeyDecision, rec: SessionRecord, ring: KeyRing,
                 client_eph: bytes) -> RekeyDecision:
        """A request under epoch E while the committed E+1 awaits its
        confirmation (a request under E+1 confirmed it first). The client
        re-sends its one request (same ephemeral) until it has an answer,
        which the ring keeps across restarts: that gets the stored RESP, and
        nothing else ever replaces the pending epoch (review R1 #2)."""
        answer = ring.answer  # the re-send of the answered request was answered first
        if d.asked != ring.epoch:
            return _wrong_epoch(d, ring.epoch)
        if answer is None or d.counter <= rec.key_c2s_base:
            # an attempt older than the committed one (held back, delivered
            # late), or a ring stored without its answer: never a replacement
            return _refused(d, Reason.REPLAY_DETECTED,
                            f"an attempt older than the pending epoch {ring.epoch}'s",
                            security=Security.SEC_REPLAY_ATTEMPT)
        return _refused(d, Reason.REPLAY_DETECTED,
                        f"a second ephemeral for the committed epoch {ring.epoch}: "
                        f"a second holder of epoch {ring.previous.epoch}'s keys",
                        security=Security.SEC_KEY_COMPROMISE_SUSPECTED, compromise=True)

    def _expired(self, d: RekeyDecision, ring: KeyRing) -> RekeyDecision:
        """Keys past reject_after_* on a session the timer has not yet ended
        or degraded (between two ticks, review R4 #6): no rekey skips
        KeyExpired. Terminating: the next tick ends it; else it degrades it,
        and the rekey from DEGRADED is the way back."""
        if self.policy.expiry_terminates:
            return _refused(d, Reason.KEY_EXPIRED, f"epoch {ring.epoch}'s keys expired")
        return _refused(d, Reason.POLICY_DENY, f"epoch {ring.epoch}'s keys expired: "
                        "rekey once the session is DEGRADED")

    @staticmethod
    def _late(d: RekeyDecision, rec: SessionRecord, ring: KeyRing,
              client_eph: bytes) -> RekeyDecision:
        """A request under the previous epoch after the current one was
        confirmed: the client's own, sent before it moved on (older than
        the request that made the current epoch, or a re-send of that very
        request: the stored answer's ephemeral), or, whatever it asks and
        from wherever, a second holder of the keys (docs/protocol.md)."""
        answer = ring.answer
        if d.counter <= rec.key_c2s_base or (
                answer is not None and answer.client_ephemeral == client_eph):
            return _refused(d, Reason.REPLAY_DETECTED,
                            f"a request from before epoch {ring.epoch}, delivered late",
                            security=Security.SEC_REPLAY_ATTEMPT)
        return _refused(d, Reason.REPLAY_DETECTED,
                        f"a request under epoch {ring.previous.epoch} after epoch {ring.epoch} "
                        "was confirmed: a second holder of the keys",
                        security=Security.SEC_KEY_COMPROMISE_SUSPECTED, compromise=True)

    def _derive(self, d: RekeyDecision, live, base: SessionKeys, client_eph: bytes,
                now: int) -> RekeyDecision:
        """Step 3's keys and record: the gateway's ephemeral, the new epoch's
        keys bound to the version the commit writes, the RESP to send."""
        rec = live.record
        statics = self.statics(rec.peer_key) if rec.peer_key else None
        if statics is None:  # nothing to bind the new keys to but epoch E's: never
            return _refused(d, Reason.POLICY_DENY, "no static key to bind a rekey to: the "
                            "record names no peer key, or the peer is no longer configured")
        try:
            eph, shared = self._exchange(d, rec, base.epoch, client_eph, statics)
        except RekeyError as e:
            return _refused(d, Reason.AUTH_FAIL, str(e))
        changes = dict(key_epoch=base.epoch + 1, keys_ms=now,
                       key_c2s_base=max(live.ceiling.floor - 1, d.counter),
                       key_s2c_base=live.channel.counter.upcoming - 1)
        steps: tuple = ()
        if rec.state is State.DEGRADED:  # keys expired, a rekey from the binding: back
            new, tr = apply(rec, Event.REKEY_OK, now, **changes)
            steps = ((new, tr),)
        else:
            new = rec.with_(version=rec.version + 1, **changes)
        binding = RekeyBinding(base.epoch + 1, rec.epoch, new.version, client_eph, eph.public)
        keys = derive_rekey(base, shared, binding)
        answer = RekeyAnswer(binding.new_epoch, rec.epoch, new.version,
                             min(self.policy.rekey_overlap_ms, 0xFFFFFFFF),
                             key_age.current_since(live), rec.key_c2s_base, rec.key_s2c_base,
                             client_eph, eph.public, rekey_confirm(keys, binding))
        return _with(d, base=rec, new=new, steps=steps, ring=KeyRing(keys, base, False, answer),
                     resp=answer.resp, client_ephemeral=client_eph)

    # ------------------------------------------------------------ bookkeeping
    def forget(self, keep) -> None:
        """Sessions no longer served: their derivation counts go."""
        for sid in [s for s in self.attempts if s not in keep]:
            del self.attempts[sid]
        for sid in [s for s in self.derived if s not in keep]:
            del self.derived[sid]


def _resent(d: RekeyDecision, ring: KeyRing, rec: SessionRecord, client_eph: bytes) -> bool:
    """The committed, unconfirmed epoch's own request again (its stored
    answer's ephemeral; whatever switch epoch it names: the one asked),
    sent again by the client: its counter is above the committed request's
    (``key_c2s_base``, stored: it survives a restart where the control
    window does not; the committed request itself replayed is not a
    re-send, review R5 #5)."""
    return (_committed(ring, client_eph) and d.asked == ring.epoch
            and d.counter > rec.key_c2s_base)


def _committed(ring: KeyRing, client_eph: bytes) -> bool:
    """``client_eph`` is the committed, unconfirmed epoch's request's."""
    return (not ring.confirmed and ring.answer is not None
            and ring.answer.client_ephemeral == client_eph)


def _with(d: RekeyDecision, **changes) -> RekeyDecision:
    from dataclasses import replace  # noqa: PLC0415
    return replace(d, **changes)


def _wrong_epoch(d: RekeyDecision, target: int) -> RekeyDecision:
    if d.asked < target:
        return _refused(d, Reason.REPLAY_DETECTED, f"epoch {d.asked} asked, {target} is next",
                        security=Security.SEC_REPLAY_ATTEMPT)
    return _refused(d, Reason.FRESHNESS_INVALID, f"epoch {d.asked} asked, {target} is next")


def _refused(d: RekeyDecision, reason: Reason, detail: str, *, answered: bool = True,
             security: Security | None = None, compromise: bool = False) -> RekeyDecision:
    return _with(d, refusal=Refusal(reason, detail, answered, security, compromise))
