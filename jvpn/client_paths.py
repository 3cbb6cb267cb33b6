"""Transport selection on the client (docs/protocol.md "Transport
selection"): the monitor's path step. It keeps the candidate set in step
with netlink (jvpn/client_candidates.py), measures the active path by its
heartbeats and the others by their probes (jvpn/client_path_health.py),
says when the active path goes VOLATILE and recovers, asks the selector
(jvpn/client_path_select.py) and starts the switch it chose. A mixin of
:class:`jvpn.client.Client`; the switch itself (make before break) is
jvpn/client_switch.py."""

from __future__ import annotations

import os
import select
import socket
from collections.abc import Callable

from jvpn import wire
from jvpn.client_candidates import Candidates, Uplink, candidate_socket, discover
from jvpn.client_handshake import RECV_TIMEOUT_S
from jvpn.client_path import watch_routing
from jvpn.client_path_health import PathHealth, heartbeat_every_ms
from jvpn.client_path_select import (
    REATTACH_PREFERRED,
    REATTACH_SAME,
    SWITCH,
    Active,
    Candidate,
    Decision,
    Selector,
)
from jvpn.codes import EventType, Reason, Volatility
from jvpn.gate import abi
from jvpn.policy import Policy

DISCOVER_EVERY_MS = 1_000  # candidates listed again at least this often (and on any wake)
CONFIRM_GAP_S = 0.003  # between confirmation heartbeats: not both in one burst of loss
RETIRED_KEEP_MS = 2_000  # a former active socket no longer a candidate: read this long


class ReceiveLoop:
    """The client's receive loop over the active socket, the candidates'
    and the retired (a mixin of ClientPaths: the loop's own state is
    ``socket_set_changed`` and ``select_sockets``, set by paths_init)."""

    def sockets_changed(self) -> None:
        """A socket joined or left the set the receive loop reads (a
        candidate opened or closed, a switch, a rebind): it lists them again
        at once."""
        self.socket_set_changed.signal()

    def _udp_loop(self) -> None:
        """The receive loop: every candidate's socket (replies and echoes
        are per path; a datagram's socket is known to ``receive``), and the
        wake-up a change of the set signals. It never waits on a set that
        is out of date: a new candidate's PATH_CHALLENGE (a switch's) was
        read only once the wait on the old sockets ended, up to
        RECV_TIMEOUT_S later on a silent path (issue 15)."""
        wake = self.socket_set_changed
        wake.open()
        try:
            while not self._stop.is_set():
                if self.renewing:
                    self.renew()  # Reconnect = yes: the one reader of the socket does it
                    continue
                self._receive_ready(wake)
        finally:
            wake.close()

    def _receive_ready(self, wake: Wakeup) -> None:
        socks = self.read_sockets()  # listed after the wake-up was drained: never stale
        try:
            ready, _w, _x = self.select_sockets([wake, *socks], [], [], RECV_TIMEOUT_S)
        except (OSError, ValueError):
            return  # a socket closed meanwhile: listed again
        for s in ready:
            if s is wake:
                wake.drain()
            else:
                self.receive_once(s)

    def read_sockets(self) -> list:
        """Every socket the receive loop reads: the active one, the candidates', the retired."""
        socks = [self.sock, *self.candidates.sockets(), *(s for _t, s in self.retired)]
        return list(dict.fromkeys(socks))


class ClientPaths(ReceiveLoop):
    def paths_init(self, policy: Policy, rand: Callable[[], float], tested: bool) -> None:
        """The path state (from Client.__init__); ``tested``: a test's socket
        factory, whose sockets stand for the candidates' too."""
        self.policy = policy
        self.health = PathHealth(policy, self.clock_ms())
        self.selector = Selector(policy)
        self.socket_set_changed = Wakeup()  # the receive loop's: a socket joined or left
        self.candidates = Candidates(policy, self.clock_ms, rand, self._candidate_socket,
                                     changed=self.sockets_changed)
        self.select_sockets = select.select  # the receive loop's wait (a test's, counted)
        self._tested = tested
        self.discover_uplinks: Callable[[], list[Uplink] | None] = lambda: discover(
            self.endpoint[0], self.route_plan.mark, frozenset({self.tun_name, "lo"}))
        self.active_uplink: Uplink | None = None
        self.echoes_seen = False  # the gateway echoes heartbeats (an older one does not)
        self.reported = None  # the Volatility last said in a PathVolatile, or None
        self.gateway_view: tuple[str | None, int | None] = (None, None)
        self.send_failed = False
        self.last_data_ms = -(1 << 40)
        self.last_heartbeat_ms = -(1 << 40)
        self.next_discover_ms = 0
        self.last_route = None  # the route get answer the candidates were last listed for
        self.route_followed = None  # the last route the choice acted on (_follow_unproven_route)
        self.route_move_waiting = False  # ... and one it waits for the bounds to follow
        self.retired: list[tuple[int, object]] = []  # (since ms, socket)
        self.uplinks_listed: frozenset | None = None  # the keys the last discovery found
        self.switch_init()
        self.guard_init()

    def _candidate_socket(self, uplink: Uplink):
        if self._tested:
            return self._new_socket()
        family = socket.AF_INET6 if ":" in self.endpoint[0] else socket.AF_INET
        return candidate_socket(uplink, family, self.route_plan.mark, RECV_TIMEOUT_S)

    # ------------------------------------------------------------ heartbeats
    def heartbeat_due(self, now: int) -> bool:
        """While traffic flows, every loss_window_ms / 40; idle, every keepalive."""
        every = self.heartbeat_cadence(now)
        # held while a switch's request is in flight (jvpn/client_probe_guard.py)
        return now - self.last_heartbeat_ms >= every and not self.keepalives_held(now)

    def heartbeat_cadence(self, now: int) -> int:
        flowing = now - self.last_data_ms <= self.keepalive_ms
        return heartbeat_every_ms(self.policy) if flowing else self.keepalive_ms

    def heartbeat_sending(self, msg: bytes, now: int, confirmation: bool = False) -> None:
        """A keepalive is about to leave the active socket: a sample from
        now (before the send: on a fast path its echo can be read before
        sendto returns, and an echo of a sample not yet counted is none)."""
        if self.echoes_seen:
            self.health.sent(wire.parse_header(msg).counter, now, confirmation)

    def heartbeat_sent(self, now: int, ok: bool) -> None:
        """The keepalive left (``ok``: the send did not fail)."""
        self.last_heartbeat_ms = now
        self.send_failed = not ok

    def _confirm_drops(self, now: int) -> None:
        """A run of heartbeats lost: the confirmations leave at once, a
        few ms apart (the path is dead only if they are lost too); not
        while our keepalives are held (jvpn/client_probe_guard.py)."""
        if self.keepalives_held(now):
            return
        for i in range(self.health.confirm()):
            if i and self._stop.wait(CONFIRM_GAP_S):
                return
            self._keepalive(now, confirmation=True)

    def heartbeat_heard(self, msg_type: int, payload: bytes, on_active: bool) -> None:
        """Something authenticated from the gateway arrived (``_data``)."""
        now = self.clock_ms()
        if msg_type == abi.MSG_DATA:
            self.last_data_ms = now
        if not on_active:
            return
        self.health.heard(now)
        echo = wire.parse_keepalive_echo(payload) if msg_type == abi.MSG_KEEPALIVE else None
        if echo is None:
            return
        self.echoes_seen = True
        health = self.health  # one path's: a switch may swap it meanwhile
        if health.answered(echo[0], now):  # only a fresh echo says what was delivered
            health.delivery.echoed(echo[0], echo[1], now, incarnation=echo[2])

    # ------------------------------------------------------------ the monitor's step
    def paths_step(self, now: int, route, woke: bool) -> bool:
        """Candidates, measurement, events, the choice. True if the client
        rebound (the monitor starts its step again)."""
        if route is None:
            return False  # no route at all (or a unit test): nothing to choose from
        if self.path is None:
            self.path = route
        present = True
        if woke or now >= self.next_discover_ms or route != self.last_route:
            self.last_route = route
            found = self.discover_uplinks()
            if found is None:  # netlink cannot list the uplinks: follow the route
                return self._follow_route(route)
            present = self._refresh(now, found, route)
        elif self.active_uplink is None:
            present = route == self.path  # not a listed uplink (loopback): the route is it
        self.health.tick(now)
        self._confirm_drops(now)
        self.candidates.tick(now)
        self.send_probes(now)  # jvpn/client_probe_guard.py
        why = self._volatility(now, present)
        if self.switch_busy(now, why, route) or self.renewing:
            return False
        return self._choose(now, route, why, present)

    def _follow_route(self, route) -> bool:
        if route == self.path:
            return False
        self.path = route
        self.rebind()  # today's behaviour: a fresh socket, the kernel picks the new source
        return True

    def _refresh(self, now: int, found: list[Uplink], route) -> bool:
        """Take a discovery; True if the active path is still a candidate,
        or still the route to the gateway though no uplink lists it (a
        gateway on loopback, an interface discovery does not list): then
        the route is all there is to follow, as before candidates."""
        self.next_discover_ms = now + DISCOVER_EVERY_MS
        self.uplinks_listed = frozenset(u.key for u in found)
        # a switch's target is kept while it is in flight, not once its
        # uplink is gone: kept, it stayed a candidate and was chosen again
        # and again with every send failing (issue 15)
        target = self.switching.uplink.key if self.switching else None
        keep = frozenset({target}) if target in self.uplinks_listed else frozenset()
        added, removed = self.candidates.refresh(found, self.path, route, keep)
        for u, change in [(u, "added") for u in added] + [(u, "removed") for u in removed]:
            self.events.emit(EventType.PATH_CANDIDATE, change, self.session_id,
                             interface=u.ifname, source=u.source, metric=u.metric)
        mine = [u for u in found if u.key == self.path]
        if mine and self.active_uplink is None:
            self.active_uplink = mine[0]
            self.pin_active()
        self._close_retired(now)
        return bool(mine) or route == self.path

    def _close_retired(self, now: int) -> None:
        for since, s in [r for r in self.retired if now - r[0] > RETIRED_KEEP_MS]:
            self.retired.remove((since, s))
            try:
                s.close()
            except OSError:
                pass
            self.sockets_changed()

    def probe_reply(self, sock, fields: tuple) -> None:
        """An authentic PATH_PROBE_REPLY (``_control``) that came on ``sock``."""
        probe_id, state, _flags, rx_age, _version = fields
        if self.candidates.reply(sock, probe_id, self.clock_ms()) is None:
            return
        name = abi.STATE_NAMES.get(state, str(state))
        self.gateway_view = (name, None if rx_age == wire.RX_AGE_MAX else rx_age)

    # ------------------------------------------------------------ VOLATILE
    def _volatility(self, now: int, present: bool):
        why = self.health.volatility(now, present, self.send_failed)
        if why != self.reported:
            if why is not None:
                self._path_event(EventType.PATH_VOLATILE, str(why), now, **self._detail(why, now))
            else:
                self._path_event(EventType.PATH_RECOVERED, Reason.HEALTH_RECOVERED, now)
            self.reported = why
        return why

    def _detail(self, why, now: int) -> dict:
        """A loss_threshold_exceeded of the data (heartbeats pass, data does
        not) says so: detail "data", with the data's loss."""
        if why is not Volatility.LOSS_THRESHOLD_EXCEEDED or not self.health.data_lossy(now):
            return {}
        window = self.health.window_loss(now)
        if window is not None and window > self.policy.loss_volatile_threshold:
            return {}  # the heartbeats' loss came first
        return {"detail": "data", "data_loss": round(self.health.data_loss(now), 3)}

    def _path_event(self, event: str, code: str, now: int, **extra) -> None:
        h, u = self.health, self.active_uplink
        state, rx_age = self.gateway_view
        self.events.emit(event, code, self.session_id, loss=h.window_loss(now),
                         consecutive_drops=h.consecutive_drops,
                         heartbeat_age_ms=h.heartbeat_age_ms(now), srtt_ms=round(h.rtt.srtt, 1),
                         interface=u.ifname if u else None, source=u.source if u else None,
                         gateway_state=state, gateway_rx_age_ms=rx_age, **extra)

    # ------------------------------------------------------------ the choice
    def _choose(self, now: int, route, why, present: bool) -> bool:
        if self._follow_unproven_route(now, route):
            return False
        active = Active(self.health, self.path == route, present, why)
        listed = dict(self.candidates.listed())  # the receive thread's switch_done changes it
        cands = [Candidate(k, p.health, k == route) for k, p in listed.items()]
        d = self.selector.decide(now, active, cands)
        if d.denied:
            self.events.emit(EventType.TRANSPORT_SWITCH_DENIED, Reason.TRANSPORT_SWITCH_DENIED,
                             self.session_id, detail=d.denied, reason=str(why))
        if d.action == SWITCH:
            self._selected(now, d, listed[d.target].uplink)
            self.start_switch(listed[d.target], d.reason)
        elif d.action == REATTACH_SAME:
            self._selected(now, d, self.active_uplink)
            self.reattach_chosen(f"active path {d.reason}: reattach from the same socket")
        elif d.action == REATTACH_PREFERRED:
            self._selected(now, d, None)
            self.active_uplink, self.path = None, route
            self.next_discover_ms = 0  # list again at once: the new active one is pinned
            self.rebind()
            return True
        return False

    def _selected(self, now: int, d: Decision, to: Uplink | None) -> None:
        self.selector.switched(now)
        self._path_event(EventType.PATH_SELECTED, d.reason, now, active_score=round(
            d.active_score, 3), candidate_score=round(d.target_score, 3),
            candidate_interface=to.ifname if to else None,
            candidate_source=to.source if to else None)

    def pin_active(self) -> None:
        """The active socket keeps to its uplink (jvpn/client_candidates.py pin)."""
        from jvpn.client_candidates import pin  # noqa: PLC0415

        if self.active_uplink is not None and not self._tested:
            pin(self.sock, self.active_uplink.ifname)


    def _netlink_loop(self) -> None:  # wakes the monitor on any link/address/route change
        watch_routing(self._stop, self._wake)


class Wakeup:
    """An eventfd the receive loop selects on with its sockets: ``signal``
    makes it readable, ``drain`` clears it. Open only while the loop runs
    (a client that never starts it holds no descriptor); a signal with no
    loop is nothing to do."""

    def __init__(self):
        self.fd: int | None = None

    def open(self) -> None:
        self.fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)

    def fileno(self) -> int:
        return self.fd if self.fd is not None else -1

    def signal(self) -> None:
        fd = self.fd
        if fd is not None:
            try:
                os.eventfd_write(fd, 1)
            except OSError:
                pass  # closed meanwhile: the loop is gone

    def drain(self) -> None:
        try:
            os.eventfd_read(self.fd)
        except (OSError, TypeError):
            pass  # nothing to read (another drain took it)

    def close(self) -> None:
        fd, self.fd = self.fd, None
        if fd is not None:
            os.close(fd)
