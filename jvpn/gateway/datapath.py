"""The data path: the UDP receive loop (data to the TUN, keepalives answered,
control messages to the control path under the control lock), the TUN loop
(inner packets to the session's one binding) and the kernel's sampled
security drops. The loops read the session table without the lock; they
write no session state (only a session's last receive time).

Every iteration contains its errors (jvpn/gateway/supervise.py): one
datagram or packet, whatever it holds and whatever handling it meets (a send
that fails, no send counter, a store or gate that fails), never ends a loop.
Source port 0 is dropped before the gate. Inner packets enter the TUN only
reassembled and from the session's own inner address; what the channels
refuse is reported per interval by the timer (``report_drops``)."""

from __future__ import annotations

import errno
import threading
from collections.abc import Callable

from jvpn import pathmtu, wire
from jvpn.codes import EventType, Reason, Security
from jvpn.events import EventLog
from jvpn.gate import abi
from jvpn.gateway import key_age
from jvpn.gateway.sending import Sender
from jvpn.gateway.supervise import INCIDENT_INTERVAL_MS, Incidents
from jvpn.gateway.table import Live, SessionTable
from jvpn.policy import Policy
from jvpn.session import State, Transport
from jvpn.tunnel import (
    FLAG_KEY_PHASE,
    FLAG_REATTACH,
    FLAG_REKEY,
    CounterUnavailable,
    inner_dst,
    send_messages,
)

# the control path's (a client's TERMINATE included: jvpn/gateway/client_stop.py;
# a path probe too, answered from memory alone: jvpn/gateway/probes.py)
CONTROL_TYPES = (abi.MSG_REATTACH_REQ, abi.MSG_PATH_RESPONSE, abi.MSG_TERMINATE,
                 abi.MSG_REKEY_INIT, abi.MSG_PATH_PROBE)
SENDABLE = (State.ATTACHED, State.VOLATILE, State.RECOVERING)
SID_AT = slice(8, 16)  # the session id in every message header (jvpn/wire.py)
COUNTER_AT = slice(16, 24)  # and its counter
# a read error a loop survives (reported); any other means the socket or TUN is gone
TRANSIENT = frozenset({errno.EINTR, errno.EAGAIN, errno.ENOBUFS, errno.ENOMEM,
                       errno.ECONNREFUSED, errno.EMSGSIZE})
# the TUN reader's longest wait while idle: how soon it sees a stop (its fd
# is non-blocking; a blocking read would hold the stop until the next packet)
TUN_IDLE_WAIT_S = 0.1


class DataPath:
    def __init__(self, *, sock, tun, gate, table: SessionTable, events: EventLog,
                 sender=None,
                 lock: threading.RLock, stop: threading.Event, clock_ms: Callable[[], int],
                 on_handshake: Callable[[bytes, tuple], None],
                 on_control: Callable[[bytes, Transport], None],
                 on_confirm: Callable[[Live, Transport], None],
                 incidents: Incidents,
                 on_new_keys: Callable[[Live], object] | None = None,
                 policy: Callable[[], Policy] | None = None):
        """``on_new_keys(live)``: a message under a rekey's unconfirmed
        new epoch (its confirmation); ``policy``: the current key policy
        (FLAG_REKEY on what we send). ``sender``: what the sends go through
        (jvpn/gateway/sending.py: never waiting); None: one over ``sock``."""
        self.sock, self.tun, self.gate, self.table, self.events = sock, tun, gate, table, events
        # with the XDP gate the kernel counts what it passed (its runtime map,
        # jvpn/gateway/snapshot.py): no second count per packet here
        self._count_rx = not gate.checks_in_kernel
        self.lock, self.stop, self.clock_ms = lock, stop, clock_ms
        self.on_handshake, self.on_control = on_handshake, on_control
        self.on_confirm = on_confirm  # an unconfirmed session's first message
        self.on_new_keys, self.policy = on_new_keys, policy
        # ``incidents``: the gateway's, on its timer clock (no default: one
        # built here would pick a clock of its own, review k21r5)
        self.incidents = incidents
        timer_ms = lambda: table.timer_ms()  # noqa: E731 - the drop reports' interval clock
        self.sender = sender if sender is not None else Sender(sock, self.incidents)
        self.dropped = {"source_port_0": 0}  # what the daemon itself dropped before the gate
        self._drops = DropCounts(events, timer_ms)

    # ------------------------------------------------------------ UDP
    def udp_loop(self) -> None:
        recv = self.sock.recvfrom
        while not self.stop.is_set():
            try:
                msg, src = recv(65535)
            except OSError as e:
                if self.stop.is_set():
                    return
                if e.errno not in TRANSIENT:
                    raise  # a broken socket: the supervisor ends the gateway
                self.incidents.report("udp", e)
                continue
            self.receive(msg, src)

    def receive(self, msg: bytes, src: tuple) -> None:
        """One datagram as the receive loop handles it: nothing it holds,
        and no failure of what handling it touches, ends the loop."""
        try:
            self.datagram(msg, src)
        except Exception as e:  # noqa: BLE001 - contained and reported (jvpn/gateway/supervise.py)
            self.incidents.report("udp", e)

    def datagram(self, msg: bytes, src: tuple) -> None:
        """One received datagram: source port 0 is malformed (nothing can
        answer it; XDP drops it too), then the gate, then the dispatch."""
        if src[1] == 0:
            self.dropped["source_port_0"] += 1
            return
        if not msg or not self.gate.admit(msg, src):
            return
        self.dispatch(msg, src)

    def dispatch(self, msg: bytes, src: tuple) -> None:
        """One datagram the gate admitted."""
        t = msg[0]
        if t in (abi.MSG_DATA, abi.MSG_KEEPALIVE):
            self._data(t, msg, src)
        elif t == abi.MSG_HANDSHAKE_INIT:
            with self.lock:
                self.on_handshake(msg, src)
        elif t in CONTROL_TYPES:
            self.on_control(msg, Transport(*src[:2]))

    def _data(self, t: int, msg: bytes, src: tuple) -> None:
        live = self.table.sessions.get(int.from_bytes(msg[SID_AT], "little"))
        if live is None or live.quarantined:  # the gate dropped it too (no element)
            return
        opened = live.channel.open(msg)
        if opened is None or self._under_expired(live, opened[1]):
            return
        live.last_rx_ms = self.table.timer_ms()  # the timer clock: Live.last_rx_ms
        if self._count_rx:
            live.traffic.received(len(msg))
        if not live.confirmed:  # delivered only once its confirmation is durable
            with self.lock:
                self.on_confirm(live, Transport(*src[:2]),
                                lambda: self._delivered(live, t, msg, opened, src))
            return
        self._delivered(live, t, msg, opened, src)

    def _delivered(self, live: Live, t: int, msg: bytes, opened, src: tuple) -> None:
        """An opened DATA or KEEPALIVE of ``live``, admitted: into the TUN, or answered."""
        if self.on_new_keys is not None and _new_epoch(live, opened[1]):
            with self.lock:
                self.on_new_keys(live)
        if t == abi.MSG_DATA:
            live.traffic.data_delivered()  # before the echo of any later keepalive
            # reassembly, then the peer's allowed inner source (cryptokey routing)
            packet = live.channel.inner_packet(opened[1], opened[2])
            if packet is not None:
                self.tun.write(packet)
        else:  # verified and recorded by the channel: replays now die in the gate
            counter = int.from_bytes(msg[COUNTER_AT], "little")
            self.table.raise_control_floor(live.record.session_id, counter)
            self.size_to_announcement(live, opened[2], counter, src)
            self.keepalive_reply(live, counter)

    def size_to_announcement(self, live: Live, payload: bytes, counter: int,
                             src: tuple) -> None:
        """A verified keepalive's path MTU announcement sizes the session's
        datagrams to the client's path, never above ours. Only a newer
        announcement than the last one applied counts: a keepalive held back
        and delivered late (still fresh in the control window) does not undo
        the client's latest size. Nonsense changes nothing."""
        family = pathmtu.family_of(src[0])
        announced = pathmtu.parse_announcement(payload, family)
        if announced is None or counter <= live.channel.announced_counter:
            return
        live.channel.announced_counter = counter
        live.channel.size_to(min(announced, self.table.path_mtu), family)

    def keepalive_reply(self, live: Live, counter: int) -> None:
        """Answers a verified keepalive whose header counter was ``counter``:
        the reply's payload echoes it (wire.KEEPALIVE_ECHO), the client's
        heartbeat measure of its active path (docs/protocol.md "Transport
        selection"), with the session's DATA messages delivered so far (the
        client's check that the path carries data, not just heartbeats)
        and the count's incarnation (a new count: a new one). A client
        that does not match echoes ignores it."""
        rec = live.record
        if rec.binding is None or rec.state not in SENDABLE or self._send_expired(live):
            return
        flags = (FLAG_REATTACH if rec.state is State.VOLATILE else 0) | self._rekey_flag(live)
        traffic = live.traffic
        echo = wire.KEEPALIVE_ECHO.pack(counter, traffic.delivered, traffic.incarnation)
        try:
            msg = live.channel.seal(echo, abi.MSG_KEEPALIVE, flags)
            if self.sender.sendto(msg, (rec.binding.addr, rec.binding.port)):
                live.traffic.replied(msg)
        except (OSError, CounterUnavailable) as e:
            self.incidents.report("keepalive", e)  # the next keepalive may pass

    # ------------------------------------------------------------ TUN
    def tun_loop(self) -> None:
        read = self.tun.read
        while not self.stop.is_set():
            try:
                pkt = read()
            except BlockingIOError:  # idle: wait a little, then look at the stop again
                self.tun.wait_readable(TUN_IDLE_WAIT_S)
                continue
            except OSError as e:
                if self.stop.is_set():
                    return
                if e.errno not in TRANSIENT:
                    raise  # the TUN is gone: the supervisor ends the gateway
                self.incidents.report("tun", e)
                continue
            try:
                self.downstream(pkt)
            except Exception as e:  # noqa: BLE001 - contained and reported
                self.incidents.report("tun", e)

    def downstream(self, pkt: bytes) -> None:
        """One inner packet from the TUN to its session's one binding. No
        counter, no send: the packet is dropped (CounterUnavailable, OSError)."""
        live = self.table.for_destination(inner_dst(pkt))
        if live is None:
            return
        rec = live.record
        if (rec.binding is None or rec.state not in SENDABLE or not live.installed
                or self._send_expired(live)):
            return
        if not self.sender.room_for_data():
            return  # the uplink is behind: dropped unsealed (jvpn/gateway/sending.py)
        msgs = live.channel.seal_packet(pkt, self._rekey_flag(live))
        if send_messages(self.sender, msgs, (rec.binding.addr, rec.binding.port)):
            live.traffic.sent(msgs)  # what left (a drop at the socket is not counted)

    def _under_expired(self, live: Live, flags: int) -> bool:
        """A message opened under an epoch past reject_after_*: the ring's
        previous (review R1 #4: after a rekey from DEGRADED the gate passes
        both phases again; the daemon delivers only the new one) or its
        current, before the key-expiry timer ended it (review k16r2 #2b)."""
        if self.policy is None:
            return False
        ring, now, p = live.keys, self.clock_ms(), self.policy()
        phase = 1 if flags & FLAG_KEY_PHASE else 0
        if ring.previous is not None and phase == ring.previous.phase:
            return key_age.previous_expired(live, now, p)
        return key_age.current_expired(live, now, p)

    def _send_expired(self, live: Live) -> bool:
        """We would seal under an expired epoch: the previous while a rekey
        awaits its confirmation (nothing goes but the rekey's answers), or
        the current one whose key-expiry timer has not run yet."""
        if self.policy is None:
            return False
        return key_age.sending_expired(live, self.clock_ms(), self.policy())

    def _rekey_flag(self, live: Live) -> int:
        """FLAG_REKEY while the keys are old or worn, or the operator asked."""
        if self.policy is None:
            return 0
        return FLAG_REKEY if key_age.wants_rekey(live, self.clock_ms(), self.policy()) else 0

    # ------------------------------------------------------------ reports
    def report_drops(self) -> None:
        """The timer's: what the sessions' channels refused since the last
        call, one event per session and kind of drop (not per packet)."""
        self._drops.report(self.table.sessions)

    def xdp_events_loop(self, reader) -> None:
        """The kernel's sampled security drops join the event stream."""
        try:
            while not self.stop.is_set():
                try:
                    self._xdp_events(reader.poll(200))
                except Exception as e:  # noqa: BLE001 - contained and reported
                    self.incidents.report("xdp-events", e)
                    self.stop.wait(0.2)
        finally:
            reader.close()

    def _xdp_events(self, evs) -> None:
        for ev in evs:
            self.events.emit(
                EventType.XDP_SECURITY_DROP, abi.COUNTER_NAMES[ev.reason].upper(),
                ev.session_id,
                Transport(abi.words_addr(ev.saddr, ev.family), abi.word_port(ev.sport)),
                where="xdp", counter=ev.counter, msg_type=ev.msg_type)


def _new_epoch(live: Live, flags: int) -> bool:
    """A message opened under a rekey's new epoch, not yet confirmed."""
    ring = live.keys
    return not ring.confirmed and (1 if flags & FLAG_KEY_PHASE else 0) == ring.current.phase


class DropCounts:
    """Per session, the counters of its channel's inner source filter and
    reassembler, reported as differences since the last report, at most once
    per interval of ``timer_ms`` (the timer clock: a wall-clock step
    neither holds the reports nor lets one out per step)."""

    def __init__(self, events: EventLog, timer_ms: Callable[[], int],
                 interval_ms: int = INCIDENT_INTERVAL_MS):
        self.events, self.timer_ms, self.interval_ms = events, timer_ms, interval_ms
        self._last: dict[int, dict[str, int]] = {}
        self._reported_ms: int | None = None

    def report(self, sessions: dict[int, Live]) -> None:
        now = self.timer_ms()
        if self._reported_ms is not None and now - self._reported_ms < self.interval_ms:
            return
        self._reported_ms = now
        # the ended among the few that dropped: ``set(sessions)`` was a C
        # call over every session with the GIL held (100-250 ms at 1M)
        for sid in [sid for sid in self._last if sid not in sessions]:
            del self._last[sid]
        for sid, live in list(sessions.items()):
            channel = live.made_channel  # none made: none dropped (and none made here)
            if channel is None:
                continue
            now = channel.drop_counts()  # non-zero ones only
            last = self._last.get(sid, {})
            new = {k: v - last.get(k, 0) for k, v in now.items() if v > last.get(k, 0)}
            if now:  # nothing kept for a session that never dropped (issue 15)
                self._last[sid] = now
            if new:
                self._emit(live, new)

    def _emit(self, live: Live, new: dict[str, int]) -> None:
        sid, spoofed = live.record.session_id, new.pop("inner_spoofed", 0)
        if spoofed:
            self.events.emit(EventType.SECURITY_EVENT, Security.SEC_INNER_SOURCE_SPOOFED, sid,
                             live.record.binding, count=spoofed,
                             detail="inner packets with a source outside the peer's AllowedIPs")
        if new:
            self.events.emit(EventType.DATAPATH_DROPS, Reason.DATA_DROPPED, sid,
                             live.record.binding, **new)

