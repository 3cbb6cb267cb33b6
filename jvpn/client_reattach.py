"""The client's half of reattach (docs/protocol.md, "Retries and relays"):
a new request on a path change, the same request again while unanswered,
the answer to the gateway's challenge (sent to the gateway only), and what
an ACK, a REJECT or a TERMINATE means. A mixin of :class:`jvpn.client.Client`,
over the client's one state (its lock, channel, keys, socket, pending
request and epoch). Unanswered requests are sent again with back-off
(jvpn/backoff.py); the client's own TERMINATE when it stops is here too."""

from __future__ import annotations

import os
import socket
import threading
from dataclasses import dataclass

from jvpn import wire
from jvpn.client_causes import terminated_line
from jvpn.gate import abi

LOOP_JOIN_S = 1.0  # at stop: how long the monitor and receive loops may take to end
FATAL_REJECTS = {"SESSION_NOT_FOUND", "SESSION_EXPIRED"}
# the gateway refused this request but a new one may pass: another switch was
# in flight, or the sequence is spent (its switch failed or was aborted)
RETRY_REJECTS = {"OWNERSHIP_CONFLICT", "REPLAY_DETECTED"}
# An unanswered request may have died at the gate's control floor: a key
# holder (or a message of ours that overtook it) raised it above our counter.
# Each retry leaves counters unused, RETRY_SKIP_FIRST then four times more
# per retry up to RETRY_SKIP_MAX: a floor 10^4 ahead is passed at the 4th
# retry (6 s), 10^7 at the 9th, instead of after as many messages as the
# jump (at a heartbeat's pace, minutes). Nonces are 64-bit: a retry every
# 4 s at the cap uses 2^62 counters in ~10^12 years.
RETRY_SKIP_FIRST, RETRY_SKIP_MAX = 256, 1 << 24


@dataclass
class PendingReattach:
    seq: int
    nonce: bytes
    sent_ms: int
    reason: str
    tries: int = 0  # retries sent so far: the next waits retry.delay_ms(tries)
    wait_ms: int = 0  # drawn once per retry (jitter), not at every tick
    started_ms: int = 0  # the first copy left (switch_busy gives up on it)
    unsent: bool = False  # its last copy did not leave (a send error): sent again at once
    unsettled: bool = False  # a switch's, given up after our PATH_RESPONSE left (settle)


def retry_skip(tries: int) -> int:
    """Counters a request's ``tries``-th retry leaves unused."""
    return min(RETRY_SKIP_MAX, RETRY_SKIP_FIRST << 2 * min(max(tries - 1, 0), 12))


class ClientReattach:
    def start_reattach(self, reason: str) -> None:
        """A new request (a new sequence and nonce) from the current socket."""
        with self._lock:
            if self.failed:
                return
            self.seq += 1
            self.retry_at = None
            now = self.clock_ms()
            self.pending = PendingReattach(self.seq, os.urandom(wire.NONCE_LEN), now, reason,
                                           wait_ms=self.retry.delay_ms(0), started_ms=now)
        self.events.emit("ReattachAttempt", "RECOVERY_START", self.session_id, detail=reason,
                         seq=self.seq)
        self._send_request()

    def retry_reattach(self) -> None:
        """The same request again (same sequence and nonce, a fresh header
        counter and timestamp): the gateway can then tell a lost answer (it
        answers again: the challenge, or the ACK of the switch it made) from a
        relay (the same request from another transport: docs/protocol.md)."""
        with self._lock:
            p = self.pending
            if p is None or self.failed:
                return
            p.sent_ms = self.clock_ms()
            p.tries += 1
            p.wait_ms = self.retry.delay_ms(p.tries)
            self.channel.skip_counters(retry_skip(p.tries))
        self._send_request()

    def _send_request(self) -> None:
        with self._lock:
            p = self.pending
            if p is None or self.said_goodbye:  # never after our TERMINATE (join_loops)
                return
            self.switch_control_out(self.request_socket())  # keepalives wait (probe guard)
            msg = self.seal_control(abi.MSG_REATTACH_REQ, p.seq, self.wall_ms(), p.nonce,
                                    self.epoch)
        try:  # a switch's from the chosen candidate's socket (jvpn/client_switch.py)
            self.request_socket().sendto(msg, self.endpoint)
            p.unsent = False
        except OSError:
            # nothing left (a link coming up has no route yet): the next
            # tick sends it again, instead of after a retry's back-off
            # (issue 15: a request left 300 ms late)
            p.unsent = True

    def _reattach_ack(self, p, seq: int, epoch: int, version: int) -> None:
        if p is not None and p.unsettled and seq == p.seq:
            # its switch's ACK: the gateway moved the binding to the uplink
            # that went down; back at once (review k17c F2: taken for the
            # end of the switch, data stopped until the active path was
            # declared dead)
            self.move_back(p, self.clock_ms())
            return
        if p is None or seq != p.seq or epoch <= self.epoch:
            self._late_ack(seq, epoch)
            return
        self.switch_control_answered()  # our keepalives may leave again (probe guard)
        self.epoch, self.pending = epoch, None
        self.last_rx_ms = self.clock_ms()
        self.reattaches += 1
        self.switch_done()  # the chosen candidate is active (jvpn/client_switch.py)
        self.events.emit("ReattachResult", "REATTACH_ACCEPT", self.session_id,
                         version=version, epoch=epoch, took_ms=self.clock_ms() - p.sent_ms)
        if self.on_reattached:
            self.on_reattached()

    def _control(self, msg: bytes, _src, sock: socket.socket) -> None:
        # _src is the gateway's (receive checked it); answers go to self.endpoint
        got = self.channel.open_control(msg)
        if got is None:
            return
        hdr, fields = got
        self.orphan.heard(self.clock_ms())  # authenticated: the gateway has the session's keys
        self.heard_epoch(hdr.flags)  # the overlap's clock (jvpn/client_rekey.py)
        if hdr.type in (abi.MSG_REKEY_RESP, abi.MSG_REKEY_REJECT):
            self.rekey_answer(hdr, fields)
            return
        if hdr.type == abi.MSG_PATH_PROBE_REPLY:
            self.probe_reply(sock, fields)  # a candidate's measure (jvpn/client_paths.py)
            return
        p = self.pending
        if hdr.type == abi.MSG_PATH_CHALLENGE:
            self._answer_challenge(p, fields, sock)
        elif hdr.type == abi.MSG_REATTACH_ACK:
            self._reattach_ack(p, *fields)
        elif hdr.type == abi.MSG_TERMINATE:
            n = fields[0]
            reason = wire.TERMINATE_REASONS[n] if n < len(wire.TERMINATE_REASONS) else (
                "POLICY_TERMINATION")
            self.session_over(reason, terminated_line(reason), by_gateway=True)
        elif hdr.type == abi.MSG_REATTACH_REJECT:
            seq, reason_index, epoch = fields
            reason = wire.reject_reason(reason_index)
            self.events.emit("ReattachResult", reason, self.session_id, seq=seq)
            if p is not None and seq == p.seq:
                self.switch_control_answered()
                self.pending = None
                if reason == "FRESHNESS_INVALID" and epoch > self.epoch:
                    # a switch we asked for happened but its ACK never reached
                    # us (we had moved on to a new request): the gateway says
                    # the epoch, and a new request names it, at once
                    self.epoch, self.retry_at = epoch, self.clock_ms()
                elif reason in RETRY_REJECTS:  # a spent sequence: at once; a conflict: later
                    wait = self.retry_ms if reason == "OWNERSHIP_CONFLICT" else 0
                    self.retry_at = self.clock_ms() + wait
            if reason in FATAL_REJECTS:
                self.session_over(reason, f"session ended by the gateway: reattach refused "
                                          f"({reason})", by_gateway=True)

    def _late_ack(self, seq: int, epoch: int) -> None:
        """The gateway's ACK of an earlier request of ours, come late (held
        in a neighbour queue while its uplink was down): that switch was
        made, and the epoch moved with it. Our next request names that epoch:
        one naming the spent one is refused (FRESHNESS_INVALID, logged as a
        replay attempt) and costs a round trip (issue 15). Authentic and
        fresh (open_control); an epoch only ever moves forward."""
        if seq <= self.seq and epoch > self.epoch:
            self.epoch = epoch

    def _answer_challenge(self, p: PendingReattach | None, fields: tuple, sock) -> None:
        """Our PATH_RESPONSE, from the socket the challenge came on (a
        switch's: the chosen candidate's), to the gateway, whoever relayed it."""
        server_nonce, client_nonce = fields
        if p is None or client_nonce != p.nonce:
            return
        self.switch_control_answered()  # our request's answer (a response holds them again)
        with self._lock:
            self.switch_control_out(sock)  # keepalives wait for the ACK (probe guard)
            reply = self.seal_control(abi.MSG_PATH_RESPONSE, server_nonce, client_nonce)
            self.challenge_answered(sock)  # a switch: data leaves from both sockets now
        try:
            sock.sendto(reply, self.endpoint)
        except OSError:
            self._wake.set()  # a send error: look at the path now

    def seal_control(self, msg_type: int, *fields) -> bytes:
        """A control message to the gateway under the send epoch: its key
        phase flag, header key and MAC key are one epoch's (one read of the
        channel's send keys: a rekey may swap them between two messages)."""
        k = self.channel.send_keys
        hdr = wire.Header(type=msg_type, session_id=self.session_id,
                          counter=self.channel.next_counter(),
                          flags=abi.FLAG_KEY_PHASE if k.phase else 0)
        return wire.seal_control(hdr, k.hdr_c2s, k.reattach, *fields)

    def reattach_timers(self, now: int) -> None:
        """The monitor's reattach step: retry an unanswered request, or start
        one when the gateway's replies stopped."""
        p = self.pending
        if p is not None and p.unsettled:
            self.settle(p, now)
        elif p is not None and p.unsent:
            self._send_request()  # the copy that did not leave: no try spent
        elif p is not None and now - p.sent_ms > p.wait_ms:
            self.retry_reattach()
        elif p is None and self.retry_at is not None and now >= self.retry_at:
            self.start_reattach("refused: a new request")
        elif (p is None and now - self.last_rx_ms > self.max_missed * self.keepalive_ms
              and not self.route_move_waiting):  # the selector follows it (client_paths.py)
            self.start_reattach("replies missing")

    # ------------------------------------------------------------ the end
    def session_over(self, code: str, line: str, by_gateway: bool = False) -> None:
        """The session is over (``line`` says why, in one line): the agent
        stops. Only the gateway's own authenticated word (``by_gateway``)
        spares it our TERMINATE; a client that gave up still tells it."""
        with self._lock:
            if self.failed:
                return
            self.failed, self.ended, self.gateway_ended = code, line, by_gateway
            self.renewing = self.renew_wanted(code)  # Reconnect: jvpn/client_renew.py
        self.events.emit("SessionTerminated", code, self.session_id, detail=line)
        if self.renewing:
            self.send_terminate()  # the old one, if the gateway still has it
        else:
            self._stop.set()
        self._wake.set()

    def join_loops(self, timeout_s: float = LOOP_JOIN_S) -> None:
        """The monitor and receive loops end (bounded): none of their
        keepalives or requests may overtake our TERMINATE (sealed with a
        higher counter and verified first, it would raise the gateway's
        control floor above the TERMINATE's: dropped as a replay). The TUN
        loop, blocked in read(), is stopped by ``said_goodbye`` instead."""
        me = threading.current_thread()
        for t in self._threads:
            if t is not me and t.name in ("_monitor_loop", "_udp_loop"):
                t.join(timeout_s)

    def send_terminate(self) -> None:
        """Once, best effort: an authenticated TERMINATE (CLIENT_STOPPED,
        sealed under the session's keys with a fresh counter, the format the
        gateway sends), so the gateway ends the session now instead of after
        its TTL. Not after the gateway ended it itself."""
        with self._lock:
            if self.keys is None or self.gateway_ended or self.said_goodbye:
                return
            self.said_goodbye = True
            try:
                msg = self.seal_control(abi.MSG_TERMINATE,
                                        wire.TERMINATE_REASONS.index("CLIENT_STOPPED"))
            except Exception:  # noqa: BLE001 - best effort: no counter, no goodbye
                return
        try:
            self.sock.sendto(msg, self.endpoint)
        except OSError:
            pass
