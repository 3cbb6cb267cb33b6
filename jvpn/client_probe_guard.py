"""What a candidate's probe must not overtake (docs/protocol.md "Probing
the candidates"). A probe is control: once the gateway verified it, the
gate's control floor is above its counter, and anything of ours with a
lower counter still on its way over a slower path is dropped as a replay.
So no probe leaves while one of ours is in flight: a heartbeat of the
active path (unanswered, or lost less than a second ago: a stalled path's
may still arrive), a reattach request or our PATH_RESPONSE (a reattach
pending, a switch under way), a rekey request (an attempt pending), nor
for 2·srtt after such a request was last sent or answered (a retry may
still be on its way). While traffic flows a heartbeat is nearly always
in flight on a path slower than the heartbeat cadence: a probe more than
half an interval late holds the next heartbeat, so that it leaves right
after the echo. A mixin of :class:`jvpn.client.Client` over its path
state (jvpn/client_paths.py) and its reattach and rekey state."""

from __future__ import annotations

from jvpn.gate import abi

HOLD_EXTRA_MS = 1_000  # a held heartbeat leaves at most 2 cadences + this after the last
GUARDED_CONTROL = frozenset({abi.MSG_REATTACH_REQ, abi.MSG_PATH_RESPONSE, abi.MSG_REKEY_INIT})


class ClientProbeGuard:
    def guard_init(self) -> None:
        self.control_moved_ms = -(1 << 40)  # a guarded request last sent or answered

    def control_moved(self, msg_type: int | None = None) -> None:
        """A request the probes wait for was sealed (``msg_type``), or an
        answer to one came (None): the 2·srtt quiet time starts again."""
        if msg_type is None or msg_type in GUARDED_CONTROL:
            self.control_moved_ms = self.clock_ms()

    def control_in_flight(self, now: int) -> bool:
        if self.pending is not None or self.switching is not None:
            return True
        if self.rekeying.pending is not None:
            return True
        return now - self.control_moved_ms < 2 * self.health.rtt.srtt

    def probes_held(self, now: int) -> bool:
        """Something of ours a probe sent now could overtake is in flight."""
        return self.health.in_flight(now) or self.control_in_flight(now)

    def heartbeat_held(self, now: int, every: int) -> bool:
        """The next heartbeat waits: a probe is overdue and only heartbeats
        in flight hold it (at most 2·``every`` + 1 s after the last one)."""
        if now - self.last_heartbeat_ms >= 2 * every + HOLD_EXTRA_MS:
            return False
        return (self.candidates.overdue(now) and self.health.in_flight(now)
                and not self.control_in_flight(now))

    def send_probes(self, now: int) -> None:
        for p, pid in self.candidates.due(now, self.probes_held(now)):
            with self._lock:  # never after our TERMINATE (join_loops)
                if self.said_goodbye or self.channel is None:
                    return
                msg = self.seal_control(abi.MSG_PATH_PROBE, pid)
            try:
                p.sock.sendto(msg, self.endpoint)
            except OSError:
                pass  # counted lost at its timeout
