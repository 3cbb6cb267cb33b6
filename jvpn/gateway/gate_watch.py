"""The gateway watches the gate it writes into: when the XDP program is no
longer the one attached to the interface (a detach, a re-attach, the
interface gone), datagrams reach the socket unchecked, so the gateway stops
(issue 10 item 13). A mixin of :class:`jvpn.gateway.daemon.Gateway` (its gate,
socket, events and fatal path)."""

from __future__ import annotations

import socket
import time

from jvpn.codes import EventType, Reason

GATE_WATCH_S = 0.5  # a detached gate is noticed within this (plus one tick)


class GateWatch:
    def _gate_watch_due(self) -> bool:
        now = time.monotonic()
        if now < self._next_gate_watch:
            return False
        self._next_gate_watch = now + GATE_WATCH_S
        return True

    def _gate_lost_now(self) -> bool:
        """Whether the gate is gone (then the gateway is stopping). A watch
        that fails is contained: the next one asks again."""
        try:
            problem = self.gate.detached()
        except Exception as e:  # noqa: BLE001 - contained and reported
            self.incidents.report("gate-watch", e)
            return False
        if problem is None:
            return False
        self._gate_lost(problem)
        return True

    def _gate_lost(self, problem: str) -> None:
        """The XDP gate this gateway writes into no longer guards the
        interface: the datagrams that now reach the socket were checked by
        nobody. The socket stops at once, the gateway says so (an event,
        then the fatal path: the CLI prints the line and exits 1; a service
        manager restarts it, and a start without the gate attached is
        refused)."""
        self._stop.set()  # before the socket: the loops end as stopping, not as deaths
        try:
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes the UDP loop: it takes nothing more
        except OSError:
            pass
        self.events.emit(EventType.GATE_LOST, Reason.GATE_DETACHED, detail=problem)
        self._fail(f"the XDP gate is gone ({problem}): stopped, nothing passes unchecked")
