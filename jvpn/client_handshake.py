"""The client's handshake: initiations until the gateway answers, each
waiting longer (doubled, capped, jittered: jvpn/backoff.py), and when none
is answered one line naming what was observed and the likely causes
(jvpn/client_causes.py). A mixin of :class:`jvpn.client.Client`."""

from __future__ import annotations

import time
from dataclasses import dataclass

from jvpn import client_clock, client_icmp
from jvpn.client_causes import Observed, cause_line
from jvpn.config import (
    ANSWER_WINDOW_MS,
    ANSWERABLE_PAST_NS,
    ANSWERABLE_SLACK_MS,
    ATTEMPTS_KEPT,
    COOKIE_RESEND_MARGIN_MS,
    COOKIE_RESEND_MIN_MS,
    HANDSHAKE_ATTEMPTS,
    HANDSHAKE_CAP_MS,
)
from jvpn.gate import abi
from jvpn.handshake import Assignment, HandshakeError, Initiator
from jvpn.keys import SessionKeys
from jvpn.session import Transport
from jvpn.tunnel import DataChannel

RECV_TIMEOUT_S = 0.2  # the receive loop's timeout, put back after the handshake
SEND_TRIES = 4  # an initiation's sends while ICMP errors keep failing them
UNVERIFIED = "a reply did not verify (late or forged): ignored"
# a response to the attempt before is still accepted (it came late); the
# gateway keeps as many of a peer's unconfirmed sessions
KEEP_INITIATORS = ATTEMPTS_KEPT
# ...but not once the gateway may have forgotten the session it answers with
# (review R4 #1): an answer older than ANSWER_WINDOW_MS since its initiation
# is refused (UNCONFIRMED_TTL_MS less ANSWER_MARGIN_MS: jvpn/config.py)
# An initiation held past the gateway's answerable rule (_hold_past_refusal):
# rounds at most (a wall clock stepped back meanwhile), and a margin a round
HOLD_ROUNDS, HOLD_MARGIN_S = 3, 0.001


def _refused_in_vain_ns(inits: list[tuple[Initiator, int]], now_ms: int) -> int:
    """How long until an initiation stamped now (the kept ones' clock) is
    past the band where the gateway and this client disagree: at capacity
    the gateway holds a kept initiation's attempt answerable (refusing the
    new one and sending that answer again) until one stamped
    ANSWERABLE_PAST_NS after it (its rule, by these timestamps: it cannot
    see this client's timer, hence the slack), while this client takes
    that answer no more once ANSWER_WINDOW_MS has passed on its timer
    (``_opened``). 0: none is in that band."""
    hold = 0
    for init, sent_ms in inits:
        since = init.clock_ns() - (init.timestamp_ns or 0)
        if now_ms - sent_ms >= ANSWER_WINDOW_MS and 0 <= since < ANSWERABLE_PAST_NS:
            hold = max(hold, ANSWERABLE_PAST_NS - since)
    return hold


def wait_after_cookie_ms(round_trip_ms: int) -> int:
    """How long the resend that carries a fresh cookie waits for its answer
    (before the back-off step caps it): twice the cookie's round trip and a
    margin, at least COOKIE_RESEND_MIN_MS."""
    return max(COOKIE_RESEND_MIN_MS, 2 * round_trip_ms + COOKIE_RESEND_MARGIN_MS)


@dataclass
class _Step:
    """What one attempt hands the next: the cookie to carry (None: none
    yet) and the kept initiators, newest first."""

    cookie: bytes | None
    inits: list[tuple[Initiator, int]]


class ClientError(Exception):
    """``key``: the client config key the failure traces to, if one does
    (`client up` names it and the file that set it: jvpn.config_sources)."""

    def __init__(self, message: str, key: str | None = None):
        super().__init__(message)
        self.key = key


class HandshakeFailed(ClientError):
    """No session: the message names what was observed and the likely causes."""


class ClientHandshake:
    def handshake(self, attempts: int = HANDSHAKE_ATTEMPTS) -> Assignment:
        """A new session: initiations until one is answered, each waiting
        longer (doubled, capped, jittered: jvpn/backoff.py). Failing, a
        :class:`HandshakeFailed` names what was seen and the likely causes.
        ICMP errors are heard during the handshake only (jvpn/client_icmp.py)."""
        client_icmp.enable(self.sock)
        try:
            return self._handshake(attempts)
        finally:
            client_icmp.disable(self.sock)

    def _handshake(self, attempts: int) -> Assignment:
        seen, started = Observed(), time.monotonic()
        drops_before = self.drops.total
        step = _Step(None, [])  # the cookie to carry; (initiator, sent at), newest first
        for k in range(attempts):
            if self._stop.is_set():  # SIGTERM/SIGINT while still looking for the gateway
                raise ClientError("stopped by a signal before the gateway answered")
            self.progress(f"handshake with {self.endpoint[0]}:{self.endpoint[1]}, "
                          f"attempt {k + 1}/{attempts}")
            end = time.monotonic() + self.handshake_wait.delay_ms(k) / 1000
            if (got := self._attempt(step, end, seen)) is not None:
                return got
        seen.strangers = self.drops.total - drops_before
        raise HandshakeFailed(cause_line(seen, self.endpoint, time.monotonic() - started))

    def _attempt(self, step: _Step, end: float, seen: Observed) -> Assignment | None:
        """One scheduled attempt, until ``end``: an initiation; the first
        cookie reply is answered at once by a resend carrying it, waiting
        wait_after_cookie_ms (past ``end`` on a long path), then, if
        unanswered and ``end`` is not past, once more until ``end`` (a gate
        under a flood drops the resend most: k18flood). No cookie reply ends the attempt itself:
        an on-path party can forge one (its key is the gateway's public
        key's, its AD a mac1 seen on the path), and forgeries must not
        spend the client's patience (review k18r5 F1)."""
        sends, wait_end = 0, end
        while sends < 3:
            sends += 1
            if (held := self._hold_past_refusal(step, seen, wait_end)) is not None:
                return held
            self._initiate(step, seen)
            got = self._await_reply(step, wait_end - time.monotonic(), seen,
                                    cookie_ends=sends == 1)
            if isinstance(got, Assignment):
                return got
            if got is not None:  # this attempt's first cookie: resend at once
                resend_s = min(wait_after_cookie_ms(got), HANDSHAKE_CAP_MS) / 1000
                wait_end = time.monotonic() + resend_s  # past ``end`` if the path is long
            elif sends == 1 or time.monotonic() >= end:
                return None
            else:  # the resend unanswered: once more, then until the attempt's end
                wait_end = end
        return None

    def _hold_past_refusal(self, step: _Step, seen: Observed,
                           until: float) -> Assignment | None:
        """Before an initiation: while one stamped now would be refused at
        capacity and answered with a kept attempt's answer again, which
        this client takes no more (``_refused_in_vain_ns``), wait, listening
        (an answer still counts), ANSWERABLE_SLACK_MS at most a round and
        never past ``until`` (the wait's end, monotonic): the retry then
        takes the attempt's room instead of costing one more."""
        for _ in range(HOLD_ROUNDS):
            hold_ns = _refused_in_vain_ns(step.inits, self.clock_ms())
            left_s = until - time.monotonic()
            if hold_ns <= 0 or left_s <= 0:
                return None
            hold_s = min(hold_ns / 1e9, ANSWERABLE_SLACK_MS / 1000, left_s) + HOLD_MARGIN_S
            got = self._await_reply(step, hold_s, seen, cookie_ends=False)
            if isinstance(got, Assignment):
                return got
        return None

    def _initiate(self, step: _Step, seen: Observed) -> None:
        init = Initiator(self.private_key, self.gateway_public,
                         clock_ns=client_clock.stamps_ns(self.wall_ms))
        init.cookie = step.cookie
        seen.attempts += 1
        msg = init.initiation()
        step.inits[:] = [(init, self.clock_ms()), *step.inits[:KEEP_INITIATORS - 1]]
        self._send_initiation(msg, seen)

    def _await_reply(self, step: _Step, timeout_s: float, seen: Observed,
                     cookie_ends: bool = True) -> Assignment | int | None:
        """Until the deadline: the Assignment of a response that opens under
        one of ``step.inits`` (an answer to one of the last ATTEMPTS_KEPT
        initiations, if it came within ANSWER_WINDOW_MS of it), or (a cookie
        reply, kept in ``step.cookie`` for the next initiation) its round
        trip in ms if ``cookie_ends``, or None. A reply that does not open
        is counted and ignored: one forged or stray datagram must not end
        the wait."""
        deadline = time.monotonic() + max(0.0, timeout_s)
        while (msg := self._handshake_reply(deadline - time.monotonic(), seen)) is not None:
            if msg[0] == abi.MSG_COOKIE_REPLY:
                if (took := self._cookie(step.inits, msg)) is not None:
                    step.cookie = took[0]
                    if cookie_ends:
                        return took[1]
                continue
            if (opened := self._opened(step.inits, msg)) is not None:
                return self._attached(*opened)
            seen.undecryptable += 1
            # unauthenticated: anyone can send these, so one summary line per interval
            self.events.emit_unauthenticated("HandshakeFailed", "HANDSHAKE_FAIL",
                                             Transport(*self.endpoint), detail=UNVERIFIED)
        return None

    def _opened(self, inits: list[tuple[Initiator, int]],
                msg: bytes) -> tuple[Assignment, SessionKeys] | None:
        """The response opened under the initiation it answers, if that went
        out less than ANSWER_WINDOW_MS ago (the client's timer clock) and no
        newer one went out stamped ANSWERABLE_PAST_NS after it: the gateway's
        own rule at capacity, by the same timestamps, for when it may have
        ended that attempt, whatever this timer says (a wall clock stepped
        forward between the two: review k20rall F1)."""
        now = self.clock_ms()
        newest_ns = 0  # the latest timestamp of the newer initiations
        for init, sent_ms in inits:  # newest first
            stamped = init.timestamp_ns or 0
            replaced = newest_ns - stamped >= ANSWERABLE_PAST_NS
            newest_ns = max(newest_ns, stamped)
            if replaced or now - sent_ms >= ANSWER_WINDOW_MS:
                continue  # the gateway may have forgotten it: too late to take
            try:
                return init.response(msg)
            except HandshakeError:
                continue
        return None

    def _cookie(self, inits: list[tuple[Initiator, int]],
                msg: bytes) -> tuple[bytes, int] | None:
        """The cookie of a COOKIE_REPLY to one of ``inits`` and its round trip
        (ms). An earlier initiation's cookie is taken while the latest carries
        none (on a long path it comes after the next initiation went out:
        review k18r1 F1); once a resend with a cookie is out, only a reply to
        it counts (a late one to an earlier initiation must not start another)."""
        now = self.clock_ms()
        candidates = inits if inits[0][0].cookie is None else inits[:1]
        for init, sent_ms in candidates:
            try:
                init.consume_cookie(msg)
            except HandshakeError:  # not for this initiation (forged, or another's)
                continue
            self.events.emit("HandshakeCookie", "RATE_LIMITED",
                             detail="gateway under load: retrying with its cookie")
            return init.cookie, max(0, now - sent_ms)
        return None

    def _send_initiation(self, msg: bytes, seen: Observed) -> None:
        """With IP_RECVERR on, any ICMP error queued for the socket (ours, or
        a forged one naming any destination) fails the next send: drained
        and retried a few times, and counted as ICMP, not as a routing
        failure (review R3 #8)."""
        for _ in range(SEND_TRIES):
            try:
                self.sock.sendto(msg, self.endpoint)
                return
            except ConnectionRefusedError:  # an ICMP error reported on this send
                seen.refused += self._refusals()
            except OSError as e:  # no route (an uplink down): counted; the next attempt may pass
                seen.unsent, seen.unsent_why = seen.unsent + 1, e.strerror or str(e)
                return
        seen.icmp_unsent += 1

    def _handshake_reply(self, timeout_s: float, seen: Observed) -> bytes | None:
        """The gateway's next COOKIE_REPLY or HANDSHAKE_RESP; None after timeout_s."""
        deadline = time.monotonic() + timeout_s
        try:
            while (left := deadline - time.monotonic()) > 0:
                self.sock.settimeout(left)
                try:
                    msg, src = self.sock.recvfrom(65535)
                except ConnectionRefusedError:
                    seen.refused += self._refusals()
                    continue
                if (self._from_gateway(src) and msg
                        and msg[0] in (abi.MSG_COOKIE_REPLY, abi.MSG_HANDSHAKE_RESP)):
                    return msg
        except TimeoutError:
            pass
        finally:
            self.sock.settimeout(RECV_TIMEOUT_S)
        return None

    def _refusals(self) -> int:
        """ICMP port unreachables for datagrams we sent the gateway (drained)."""
        return client_icmp.port_unreachable_from(self.sock, self.endpoint)

    def _attached(self, assignment: Assignment, keys: SessionKeys) -> Assignment:
        self.assignment, self.keys = assignment, keys
        self.channel = DataChannel(keys, "client")
        self.channel.size_to(self.size.path_mtu, self.size.family)
        self.rekey_reset()  # a new session's keys: epoch 0, no attempt (client_rekey.py)
        self.last_rx_ms = self.clock_ms()
        self.orphan.heard(self.last_rx_ms)
        self.events.emit("SessionStateChange", "HANDSHAKE_OK", self.session_id,
                         new_state="ATTACHED", previous_state="BIRTH")
        return assignment

