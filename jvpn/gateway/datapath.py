"""The data path: the UDP receive loop (data to the TUN, keepalives answered,
control messages to the control path under the control lock), the TUN loop
(inner packets to the session's one binding) and the kernel's sampled
security drops. The loops read the session table without the lock; they
write no session state (only a session's last receive time)."""

from __future__ import annotations

import threading
from collections.abc import Callable

from jvpn.codes import EventType
from jvpn.events import EventLog
from jvpn.gate import abi
from jvpn.gateway.table import Live, SessionTable
from jvpn.session import State, Transport
from jvpn.tunnel import FLAG_FRAGMENT, FLAG_REATTACH, inner_dst, send_messages

CONTROL_TYPES = (abi.MSG_REATTACH_REQ, abi.MSG_PATH_RESPONSE)
SENDABLE = (State.ATTACHED, State.VOLATILE, State.RECOVERING)
SID_AT = slice(8, 16)  # the session id in every message header (jvpn/wire.py)
COUNTER_AT = slice(16, 24)  # and its counter


class DataPath:
    def __init__(self, *, sock, tun, gate, table: SessionTable, events: EventLog,
                 lock: threading.RLock, stop: threading.Event, clock_ms: Callable[[], int],
                 on_handshake: Callable[[bytes, tuple], None],
                 on_control: Callable[[bytes, Transport], None]):
        self.sock, self.tun, self.gate, self.table, self.events = sock, tun, gate, table, events
        self.lock, self.stop, self.clock_ms = lock, stop, clock_ms
        self.on_handshake, self.on_control = on_handshake, on_control

    def udp_loop(self) -> None:
        recv, admit = self.sock.recvfrom, self.gate.admit
        while not self.stop.is_set():
            try:
                msg, src = recv(65535)
            except OSError:
                return
            if not msg or not admit(msg, src):
                continue
            t = msg[0]
            if t in (abi.MSG_DATA, abi.MSG_KEEPALIVE):
                self._data(t, msg)
            elif t == abi.MSG_HANDSHAKE_INIT:
                with self.lock:
                    self.on_handshake(msg, src)
            elif t in CONTROL_TYPES:
                self.on_control(msg, Transport(*src[:2]))

    def _data(self, t: int, msg: bytes) -> None:
        live = self.table.sessions.get(int.from_bytes(msg[SID_AT], "little"))
        if live is None:
            return
        opened = live.channel.open(msg)
        if opened is None:
            return
        live.last_rx_ms = self.clock_ms()
        if t == abi.MSG_DATA:
            packet = (live.channel.reassembly.add(opened[2])
                      if opened[1] & FLAG_FRAGMENT else opened[2])
            if packet is not None:
                self.tun.write(packet)
        else:  # verified and recorded by the channel: replays now die in the gate
            self.table.raise_control_floor(live.record.session_id,
                                           int.from_bytes(msg[COUNTER_AT], "little"))
            self.keepalive_reply(live)

    def keepalive_reply(self, live: Live) -> None:
        rec = live.record
        if rec.binding is None or rec.state not in SENDABLE:
            return
        flags = FLAG_REATTACH if rec.state is State.VOLATILE else 0
        try:
            self.sock.sendto(live.channel.seal(b"", abi.MSG_KEEPALIVE, flags),
                             (rec.binding.addr, rec.binding.port))
        except OSError:
            pass  # a closing socket or an unreachable client: the next one may pass

    def tun_loop(self) -> None:
        read, for_inner = self.tun.read, self.table.for_inner
        while not self.stop.is_set():
            try:
                pkt = read()
            except OSError:
                return
            live = for_inner(inner_dst(pkt))
            if live is None:
                continue
            rec = live.record
            if rec.binding is None or rec.state not in SENDABLE or not live.installed:
                continue
            dst = (rec.binding.addr, rec.binding.port)
            try:
                send_messages(self.sock, live.channel.seal_packet(pkt), dst)
            except OSError:
                continue

    def xdp_events_loop(self, reader) -> None:
        """The kernel's sampled security drops join the event stream."""
        try:
            while not self.stop.is_set():
                for ev in reader.poll(200):
                    self.events.emit(
                        EventType.XDP_SECURITY_DROP, abi.COUNTER_NAMES[ev.reason].upper(),
                        ev.session_id,
                        Transport(abi.words_addr(ev.saddr, ev.family), abi.word_port(ev.sport)),
                        where="xdp", counter=ev.counter, msg_type=ev.msg_type)
        finally:
            reader.close()
