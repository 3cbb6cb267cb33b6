"""The client's half of a rekey (docs/protocol.md "Rekey", steps 1 and 4).

The gateway asks (``FLAG_REKEY`` on an authentic keepalive or data, inside
the AEAD's associated data); the client never rekeys on its own timer, and
the age of its keys never ends it. One attempt at a time:

- a flag under the current epoch, with no attempt and no reattach pending,
  starts one: a fresh ephemeral, REKEY_INIT(epoch + 1, the switch epoch
  the client knows, its public key) sealed under the send epoch, the same
  request again (same ephemeral, a new counter) every ``REKEY_RETRY_MS``
  until an answer, paused while a reattach is pending (the gate only hears
  the bound transport: the request would be refused, POLICY_DENY);
- REKEY_RESP (control window and MAC checked by the channel) is used only
  if it names the pending attempt's epochs and its ``confirm`` verifies
  for the keys derived from the pending ephemeral; anything else is
  dropped with a ``RekeyDenied`` event and the attempt stays pending. On
  success the client seals under the new epoch at once, forgets the
  ephemeral, sends a keepalive (the gateway's confirmation) and keeps the
  previous epoch until ``overlap_ms`` after the gateway's first message
  under the new one;
- REKEY_REJECT naming a request of the pending attempt (its header
  counter) ends the attempt: RATE_LIMITED stops the client asking for this
  epoch; FRESHNESS_INVALID naming the switch epoch the client has learnt
  since (a reattach finished) starts a new attempt at once; naming a newer
  one than the client knows is not adopted (anyone with the keys could say
  it): a reattach asks the gateway, and its own stale-epoch refusal (tied
  to the client's request) moves the epoch; any other reason waits for the
  next flag.

Keys only move forward: an answer is checked against the one pending
attempt (epoch current + 1), which is cleared when used. A mixin of
:class:`jvpn.client.Client` over its lock, channel and socket; the state is
reset with every new session (``rekey_reset``)."""

from __future__ import annotations

import hmac
from collections import deque
from dataclasses import dataclass, field

from jvpn import wire
from jvpn.codes import EventType, Reason
from jvpn.gate import abi
from jvpn.keys import (
    Ephemeral,
    RekeyBinding,
    RekeyError,
    client_rekey_secret,
    derive_rekey,
    rekey_confirm,
)
from jvpn.tunnel import FLAG_REATTACH, FLAG_REKEY

REKEY_RETRY_MS = 1_000  # an unanswered REKEY_INIT is sent again (same ephemeral) this often
# no more requests for this epoch. (KEY_EXPIRED ends the attempt like any
# other refusal: the gateway's next tick ends the session with a TERMINATE
# naming it; docs/protocol.md "Rekey", review R4 #6.)
STOP_REJECTS = frozenset({"RATE_LIMITED"})
# a final refusal holds for this long; a flag after it asks once more (the
# gateway's word may have changed: a session DEGRADED by expired keys is
# flagged until a rekey brings it back)
STOP_HOLD_MS = 10 * REKEY_RETRY_MS
SENT_KEPT = 64  # header counters of an attempt's requests a refusal may name


@dataclass
class PendingRekey:
    new_epoch: int
    switch_epoch: int
    ephemeral: Ephemeral  # its private key: dropped with this object after one success
    sent_ms: int
    # the header counters of this attempt's requests (the newest): a
    # REKEY_REJECT naming another is an older attempt's, delivered late
    counters: deque = field(default_factory=lambda: deque(maxlen=SENT_KEPT))


@dataclass
class RekeyState:
    pending: PendingRekey | None = None
    overlap_ms: int | None = None  # the previous epoch is live: kept this long after ...
    overlap_ends: int | None = None  # ... the gateway's first message under the current one
    stopped_epoch: int | None = None  # the gateway refused rekeys of this epoch ...
    stopped_ms: int = 0  # ... at this time (for STOP_HOLD_MS)
    rekeys: int = 0


class ClientRekey:
    ephemeral_factory = Ephemeral  # tests inject a fixed key

    def rekey_reset(self) -> None:
        """A new session: no attempt, no overlap (its keys are epoch 0)."""
        self.rekeying = RekeyState()

    # ------------------------------------------------------------ asked
    def gateway_flags(self, flags: int) -> None:
        """What an authentic keepalive or data from the gateway asks
        (receive thread; ``flags`` as the channel opened them)."""
        self.heard_epoch(flags)
        if flags & FLAG_REATTACH and self.pending is None:
            self.start_reattach("gateway asked (VOLATILE)")
        if flags & FLAG_REKEY and self.rekeying.pending is None and self.pending is None:
            k = self.channel.keys_for(flags)
            # a flag under the previous epoch was raised before our last rekey
            if k is not None and k.epoch == self.channel.ring.epoch:
                self._lift_stop()
                self.start_rekey()

    def _lift_stop(self) -> None:
        """Flagged again, ``STOP_HOLD_MS`` or more after a final refusal: ask again."""
        with self._lock:
            st = self.rekeying
            if st.stopped_epoch is not None and self.clock_ms() - st.stopped_ms >= STOP_HOLD_MS:
                st.stopped_epoch = None

    def start_rekey(self) -> None:
        """A new attempt (a new ephemeral) for the next epoch."""
        eph = self.ephemeral_factory()  # outside the lock: data sends wait on it
        with self._lock:
            st, epoch = self.rekeying, self.channel.ring.epoch
            if (self.failed or st.pending is not None or self.pending is not None
                    or st.stopped_epoch == epoch):
                return
            st.pending = PendingRekey(epoch + 1, self.epoch, eph, self.clock_ms())
        self._send_rekey_init()

    def _send_rekey_init(self) -> None:
        with self._lock:
            p = self.rekeying.pending
            if p is None or self.said_goodbye:  # never after our TERMINATE (join_loops)
                return
            p.sent_ms = self.clock_ms()
            msg = self.seal_control(abi.MSG_REKEY_INIT, p.new_epoch, p.switch_epoch,
                                    p.ephemeral.public)
            p.counters.append(wire.parse_header(msg).counter)
        try:
            self.sock.sendto(msg, self.endpoint)
        except OSError:
            self._wake.set()  # a send error: look at the path now

    def rekey_timers(self, now: int) -> None:
        """The monitor's rekey step: the end of an overlap; the same request
        again while unanswered (not during a reattach: see the module)."""
        with self._lock:
            st = self.rekeying
            if st.overlap_ends is not None and now >= st.overlap_ends:
                self.channel.set_keys(self.channel.ring.without_previous())
                st.overlap_ms = st.overlap_ends = None
            p = st.pending
            due = p is not None and self.pending is None and now - p.sent_ms >= REKEY_RETRY_MS
        if due:
            self._send_rekey_init()

    def heard_epoch(self, flags: int) -> None:
        """An authentic message from the gateway sealed under the epoch its
        phase names: the first under the current epoch starts the overlap's end."""
        st = self.rekeying
        if st.overlap_ms is None or st.overlap_ends is not None:
            return
        with self._lock:  # the monitor ends overlaps under it
            k = self.channel.keys_for(flags)
            if (st is self.rekeying and st.overlap_ms is not None and k is not None
                    and k.epoch == self.channel.ring.epoch):
                st.overlap_ends = self.clock_ms() + st.overlap_ms

    # ------------------------------------------------------------ answered
    def rekey_answer(self, hdr: wire.Header, fields: tuple) -> None:
        """An authentic, fresh REKEY_RESP or REKEY_REJECT (jvpn/client_reattach.py)."""
        if hdr.type == abi.MSG_REKEY_RESP:
            self._rekey_resp(*fields)
        else:
            self._rekey_reject(*fields)

    def _rekey_resp(self, new_epoch, switch_epoch, version, overlap_ms, gw_public, confirm):
        p = self.rekeying.pending
        if p is None or (new_epoch, switch_epoch) != (p.new_epoch, p.switch_epoch):
            older = p is None or new_epoch <= self.channel.ring.epoch
            self._denied(Reason.REPLAY_DETECTED if older else Reason.FRESHNESS_INVALID,
                         "an answer to no pending attempt: dropped", new_epoch)
            return
        b = RekeyBinding(new_epoch, switch_epoch, version, p.ephemeral.public, gw_public)
        try:
            shared = client_rekey_secret(p.ephemeral, gw_public, self.private_key,
                                         self.gateway_public)
            new = derive_rekey(self.channel.ring.current, shared, b)
        except RekeyError as e:
            self._denied(Reason.AUTH_FAIL, f"{e}: dropped, the attempt stays", new_epoch)
            return
        if not hmac.compare_digest(confirm, rekey_confirm(new, b)):
            self._denied(Reason.AUTH_FAIL, "the key confirmation does not verify for this "
                         "attempt's ephemeral: dropped, the attempt stays", new_epoch)
            return
        self._rotate(p, new, overlap_ms)
        self._keepalive(self.clock_ms())  # our first message under the new keys: the confirmation
        self.events.emit(EventType.KEY_ROTATED, Reason.KEY_ROTATED, self.session_id,
                         version=version, key_epoch=new.epoch)

    def _rotate(self, p: PendingRekey, new, overlap_ms: int) -> None:
        with self._lock:
            st = self.rekeying
            if st.pending is not p:  # cannot happen on the one receive thread; never twice
                return
            self.channel.set_keys(self.channel.ring.rotated(new, confirmed=True))
            self.keys = new
            st.pending, st.overlap_ms, st.overlap_ends = None, overlap_ms, None
            st.rekeys += 1

    def _rekey_reject(self, asked_epoch, key_epoch, switch_epoch, reason_index, counter):
        reason = wire.reject_reason(reason_index)
        st, p = self.rekeying, self.rekeying.pending
        self._denied(reason, f"refused by the gateway (its key epoch {key_epoch}, switch "
                     f"epoch {switch_epoch}, request {counter})", asked_epoch)
        if p is None or asked_epoch != p.new_epoch or counter not in p.counters:
            return  # not a refusal of the pending attempt: said, nothing else
        with self._lock:
            st.pending = None
            if reason in STOP_REJECTS:
                st.stopped_epoch, st.stopped_ms = self.channel.ring.epoch, self.clock_ms()
        if reason in STOP_REJECTS:
            return
        if reason == "FRESHNESS_INVALID" and switch_epoch != p.switch_epoch:
            if switch_epoch == self.epoch:  # a reattach finished since our request
                self.start_rekey()
            elif switch_epoch > self.epoch and self.pending is None:
                self.start_reattach(f"rekey refused: the gateway names switch epoch "
                                    f"{switch_epoch}, newer than ours")

    def _denied(self, reason: str, detail: str, asked_epoch: int) -> None:
        self.events.emit(EventType.REKEY_DENIED, reason, self.session_id, detail=detail,
                         asked_epoch=asked_epoch, key_epoch=self.channel.ring.epoch)
