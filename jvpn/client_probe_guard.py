"""What our keepalives must not overtake (docs/protocol.md "Probing the
candidates", "The switch: make before break").

A probe is not ordered against anything of ours but our other probes: the
gateway records it in a probe window of its own and raises the gate's
probe floor for it, never the control floor (against which the gate does
not check a probe either: issue 14). So a probe leaves when it is due,
whatever heartbeat or request is in flight, and nothing waits for a probe:
a heartbeat that overtakes a probe on a slower candidate, or a probe that
overtakes a reattach or a rekey request of ours on a slower active path,
kills neither. A probe that overtook another probe would: the other's
counter is below the probe floor by then. So one probe is in flight at a
time, across all candidates (jvpn/client_candidates.py Candidates.due):
the next leaves once the last was answered or counted lost at its loss
timeout (at most 1 s). Two or three candidates answering within a few
hundred ms are each probed every probe_interval_ms all the same; a dead or
very slow candidate delays the others' probes by its loss timeout, and a
probe answered after that timeout may die at the probe floor (a late
answer no longer counts then).

Heartbeats and our own reattach still share the floor: a keepalive (every
50 ms while traffic flows, on the active socket) sealed after a switch's
REATTACH_REQ or PATH_RESPONSE on a slower chosen candidate would reach the
gateway first, raise the floor above it, and the gate would drop our
request or response as a replay, every retry again. So while that request
is in flight on the chosen candidate's socket, our keepalives wait for its
answer (at most that path's loss timeout). Data flows meanwhile: it does
not touch the control floor. A REKEY_INIT, and a reattach from the active
socket itself, need no hold: they leave the active socket, as heartbeats
do (ordered on one path). A held heartbeat is no loss: it is not sent, so
it is not counted. A mixin of :class:`jvpn.client.Client` over its path
state (jvpn/client_paths.py) and its switch state."""

from __future__ import annotations

from jvpn.gate import abi

SWITCH_HOLD_MAX_MS = 1_000  # a switch's request or response holds them at most this long


class ClientProbeGuard:
    def guard_init(self) -> None:
        self.switch_hold_until: int | None = None  # a switch's request or response in flight

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

    def keepalives_held(self, now: int) -> bool:
        """No keepalive of ours (heartbeat, confirmation) leaves now: it
        could overtake our switch's request at the gate."""
        until = self.switch_hold_until
        return self.switching is not None and until is not None and now < until

    def send_probes(self, now: int) -> None:
        """The next candidate probe, if one is due and none is in flight
        (Candidates.due: a probe must not overtake another probe of ours)."""
        for p, pid in self.candidates.due(now):
            with self._lock:  # never after our TERMINATE (join_loops)
                if self.said_goodbye or self.channel is None:
                    return
                msg = self.seal_control(abi.MSG_PATH_PROBE, pid)
            try:
                p.sock.sendto(msg, self.endpoint)
            except OSError:
                pass  # counted lost at its timeout
