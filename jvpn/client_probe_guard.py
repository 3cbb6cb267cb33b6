"""What a candidate's probe must not overtake (docs/protocol.md "Probing
the candidates"). A probe is control: once the gateway verified it, the
gate's control floor is above its counter, and anything of ours with a
lower counter still on its way over a slower path is dropped as a replay.
So no probe leaves while one of ours is in flight: a heartbeat of the
active path (unanswered, or lost while it may still arrive:
PathHealth.in_flight), a reattach request or our PATH_RESPONSE (a
reattach pending, a switch under way), a rekey request (an attempt
pending; each for LATE_IN_FLIGHT_MS after its last copy at most), nor
for 2·srtt after such a request was last sent or answered (a retry may
still be on its way). Nothing holds them while the active path is dead
and no candidate answered: only a probe finds the way out. While
traffic flows a heartbeat is nearly always in flight on a path slower
than the heartbeat cadence: a probe more than half an interval late
holds the next heartbeat, so that it leaves right after the echo.

The other way round, our keepalives (every 50 ms while traffic flows, on
the active socket) must not overtake a control message of ours on a
slower path either: they are held while a probe is in flight (at most
PROBE_HOLD_CADENCES heartbeat cadences per probe: a candidate slower
than that may still lose probes), and while a switch's REATTACH_REQ or
PATH_RESPONSE is in flight on the chosen candidate's socket (until its
answer, at most that path's loss timeout: else a switch to a path slower
than the cadence never completes while the old one works). Data flows
meanwhile: it does not touch the control floor. A REKEY_INIT needs no
hold: it leaves the active socket, as heartbeats do (ordered on one
path), and no rekey starts or retries while a reattach is pending. A
held heartbeat is no loss: it is not sent, so it is not counted. A mixin
of :class:`jvpn.client.Client` over its path state (jvpn/client_paths.py)
and its reattach and rekey state."""

from __future__ import annotations

from jvpn.client_path_health import LATE_IN_FLIGHT_MS, heartbeat_every_ms
from jvpn.gate import abi

HOLD_EXTRA_MS = 1_000  # a held heartbeat leaves at most 2 cadences + this after the last
GUARDED_CONTROL = frozenset({abi.MSG_REATTACH_REQ, abi.MSG_PATH_RESPONSE, abi.MSG_REKEY_INIT})
PROBE_HOLD_CADENCES = 2  # a probe in flight holds our keepalives this many cadences at most
SWITCH_HOLD_MAX_MS = 1_000  # a switch's request or response holds them at most this long


class ClientProbeGuard:
    def guard_init(self) -> None:
        self.control_moved_ms = -(1 << 40)  # a guarded request last sent or answered
        self.switch_hold_until: int | None = None  # a switch's request or response in flight

    def control_moved(self, msg_type: int | None = None) -> None:
        """A request the probes wait for was sealed (``msg_type``), or an
        answer to one came (None): the 2·srtt quiet time starts again."""
        if msg_type is None or msg_type in GUARDED_CONTROL:
            self.control_moved_ms = self.clock_ms()

    def control_in_flight(self, now: int) -> bool:
        """A guarded request of ours may still be on its way: one pending
        (a reattach, a switch, a rekey) for LATE_IN_FLIGHT_MS after its last
        copy left (older copies have lower counters anyway: a dead path's
        pending reattach must not hold probes forever), any for 2·srtt."""
        since = now - self.control_moved_ms
        pending = (self.pending is not None or self.switching is not None
                   or self.rekeying.pending is not None)
        if pending and since < LATE_IN_FLIGHT_MS:
            return True
        return since < 2 * self.health.rtt.srtt

    def probes_held(self, now: int) -> bool:
        """Something of ours a probe sent now could overtake is in flight,
        or a heartbeat falls due while the probe would hold it. Never while
        the active path is dead and no candidate answered its last probe:
        only a probe can find the path to fail over to. A lost heartbeat
        holds no probe overdue by a whole interval (PathHealth.in_flight)."""
        if self.health.drops_confirmed() and not any(
                p.health.last_answered is True for p in self.candidates.paths.values()):
            return False
        heartbeats = self.health.in_flight(now, lost_too=not self.candidates.overdue(now, 1.0))
        return heartbeats or self.control_in_flight(now) or self.heartbeat_imminent(now)

    def probe_hold_ms(self) -> int:
        return PROBE_HOLD_CADENCES * heartbeat_every_ms(self.policy)

    def heartbeat_imminent(self, now: int) -> bool:
        """Idle (a heartbeat every keepalive), the next one falls due within
        a probe's hold: the probe waits and leaves after its echo (else
        the hold ends with that heartbeat, which can overtake a probe on
        a candidate more than the hold slower). While traffic flows one
        is always due that soon: the overdue rule below orders them."""
        every, hold = self.heartbeat_cadence(now), self.probe_hold_ms()
        return every > hold and self.last_heartbeat_ms + every - now < hold

    def switch_control_out(self, sock) -> None:
        """A switch's REATTACH_REQ or PATH_RESPONSE is about to be sealed for
        ``sock`` (under the client's lock): if that is not the active socket,
        our keepalives wait for its answer, at most the path's loss timeout."""
        target = self.switching
        if target is None or sock is not target.sock or sock is self.sock:
            return
        cap = min(SWITCH_HOLD_MAX_MS, target.health.rtt.loss_timeout_ms())
        self.switch_hold_until = self.clock_ms() + int(cap)

    def switch_control_answered(self) -> None:
        """A challenge, an ACK or a REJECT naming our pending request came
        (``_control``; an old one replayed to us releases nothing)."""
        self.switch_hold_until = None

    def switch_control_held(self, now: int) -> bool:
        until = self.switch_hold_until
        return self.switching is not None and until is not None and now < until

    def probe_in_flight(self, now: int) -> bool:
        """A probe sent less than PROBE_HOLD_CADENCES cadences ago is unanswered."""
        hold = self.probe_hold_ms()
        return any(now - sent < hold for p in self.candidates.paths.values()
                   for sent in p.probes.values())

    def keepalives_held(self, now: int) -> bool:
        """No keepalive of ours (heartbeat, confirmation) leaves now: it
        could overtake our probe or our switch's request at the gate."""
        return self.switch_control_held(now) or self.probe_in_flight(now)

    def heartbeat_held(self, now: int, every: int) -> bool:
        """The next heartbeat waits: a probe or a switch's request of ours
        is in flight (keepalives_held), or a probe is overdue and only
        heartbeats in flight hold it (at most 2·``every`` + 1 s after the
        last one). Not once one of those is late (PathHealth.overdue): the
        path may be failing, and only heartbeats tell (on a slow path a
        blackhole would be seen a whole loss timeout later)."""
        if self.keepalives_held(now):
            return True
        if now - self.last_heartbeat_ms >= 2 * every + HOLD_EXTRA_MS:
            return False
        if self.health.overdue(now):
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
