"""A switch to a candidate path, make before break (docs/protocol.md "The
switch: make before break"): the reattach goes out of the chosen
candidate's socket while data and heartbeats keep leaving from the old
active one (heartbeats held while our request or response is in flight:
jvpn/client_probe_guard.py); from our PATH_RESPONSE until the ACK (at most 1 s) every data
message leaves from both (the gate and the replay window deliver exactly
one); on the ACK the candidate becomes active and the old socket stays
open as a candidate's. A mixin of :class:`jvpn.client.Client`."""

from __future__ import annotations

from jvpn.client_candidates import Path
from jvpn.client_path_health import heartbeat_every_ms, is_dead
from jvpn.client_path_select import SWITCH
from jvpn.tunnel import send_messages

DUAL_SEND_MS = 1_000  # from our PATH_RESPONSE: both sockets carry data this long at most
SWITCH_GIVE_UP_MS = 3_000  # a switch with no ACK by then is abandoned: the choice is made again


class ClientSwitch:
    def switch_init(self) -> None:
        self.switching: Path | None = None  # the chosen candidate while its reattach is out
        self.chosen_reattach = False  # the selector started the pending reattach (rule 1)
        self.switch_started_ms = 0
        self.dual_until: int | None = None
        self.route_at_attempt = None  # the OS's route when the attempt in flight started
        self.attempt_seen: tuple | None = None  # (its sequence, its switch) when first seen

    def start_switch(self, target: Path, reason: str) -> None:
        """The reattach from ``target``'s socket (jvpn/client_reattach.py)."""
        self.switching, self.switch_started_ms, self.dual_until = target, self.clock_ms(), None
        self.start_reattach(f"{reason}: switching to {target.uplink.ifname} "
                            f"({target.uplink.source})")

    def reattach_chosen(self, reason: str) -> None:
        """Rule 1's reattach from the active socket itself (a NAT rebinding)."""
        self.chosen_reattach, self.switch_started_ms = True, self.clock_ms()
        self.start_reattach(reason)

    def _follow_unproven_route(self, now: int, route) -> bool:
        """The route to the gateway moved to a candidate no probe proved (a
        standby of an anycast cluster answers none): followed once, make
        before break, as before candidates; its path challenge validates
        it. A proven candidate is left to the rules (hysteresis)."""
        self.route_move_waiting = False
        if route == self.route_followed:
            return False
        p = self.candidates.paths.get(route)
        if route == self.path or (p is not None and p.health.last_answered is True):
            self.route_followed = route
            return False
        if p is None:
            return False  # not listed yet: the next discovery
        d = self.selector.follow_route(now, route)
        if d.action != SWITCH:
            # the bounds hold it back: tried again at the next tick, and no
            # "replies missing" reattach from the old socket meanwhile (it
            # would keep the selector waiting on a path the OS left)
            self.route_move_waiting = True
            return False
        self.route_followed = route
        self._selected(now, d, p.uplink)
        self.start_switch(p, "route moved to an unproven candidate")
        return True

    def switch_busy(self, now: int, why=None, route=None) -> bool:
        """A switch or reattach is in flight (the selector waits). One the
        selector started, unanswered for SWITCH_GIVE_UP_MS, is abandoned: its
        path was not as good as measured (or a candidate may be proven by
        now), and the choice is made again. So is one of any origin (replies
        missing, a refusal's new request) once the active path is dead
        (``why``, its confirmations) and a candidate answered its last
        probe, which is then eligible: the selector owns failover. Any of
        them is abandoned at once when the OS moved its route since it
        started (an uplink went down under it): the route is followed;
        but not once our PATH_RESPONSE left while its target is still
        listed (the gateway's binding may have moved to it). A switch
        whose target uplink is no longer listed is abandoned whatever its
        stage."""
        p = self.pending
        chosen = self.switching is not None or self.chosen_reattach
        if p is None and self.switching is None:
            return False
        attempt = (p.seq if p is not None else None, id(self.switching))
        if attempt != self.attempt_seen:  # a new one: started under the route of now
            self.attempt_seen, self.route_at_attempt = attempt, route
        target = self.switching.uplink.key if self.switching is not None else None
        if route is not None and route == target:  # the OS moved its route where we go
            self.route_at_attempt = self.route_followed = route
        if self._target_gone():
            self._target_lost()
        elif (route is not None and route != self.route_at_attempt
                and self.dual_until is None):  # not once our PATH_RESPONSE left
            self._give_up()
        elif (chosen and now - self.switch_started_ms > SWITCH_GIVE_UP_MS
                and self._elsewhere(why)):
            self._give_up()
        elif (p is not None and not chosen and now - p.started_ms > SWITCH_GIVE_UP_MS
              and self.failover_ready() and is_dead(why, self.health.drops_confirmed())):
            self._give_up()
        return self.pending is not None or self.switching is not None

    def _target_gone(self) -> bool:
        """The switch's uplink is no longer listed (it went down): whatever
        its stage, even once our PATH_RESPONSE left, nothing more can come
        of it (its ACK, if any, goes to a dead address), and keeping it
        kept the client from every other choice until the gateway's
        recovery window ran out (issue 15: ~7 s without data)."""
        listed = self.uplinks_listed
        return (self.switching is not None and listed is not None
                and self.switching.uplink.key not in listed)

    def _target_lost(self) -> None:
        """The switch's uplink went down. Before our PATH_RESPONSE left, the
        gateway cannot have moved its binding there: the switch is given up.
        After it, whether it did is unknown (its ACK died with the uplink):
        the request is kept, unsettled, and a heartbeat leaves the active
        socket at once; :meth:`settle` reads the answer from the active path
        (issue 15: the client kept choosing the dead uplink while the
        gateway's binding sat on it, 1.2 s without data)."""
        p = self.pending
        if p is None or self.dual_until is None:
            self._give_up()
            return
        with self._lock:  # from now on a copy of it leaves the active socket
            self.switching = self.dual_until = None
            p.unsettled = True
        now = self.clock_ms()
        self.chosen_reattach, self.switch_started_ms = True, now
        self._keepalive(now)

    def settle(self, p, now: int) -> None:
        """The reattach step for a request left unsettled by :meth:`_target_lost`.
        The active path loses heartbeats: the gateway moved its binding to
        the dead uplink, and the same request again, from the active socket,
        moves it back (a consumed request from another transport: the
        gateway validates that path and ACKs, docs/protocol.md "Retries and
        relays"). Its heartbeats still come back after a loss timeout: the
        binding did not move, nothing to undo, the request is dropped."""
        if self.health.consecutive_drops > 0:
            self.move_back(p, now)
        elif now - self.switch_started_ms > (self.health.rtt.loss_timeout_ms()
                                             + heartbeat_every_ms(self.policy)):
            self._give_up()

    def move_back(self, p, now: int) -> None:
        """The unsettled request again, from the active socket: a switch
        the gateway counts against max_switches_per_min, so the selector
        counts it too (review k17c F1: uncounted, a network that let our
        PATH_RESPONSE through, dropped the ACK and took its uplink away made
        each planned move two switches at the gateway, one here, until the
        gateway ended the session for a switch storm)."""
        p.unsettled = False
        self.selector.switched(now)
        self.retry_reattach()

    def _give_up(self) -> None:
        with self._lock:
            self.pending = None
            self.switching = self.dual_until = None
        self.chosen_reattach = False

    def _elsewhere(self, why) -> bool:
        """Somewhere else to be than the switch in flight: the active path
        still works, or another candidate answered its last probe. Else the
        switch's own retries go on (same request, backed off), as before
        candidates: a cluster's takeover answers only once the dead owner's
        lease ran out (LeaseTTL, seconds), and abandoning it would start
        over with a new request each time."""
        if not is_dead(why, self.health.drops_confirmed()):
            return True
        target = self.switching.uplink.key if self.switching is not None else None
        return any(p.health.last_answered is True
                   for k, p in self.candidates.listed() if k != target)

    def failover_ready(self) -> bool:
        """A candidate answered its last probe: eligible once the active
        path is dead (jvpn/client_path_select.py Candidate.eligible)."""
        return any(p.health.last_answered is True for _k, p in self.candidates.listed())

    def request_socket(self):
        """Where a reattach request goes out: the chosen candidate's socket
        during a switch, else the active one."""
        target = self.switching
        return target.sock if target is not None else self.sock

    def challenge_answered(self, sock) -> None:
        """Our PATH_RESPONSE is about to leave ``sock``: data goes out of
        both sockets from now (before it leaves: the binding may move as
        soon as it arrives). Called under the client's lock."""
        target = self.switching
        if target is not None and sock is target.sock:
            self.dual_until = self.clock_ms() + DUAL_SEND_MS

    def dual_socket(self):
        """The second socket every data message leaves from, or None."""
        target, until = self.switching, self.dual_until
        if target is None or until is None or self.clock_ms() > until:
            return None
        return target.sock

    def send_dual(self, both, msgs: list[bytes]) -> None:
        """The same sealed messages from ``both`` too (same counters: the
        replay window delivers exactly one). ``both`` is read with the
        active socket under the lock the swap in switch_done takes: read
        apart, an ACK handled in between left a message on the old socket
        only, which the gate drops once the binding moved (a lost packet)."""
        if both is None:
            return
        try:
            send_messages(both, msgs, self.endpoint)
        except OSError:
            pass

    def switch_done(self) -> None:
        """The gateway's ACK: the chosen candidate is the active path now;
        the old one a candidate (its socket open: replies in flight to it
        still arrive). A reattach from the active socket itself keeps it."""
        now, target = self.clock_ms(), self.switching
        old_sock, old_uplink, old_health = self.sock, self.active_uplink, self.health
        with self._lock:  # one swap as Client.send_data sees it: never the old socket alone
            self.switching = self.dual_until = None
            if target is not None:  # the socket and what counts the data it sends
                self.sock, self.health = target.sock, target.health
        self.chosen_reattach = False
        self.send_failed, self.reported = False, None
        if target is None:
            self.health.rebound(now)  # a new mapping: what went to the old one is not lost
            return
        self.candidates.take(target.uplink.key)
        self.path, self.active_uplink = target.uplink.key, target.uplink
        self.health.rebound(now)
        old_health.left(old_health.volatility(now) is not None, now)
        if old_uplink is not None:
            self.candidates.adopt(old_uplink, old_sock, old_health)
        else:
            self.retired.append((now, old_sock))
        self.sockets_changed()  # the receive loop lists its sockets again
