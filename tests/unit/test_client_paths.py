"""Transport selection with the real client and the in-process gateway
(jvpn/client_paths.py, jvpn/client_switch.py; docs/protocol.md "Transport
selection"): two uplinks, each a socket with its own address at the
gateway; the gateway echoes heartbeats and answers probes; a silent uplink
is left for the other within a second, a better uplink is taken with no
data lost, and a dead uplink with nothing else is reattached from the same
socket (NAT rebinding)."""

from __future__ import annotations

from collections import deque

import pytest

from jvpn import wire
from jvpn.client import Client
from jvpn.client_candidates import Uplink
from jvpn.codes import EventType
from jvpn.events import EventLog
from jvpn.gate import abi
from jvpn.gate.config import GateConfig
from jvpn.gate.userspace import UserspaceGate
from jvpn.keys import public_from_private
from kits.daemon_kit import (
    CLIENT,
    GW_KEY,
    LISTEN,
    PEER_INNER,
    PEER_KEYS,
    AdmitAll,
    Clock,
    events_of,
    ipv4,
    make_gateway,
)

UNLIMITED = dict(session_pps=0, session_bytes_per_sec=0, source_control_pps=0,
                 global_control_pps=0)  # no rate limit: the gate's control floor is the subject
WIFI = Uplink(CLIENT[0], 2, "wifi", 10)
LTE = Uplink("198.51.100.10", 3, "lte", 20)


class PathSocket:
    """One uplink's socket: what it sends reaches the gateway from its
    address unless the uplink is down; what the gateway sends to that
    address waits in its inbox."""

    def __init__(self, net: Net, addr: tuple[str, int]):
        self.net, self.addr, self.inbox, self.closed = net, addr, deque(), False
        net.socks.append(self)

    def sendto(self, msg: bytes, dst) -> int:
        assert tuple(dst) == LISTEN
        net, src = self.net, self.addr[0]
        if src in net.down:  # the link is down: the kernel refuses the send
            raise OSError(100, "Network is down")
        net.sent.append((src, msg))
        if src in net.silent or (msg[0] == abi.MSG_PATH_PROBE and src in net.no_probes):
            return len(msg)
        if msg[0] == abi.MSG_KEEPALIVE and src in net.lossy:  # every Nth heartbeat lost
            net.lossy[src][1] += 1
            if net.lossy[src][1] % net.lossy[src][0] == 0:
                return len(msg)
        arrives = net.clock.ms + net.delay.get(src, 0)
        net.log.append((arrives, src, msg))
        if arrives > net.clock.ms:  # a slow path: reaches the gateway later (Net.release)
            net.queue.append((arrives, len(net.queue), self.addr, msg))
        else:
            net.arrive(msg, self.addr)
        return len(msg)

    def recvfrom(self, _size: int):
        if not self.inbox:
            raise TimeoutError
        return self.inbox.popleft()

    def settimeout(self, _t) -> None:
        pass

    def shutdown(self, _how) -> None:
        pass

    def close(self) -> None:
        self.closed = True


class Net:
    """``delay``: ms an uplink's datagrams take to reach the gateway (its
    answers come at once: the client-to-gateway leg carries the RTT);
    ``gated``: the gateway behind the gate model (UserspaceGate: the control
    floor, the replay windows) instead of admitting everything."""

    def __init__(self, tmp_path, uplinks=(WIFI, LTE), active=WIFI,
                 delay: dict[str, int] | None = None, gated: bool = False):
        self.clock = Clock()
        gate = UserspaceGate(GateConfig(**UNLIMITED), clock_ns=lambda: self.clock.ms * 1_000_000
                             ) if gated else AdmitAll()
        self.gw = make_gateway(tmp_path, gate=gate, clock=self.clock)
        self.socks: list[PathSocket] = []
        self.silent: set[str] = set()  # uplinks that drop everything, both ways
        self.down: set[str] = set()  # uplinks whose link is down: a send fails (ENETDOWN)
        self.no_probes: set[str] = set()  # uplinks whose probes get no answer (a standby's)
        self.deaf: set[str] = set()  # uplinks whose sends arrive, the gateway's answers not
        self.lossy: dict[str, list[int]] = {}  # uplink: [N, count]: drops every Nth heartbeat
        self.sent: list[tuple[str, bytes]] = []
        self.delay, self.queue = {}, []  # queue: (due ms, seq, addr, msg)
        self.log: list[tuple[int, str, bytes]] = []  # (reaches the gateway at, source, msg)
        self.uplinks, self.route = list(uplinks), active.key
        port = iter(range(40000, 41000))
        self.events = EventLog("client-test", clock_ms=self.clock)
        def factory():  # the handshake's, a rebind's: the active uplink's address
            return PathSocket(self, (active.source, next(port)))

        self.client = c = Client(private_key=PEER_KEYS[0],
                                 gateway_public=public_from_private(GW_KEY), endpoint=LISTEN,
                                 events=self.events, clock_ms=self.clock, socket_factory=factory,
                                 rand=lambda: 0.5)
        c.handshake(attempts=1)
        c.candidates.open_socket = lambda u: PathSocket(self, (u.source, next(port)))
        c.discover_uplinks = lambda: list(self.uplinks)
        c._route = lambda: self.route
        c.path = active.key
        self.delay.update(delay or {})  # after the handshake (which waits for its answer)

    def arrive(self, msg: bytes, addr) -> None:
        n = len(self.gw.sock.sent)
        self.gw.datapath.datagram(msg, addr)
        self.collect(n)

    def release(self) -> None:
        """What the slow paths carried to the gateway by now, in arrival order."""
        due = sorted(q for q in self.queue if q[0] <= self.clock.ms)
        self.queue = [q for q in self.queue if q[0] > self.clock.ms]
        for _t, _i, addr, msg in due:
            self.arrive(msg, addr)

    def collect(self, since: int) -> None:
        for msg, to in self.gw.sock.sent[since:]:
            for s in self.socks:
                if (tuple(to) == s.addr and s.addr[0] not in self.silent | self.deaf
                        and not s.closed):
                    s.inbox.append((msg, LISTEN))

    def run(self, ms: int, data_every: int = 0) -> int:
        """The client's monitor every 10 ms for ``ms``, delivering what
        arrives; a data packet every ``data_every`` ms. Returns how many sent."""
        sent = 0
        for t in range(0, ms, 10):
            if data_every and t % data_every == 0:
                self.client.send_data(ipv4(PEER_INNER[0]))
                sent += 1
            self.release()
            self.deliver()
            self.client.monitor_step()
            self.deliver()
            self.clock.ms += 10
            self.gw.tick()
        return sent

    def deliver(self) -> None:
        """What arrived so far (an answer to what this sends waits a round)."""
        for s in list(self.socks):
            for _ in range(len(s.inbox)):
                msg, src = s.inbox.popleft()
                self.client.receive(msg, src, s)

    def active_source(self) -> str:
        return self.client.sock.addr[0]


def switch_to_lte_until_our_path_response(net: Net) -> Client:
    """Settled on Wi-Fi with data flowing, a planned switch to LTE started
    and run until our PATH_RESPONSE left LTE's socket (the gateway's binding
    moves as it arrives). Returns the client."""
    net.run(5_000)
    net.run(500, data_every=10)
    c = net.client
    c.start_switch(c.candidates.paths[LTE.key], "planned_move")
    net.sent.clear()
    for _ in range(100):
        net.run(10, data_every=10)
        if any(src == LTE.source and m[0] == abi.MSG_PATH_RESPONSE for src, m in net.sent):
            break
    return c


def test_heartbeats_are_echoed_and_candidates_probed(tmp_path):
    net = Net(tmp_path)
    net.run(3_000, data_every=10)
    c = net.client
    assert c.echoes_seen and c.health.window_loss(net.clock.ms) == 0.0
    lte = c.candidates.paths[LTE.key]
    assert lte.health.decided_count() >= 2 and lte.health.recent_loss() == 0.0
    assert [e["interface"] for e in events_of(net.events, EventType.PATH_CANDIDATE)] == ["lte"]
    assert c.gateway_view[0] == "ATTACHED"
    assert net.active_source() == WIFI.source  # nothing moved


def test_a_silent_uplink_is_left_for_the_other_within_a_second(tmp_path):
    net = Net(tmp_path)
    net.run(4_000, data_every=10)
    n = len(net.gw.tun.written)
    net.silent.add(WIFI.source)  # a blackhole: no link or route event
    start = net.clock.ms
    moved_at = None
    for _ in range(300):
        net.run(10, data_every=10)
        if net.active_source() == LTE.source and len(net.gw.tun.written) > n:
            moved_at = net.clock.ms
            break
    assert moved_at is not None and moved_at - start < 1_000
    [vol] = events_of(net.events, EventType.PATH_VOLATILE)[:1]
    assert vol["reason_code"] == "consecutive_drop_exceeded" and vol["interface"] == "wifi"
    [sel] = events_of(net.events, EventType.PATH_SELECTED)
    assert sel["candidate_interface"] == "lte"
    assert net.gw.table.get(net.client.session_id).record.binding.addr == LTE.source


def test_an_echo_read_before_sendto_returns_is_an_answer(tmp_path):
    """On a fast path the receive thread can read a heartbeat's echo before
    the monitor's sendto returns: the heartbeat is counted before it leaves
    (it was lost otherwise: 20-80 % spurious loss in the loaded lab)."""
    net = Net(tmp_path)
    net.run(1_000, data_every=10)
    sock = net.client.sock
    plain = sock.sendto

    def echo_at_once(msg, dst):
        n = plain(msg, dst)
        net.deliver()  # the receive thread won the race
        return n

    sock.sendto = echo_at_once
    net.run(3_000, data_every=10)
    assert net.client.health.window_loss(net.clock.ms) == 0.0
    assert events_of(net.events, EventType.PATH_VOLATILE) == []


def test_a_path_is_dead_only_after_five_heartbeats_lost_in_a_row(tmp_path):
    """A run of three drops, then two confirmations: the heartbeats already
    on their way after the run's, or new ones sent at once (a path slower
    than the cadence has some in flight: they confirm a loss timeout
    sooner). Random loss needs five in a row."""
    net = Net(tmp_path)
    net.run(4_000, data_every=10)
    net.silent.add(WIFI.source)
    net.sent.clear()
    for _ in range(300):
        if net.active_source() != WIFI.source:
            break
        net.run(10, data_every=10)
    wifi = [m[0] for src, m in net.sent if src == WIFI.source]
    assert wifi.count(abi.MSG_KEEPALIVE) >= 5
    [sel] = events_of(net.events, EventType.PATH_SELECTED)
    assert sel["reason_code"] == "consecutive_drop_exceeded"
    assert sel["consecutive_drops"] >= 5


def test_a_planned_move_loses_no_data(tmp_path):
    net = Net(tmp_path, uplinks=(LTE,), active=LTE)
    net.run(2_000, data_every=10)
    net.uplinks.insert(0, WIFI)
    net.route = WIFI.key  # wifi comes up with the lower metric; lte still works
    before = len(net.gw.tun.written)
    sent = net.run(8_000, data_every=2)
    assert net.active_source() == WIFI.source
    [sel] = events_of(net.events, EventType.PATH_SELECTED)
    assert sel["reason_code"] == "planned_move"
    assert len(net.gw.tun.written) - before == sent  # every one delivered, exactly once
    assert not net.client.candidates.paths[LTE.key].sock.closed  # the old one: a candidate


def test_data_sent_while_the_ack_is_handled_still_reaches_the_new_binding(tmp_path):
    """The receive thread handles the gateway's ACK (the binding moved)
    while a data message is being sent from the old socket: read apart,
    the old socket and "no second socket any more" left that message on
    the old path only, and the gate dropped it (the one echo a planned move
    lost in bench failover). Sent from both, it is delivered."""
    net = Net(tmp_path, uplinks=(LTE,), active=LTE, gated=True)
    net.run(2_000, data_every=10)
    old = net.client.sock
    raced = []

    def send_racing_the_ack(msg, dst):
        wifi = [s for s in net.socks if s.addr[0] == WIFI.source]
        acks = [(m, src) for s in wifi for m, src in s.inbox if m[0] == abi.MSG_REATTACH_ACK]
        if msg[0] == abi.MSG_DATA and acks and not raced:
            raced.append(msg)
            for s in wifi:  # the ACK handled between the send and its second copy
                for m, src in list(s.inbox):
                    s.inbox.remove((m, src))
                    net.client.receive(m, src, s)
        return PathSocket.sendto(old, msg, dst)

    old.sendto = send_racing_the_ack
    net.uplinks.insert(0, WIFI)
    net.route = WIFI.key
    before = len(net.gw.tun.written)
    sent = net.run(8_000, data_every=2)
    assert raced and net.active_source() == WIFI.source
    assert len(net.gw.tun.written) - before == sent  # the raced one too


@pytest.mark.parametrize("jump", [70, 10_000])
def test_a_control_floor_raised_far_ahead_is_passed_by_the_retries(tmp_path, jump):
    """A key holder's request ``jump`` counters ahead of ours is acted on
    (the gateway challenges its spoofed source): the gate's control floor
    is above everything the client sends. Its retries leave counters unused
    (jvpn/client_reattach.py retry_skip), so its request passes within a
    few retries, not after ``jump`` messages at a heartbeat's pace."""
    net = Net(tmp_path, uplinks=(WIFI,), active=WIFI, gated=True)
    net.run(2_000, data_every=10)
    c, keys = net.client, net.client.keys
    hdr = wire.Header(type=abi.MSG_REATTACH_REQ, session_id=c.session_id,
                      counter=c.channel.counter.upcoming + jump)
    net.arrive(wire.seal_control(hdr, keys.hdr_c2s, keys.reattach, c.seq + 1,
                                 net.clock.ms, bytes(16), c.epoch), ("203.0.113.66", 4444))
    accepted = len(events_of(net.events, "ReattachResult"))
    net.run(12_000, data_every=10)  # replies missing by 1.5 s, then 4 retries by 6 s more
    results = [e["reason_code"] for e in events_of(net.events, "ReattachResult")][accepted:]
    assert "REATTACH_ACCEPT" in results
    live = net.gw.sessions.get(c.session_id)
    assert live.record.binding.addr == WIFI.source and live.record.state.name == "ATTACHED"


def test_during_the_switch_data_leaves_from_both_sockets(tmp_path):
    net = Net(tmp_path, uplinks=(LTE,), active=LTE)
    net.run(2_000, data_every=10)
    net.uplinks.insert(0, WIFI)
    net.route = WIFI.key
    net.sent.clear()
    net.run(8_000, data_every=2)
    data = [(src, m) for src, m in net.sent if m[0] == 4]
    wifi, lte = ({m for src, m in data if src == u.source} for u in (WIFI, LTE))
    both = wifi & lte
    assert both  # the same sealed messages from both sockets: the replay window keeps one
    resp = [i for i, (_src, m) in enumerate(net.sent) if m[0] == 8]  # our PATH_RESPONSE
    first_both = min(i for i, (_src, m) in enumerate(net.sent) if m in both)
    assert resp and resp[0] < first_both
    assert len(both) < 10  # from the PATH_RESPONSE to the ACK only


def test_a_dead_path_with_no_candidate_reattaches_from_the_same_socket(tmp_path):
    net = Net(tmp_path, uplinks=(WIFI,))
    net.run(2_000, data_every=10)
    sock = net.client.sock
    net.silent.add(WIFI.source)
    net.run(600, data_every=10)
    net.silent.clear()
    net.run(1_000, data_every=10)
    assert net.client.sock is sock and net.client.reattaches >= 1
    [sel] = events_of(net.events, EventType.PATH_SELECTED)[:1]
    assert sel["reason_code"] == "consecutive_drop_exceeded"


def test_an_uplink_gone_fails_over_to_the_proven_candidate_at_once(tmp_path):
    net = Net(tmp_path)
    net.run(3_000, data_every=10)
    net.uplinks.remove(WIFI)  # link down: the route watch sees it
    net.route = LTE.key
    net.silent.add(WIFI.source)
    net.client._wake.set()
    net.run(200, data_every=10)
    assert net.active_source() == LTE.source
    [vol] = events_of(net.events, EventType.PATH_VOLATILE)[:1]
    assert vol["reason_code"] == "transport_dead"


def test_an_uplink_gone_with_nothing_proven_rebinds_on_the_new_route(tmp_path):
    net = Net(tmp_path, uplinks=(WIFI,))
    net.run(1_000, data_every=10)
    old = net.client.sock
    net.uplinks[:] = [LTE]  # wifi gone, lte just appeared: not probed yet
    net.route = LTE.key
    net.client._new_socket = lambda: PathSocket(net, (LTE.source, 45000))
    net.run(300, data_every=10)
    assert net.client.sock is not old and net.active_source() == LTE.source
    assert net.client.reattaches == 1 and net.client.path == LTE.key
    net.run(3_000, data_every=10)
    assert net.client.reattaches == 1  # once: the new socket is the active path's


def test_a_route_no_uplink_lists_is_followed_not_declared_dead(tmp_path):
    """A gateway on loopback (the cluster kit), or an interface discovery
    does not list: the route to the gateway is the active path even with
    no candidate for it. A rebind to another port (the cluster's move)
    reattaches once and then stays: no transport_dead, no rebind loop."""
    net = Net(tmp_path, uplinks=())
    net.run(1_000, data_every=10)
    net.client.rebind()
    net.run(3_000, data_every=10)
    assert net.client.reattaches == 1
    assert not events_of(net.events, EventType.PATH_VOLATILE)
    assert not events_of(net.events, EventType.PATH_SELECTED)


def test_a_route_moved_to_a_candidate_no_probe_proves_is_followed(tmp_path):
    """In an anycast cluster a candidate may land on another gateway, whose
    standby answers no probe: it is never eligible. When the OS moves its
    route there (Wi-Fi back and preferred), the client follows the route,
    make before break, as before candidates; once, not at every tick."""
    net = Net(tmp_path, uplinks=(WIFI, LTE))
    net.no_probes.update({WIFI.source, LTE.source})
    net.run(3_000, data_every=10)
    assert net.active_source() == WIFI.source
    net.route = LTE.key  # the OS now prefers LTE; wifi still works
    net.client._wake.set()
    net.run(1_000, data_every=10)
    assert net.active_source() == LTE.source and net.client.reattaches == 1
    [sel] = events_of(net.events, EventType.PATH_SELECTED)
    assert sel["reason_code"] == "planned_move"
    net.run(5_000, data_every=10)
    assert net.client.reattaches == 1  # followed once


def test_a_switch_with_nowhere_else_to_go_is_not_abandoned(tmp_path):
    """Wi-Fi gone, the route on LTE, whose gateway answers nothing for 5 s
    (a cluster's takeover waits out the dead owner's lease): the switch's
    own retries go on until it is answered, one switch, not one started
    over every 3 s."""
    net = Net(tmp_path)
    net.no_probes.add(LTE.source)
    net.run(3_000, data_every=10)
    net.uplinks.remove(WIFI)
    net.route = LTE.key
    net.silent.update({WIFI.source, LTE.source})
    net.client._wake.set()
    net.run(5_000, data_every=10)
    net.silent.discard(LTE.source)
    net.run(3_000, data_every=10)
    assert net.active_source() == LTE.source and net.client.reattaches == 1
    assert len(events_of(net.events, EventType.PATH_SELECTED)) == 1


def test_a_reattach_in_flight_when_the_route_moves_is_dropped_for_the_route(tmp_path):
    """The active path died (the gateway fenced, SIGSTOP), nothing proven:
    a reattach from the same socket is in flight; then its uplink goes
    down and the OS routes by LTE, which no probe proves (a cluster's
    standby): the reattach is dropped at once and the route followed."""
    net = Net(tmp_path)
    net.no_probes.add(LTE.source)
    net.run(3_000, data_every=10)
    net.silent.add(WIFI.source)
    net.run(1_000, data_every=10)
    assert net.client.pending is not None  # the same-socket reattach, unanswered
    net.uplinks.remove(WIFI)
    net.route = LTE.key
    net.client._wake.set()
    net.run(2_000, data_every=10)  # the cooldown since the same-socket reattach, then the move
    assert net.active_source() == LTE.source


@pytest.mark.parametrize("delay", [30, 150])
def test_a_route_moved_to_the_switch_target_does_not_abandon_the_switch(tmp_path, delay):
    """A switch to LTE (``delay`` ms) is in flight; the OS then moves its route to
    LTE too (the very target): the switch completes, not dropped after our
    PATH_RESPONSE moved the gateway's binding (review r14c F1)."""
    net = Net(tmp_path, gated=True, delay={LTE.source: delay})
    c = switch_to_lte_until_our_path_response(net)
    net.route = LTE.key
    n0, sent = len(net.gw.tun.written), net.run(600, data_every=10)
    net.run(300)  # what is still on its way on LTE
    attempts = events_of(net.events, "ReattachAttempt")
    binding = net.gw.table.get(c.session_id).record.binding.addr
    assert net.active_source() == LTE.source == binding
    assert len(attempts) == 1
    assert len(net.gw.tun.written) - n0 == sent  # nothing lost


def test_lost_probes_are_forgotten(tmp_path):
    """Probes lost for good (an attacker on LTE drops them, or a standby that
    answers none) are not remembered forever: the id map stays bounded
    (review r14c F2)."""
    net = Net(tmp_path)
    net.no_probes.add(LTE.source)
    net.run(150_000)
    probe_of = net.client.candidates._probe_of
    assert len(probe_of) <= 64


# ------------------------------------------------------------ what a probe must not overtake
def probes_on(net: Net, uplink: Uplink) -> list[bytes]:
    return [m for src, m in net.sent if src == uplink.source and m[0] == abi.MSG_PATH_PROBE]


def overtaken(net: Net) -> list[tuple[int, int, str, int]]:
    """(arrival, counter, source, type) of every keepalive or control
    message that reached the gateway after one with a higher counter from
    another path did: the gate's control floor drops it as a replay."""
    seen = [(t, int.from_bytes(m[16:24], "little"), src, m[0]) for t, src, m in net.log
            if m[0] != abi.MSG_DATA]
    return [(t, c, src, k) for t, c, src, k in seen
            if any(t2 < t and c2 > c and s2 != src for t2, c2, s2, _k in seen)]


@pytest.mark.parametrize("rtt", [150, 300])
def test_candidates_are_probed_while_the_active_rtt_exceeds_the_heartbeat_cadence(
        tmp_path, rtt):
    """Traffic flows on an active path slower than the heartbeat cadence
    (LTE, satellite, or an attacker adding delay): a heartbeat is always in
    flight, and a probe leaves when due all the same (it raises no control
    floor: issue 14). The candidate (as slow: nothing moves) is probed
    about once a second, its probes answered."""
    net = Net(tmp_path, delay={WIFI.source: rtt, LTE.source: rtt})
    net.run(10_000, data_every=10)
    assert len(probes_on(net, LTE)) >= 5
    lte = net.client.candidates.paths[LTE.key].health
    assert lte.decided_count() >= 5 and lte.recent_loss() == 0.0


@pytest.mark.parametrize("rtt", [150, 300])
def test_a_delaying_attacker_on_the_active_uplink_does_not_pin_the_client_to_it(
        tmp_path, rtt):
    """An on-path attacker adds ``rtt`` ms to the active uplink and passes
    everything: the clean LTE path scores far better, is probed, and the
    selector moves to it (a planned move)."""
    net = Net(tmp_path, delay={WIFI.source: rtt})
    net.run(30_000, data_every=10)
    assert net.active_source() == LTE.source
    assert [e["candidate_interface"] for e in events_of(net.events, EventType.PATH_SELECTED)
            ] == ["lte"]


def probes_overtaking(net: Net, kinds: set[int]) -> list:
    """Probes that reached the gateway before a message of ``kinds`` with a
    lower counter from another path (the floor used to drop that one)."""
    seen = [(t, int.from_bytes(m[16:24], "little"), src, m[0]) for t, src, m in net.log
            if m[0] != abi.MSG_DATA]
    return [(t, c) for t, c, src, k in seen if k == abi.MSG_PATH_PROBE and any(
        t < t2 and c > c2 and s2 != src and k2 in kinds for t2, c2, s2, k2 in seen)]


def test_a_reattach_on_a_slow_path_is_not_killed_by_a_fast_candidates_probe(tmp_path):
    """The gate model behind the gateway: a reattach from the active socket
    (200 ms to the gateway) while the fast LTE candidate's probe is due.
    The probe leaves at once (no hold any more) and reaches the gateway
    first; it raises no control floor (issue 14), so the request is not
    dropped as a replay: the one request is answered."""
    net = Net(tmp_path, gated=True)
    net.run(3_000)
    c = net.client
    net.delay[WIFI.source] = 200  # now, before any move: the selector is not the subject
    c.candidates.paths[LTE.key].next_probe_ms = net.clock.ms  # due now
    replays, probed = replay_drops(net), len(probes_on(net, LTE))
    net.log.clear()
    c.reattach_chosen("test: a NAT rebinding")
    net.run(500)  # the request reaches the gateway at 200 ms, the ACK comes by 400 ms
    assert len(probes_on(net, LTE)) > probed  # the due probe did not wait
    assert probes_overtaking(net, {abi.MSG_REATTACH_REQ})  # ... and overtook the request
    assert replay_drops(net) == replays
    assert [e["reason_code"] for e in events_of(net.events, "ReattachResult")] == [
        "REATTACH_ACCEPT"]
    assert len(events_of(net.events, "ReattachAttempt")) == 1


def test_a_rekey_request_on_a_slow_path_is_not_killed_by_a_fast_candidates_probe(tmp_path):
    """The same for our REKEY_INIT: a probe leaves while the attempt is
    pending, overtakes it, and the request is still answered."""
    net = Net(tmp_path, gated=True)
    net.run(3_000)
    c = net.client
    net.delay[WIFI.source] = 200
    c.candidates.paths[LTE.key].next_probe_ms = net.clock.ms
    replays, probed = replay_drops(net), len(probes_on(net, LTE))
    net.log.clear()
    c.start_rekey()
    net.run(150)  # the request reaches the gateway at 200 ms
    assert c.rekeying.pending is not None and len(probes_on(net, LTE)) > probed
    net.run(150)
    assert probes_overtaking(net, {abi.MSG_REKEY_INIT})
    assert replay_drops(net) == replays
    assert c.rekeying.pending is None  # answered (taken or refused: the gateway heard it)


def replay_drops(net: Net) -> int:
    return net.gw.gate.model.counters[abi.R_DROP_REPLAY][0]


def test_heartbeats_of_a_stalled_path_overtaken_by_probes_still_arrive(tmp_path):
    """The active path stalls (1.5 s to the gateway): its heartbeats pass
    their loss timeout but are still on their way. Probes on LTE overtake
    them (nothing holds a probe now), and the gate still passes every one
    of them: a probe raises no control floor, so delay is not made loss."""
    net = Net(tmp_path, gated=True)
    net.run(3_000)
    net.delay[WIFI.source] = 1_500
    replays = replay_drops(net)
    net.log.clear()
    net.run(3_500)
    assert probes_overtaking(net, {abi.MSG_KEEPALIVE})
    assert replay_drops(net) == replays


# ------------------------------------------------------------ what our keepalives must not overtake
@pytest.mark.parametrize(("reason", "lossy"), [("planned_move", 0),
                                               ("loss_threshold_exceeded", 3)])
def test_a_move_to_a_slower_candidate_completes_while_the_old_path_works(
        tmp_path, reason, lossy):
    """The gate model behind the gateway; the chosen candidate is 150 ms
    slower than the active path, which still works and carries traffic.
    Heartbeats leave the old socket every 50 ms: one sent after our
    REATTACH_REQ or PATH_RESPONSE reached the gateway first, raised the
    control floor, and the gate dropped our request or response as a
    replay, every retry again (the switch never completed). They wait for
    the answer now: the switch completes at the first try. ``lossy``: the
    old path loses every third heartbeat (a loss-driven move); the switch
    is started as the selector starts it (the choice is not the subject)."""
    net = Net(tmp_path, gated=True, delay={LTE.source: 150})
    net.run(5_000)  # idle (a heartbeat every keepalive): lte's probes answered
    if lossy:
        net.lossy[WIFI.source] = [lossy, 0]
    net.run(500, data_every=10)
    c = net.client
    assert c.candidates.paths[LTE.key].health.decided_count() >= 3
    c.start_switch(c.candidates.paths[LTE.key], reason)
    net.log.clear()
    net.run(1_000, data_every=10)
    assert net.active_source() == LTE.source
    assert [e["reason_code"] for e in events_of(net.events, "ReattachResult")] == [
        "REATTACH_ACCEPT"]
    assert len(events_of(net.events, "ReattachAttempt")) == 1
    ours = {abi.MSG_REATTACH_REQ, abi.MSG_PATH_RESPONSE}
    assert [k for *_x, k in overtaken(net) if k in ours] == []
    assert overtaken(net) == [], overtaken(net)


@pytest.mark.parametrize("slower", [80, 200])
def test_probes_on_a_slower_candidate_are_answered_while_data_flows(tmp_path, slower):
    """Traffic flows (a heartbeat every 50 ms on the fast active path); the
    candidate is ``slower`` ms slower: every probe is overtaken by
    heartbeats sealed after it. The gate used to drop such a probe as a
    replay of the heartbeats' control floor (a probe in flight held the
    heartbeats two cadences, 100 ms: a candidate 200 ms slower still lost
    its probes and looked lossy). A probe is checked against its own
    window now: every one is answered, and no heartbeat waits for one."""
    net = Net(tmp_path, gated=True, delay={LTE.source: slower})
    net.run(10_000, data_every=10)
    lte = net.client.candidates.paths[LTE.key].health
    assert len(probes_on(net, LTE)) >= 5
    assert lte.decided_count() >= 5 and lte.recent_loss() == 0.0
    assert any(k == abi.MSG_PATH_PROBE for *_x, k in overtaken(net))  # and answered
    assert replay_drops(net) == 0
    assert net.client.health.window_loss(net.clock.ms) == 0.0


# ------------------------------------------------------------ a captured probe replayed
USB = Uplink("192.0.2.30", 4, "usb", 30)


def rate_drops(net: Net) -> int:
    return net.gw.gate.model.counters[abi.R_DROP_RATE_SESSION][0]


def test_replays_of_a_captured_probe_do_not_make_a_candidate_look_lossy(tmp_path):
    """A man-on-the-side on LTE captured one of the client's probes and
    replays it 50 times a second from its own address while the session is
    idle (the probe's counter stays fresh in the window). The gate used to
    pass the replays (no floor for probes), they spent the session's probe
    bucket (10/s), and the client's own probes died as rate_session: LTE
    looked lossy, and a blackhole failover (which needs a candidate that
    answered its last probe) never happened. The daemon raises the gate's
    probe floor to each probe it verified now: the replays die as replays."""
    net = Net(tmp_path, gated=True)
    net.run(3_000)
    [captured, *_] = probes_on(net, LTE)
    replays, rated = replay_drops(net), rate_drops(net)
    for _ in range(500):  # 10 s
        net.arrive(captured, ("203.0.113.66", 4444))
        net.run(20)
    lte = net.client.candidates.paths[LTE.key].health
    assert lte.decided_count() >= 5 and lte.recent_loss() == 0.0
    assert lte.last_answered is True
    assert rate_drops(net) == rated and replay_drops(net) - replays == 500


def test_one_probe_in_flight_while_every_candidate_is_probed_each_interval(tmp_path,
                                                                          monkeypatch):
    """Two candidates, USB 200 ms slower, data flowing: a probe leaves only
    once the last one was answered or lost (one that overtook another would
    have the other die at the probe floor), and each candidate is still
    probed about every probe_interval_ms, every probe answered."""
    net = Net(tmp_path, uplinks=(WIFI, LTE, USB), gated=True, delay={USB.source: 200})
    outstanding = []  # probes outstanding as each probe leaves (itself included)
    cands = net.client.candidates
    plain = PathSocket.sendto

    def counting(sock, msg, dst):
        if msg[0] == abi.MSG_PATH_PROBE:
            outstanding.append(sum(len(p.probes) for p in cands.paths.values()))
        return plain(sock, msg, dst)

    monkeypatch.setattr(PathSocket, "sendto", counting)
    net.run(10_000, data_every=10)
    assert outstanding and set(outstanding) == {1}
    for u in (LTE, USB):
        health = cands.paths[u.key].health
        assert len(probes_on(net, u)) >= 9, u
        assert health.decided_count() >= 9 and health.recent_loss() == 0.0, u
    assert replay_drops(net) == 0


def test_idle_probes_on_a_slower_candidate_are_answered(tmp_path):
    """Idle (a heartbeat every keepalive), a candidate 150 ms slower: a
    heartbeat falling due while a probe is in flight overtakes it and the
    probe is answered all the same (a probe used to wait for that heartbeat)."""
    net = Net(tmp_path, gated=True, delay={LTE.source: 150})
    net.run(5_000)
    lte = net.client.candidates.paths[LTE.key].health
    assert lte.decided_count() >= 3 and lte.recent_loss() == 0.0
    assert replay_drops(net) == 0


def test_a_switch_whose_uplink_went_down_after_our_path_response_is_given_up(tmp_path):
    """A switch to LTE: our PATH_RESPONSE left (the gateway's binding moves
    to LTE), then LTE goes down, its ACK lost with it. The switch is given
    up (its uplink is no longer listed) and the client reattaches from
    Wi-Fi, instead of keeping a dead switch until the gateway's recovery
    window ran out (issue 15: ~7 s without data)."""
    net = Net(tmp_path, gated=True, delay={LTE.source: 30})
    c = switch_to_lte_until_our_path_response(net)
    assert c.dual_until is not None  # our PATH_RESPONSE is on its way
    net.uplinks.remove(LTE)
    net.silent.add(LTE.source)  # the ACK and all that follows to LTE: lost
    c._wake.set()
    net.run(3_000, data_every=10)
    binding = net.gw.table.get(c.session_id).record.binding.addr
    assert c.switching is None and binding == WIFI.source == net.active_source()
    n0, sent = len(net.gw.tun.written), net.run(500, data_every=10)
    assert len(net.gw.tun.written) - n0 == sent  # data flows again


def test_a_candidate_whose_late_probe_was_overtaken_is_proven_again_at_once(tmp_path):
    """Review D: LTE's probe is delayed past its loss timeout (a spike) and
    counted lost; USB's probe (it reaches the gateway, its answers do not
    come back) went next and raised the gate's probe floor past LTE's, so
    the late probe died at the gate and LTE stayed unproven. The active
    path blackholed then: the selector reattached on the dead path and the
    switch waited ~3 s. A probe counted lost is followed by the next one on
    the same candidate first (it cannot overtake the late one): LTE is
    proven again and the failover to it takes under a second."""
    net = Net(tmp_path, uplinks=(WIFI, LTE, USB), gated=True)
    net.deaf.add(USB.source)
    net.run(3_000, data_every=10)
    lte = net.client.candidates.paths[LTE.key]
    assert lte.health.last_answered is True and not lte.health.lost_late
    net.delay[LTE.source] = 1_500  # the spike: LTE's next probe only
    sent = len(probes_on(net, LTE))
    for _ in range(300):
        if len(probes_on(net, LTE)) > sent:
            break
        net.run(10, data_every=10)
    net.delay[LTE.source] = 0
    for _ in range(300):
        if lte.health.lost_late:  # counted lost (its follow-up may be answered already)
            break
        net.run(10, data_every=10)
    assert len(probes_on(net, LTE)) > sent and lte.health.lost_late
    net.silent.add(WIFI.source)  # a blackhole: no link or route event
    start, moved_at = net.clock.ms, None
    for _ in range(400):
        net.run(10, data_every=10)
        if net.active_source() == LTE.source:
            moved_at = net.clock.ms
            break
    assert moved_at is not None and moved_at - start < 1_000, moved_at and moved_at - start
    [sel] = events_of(net.events, EventType.PATH_SELECTED)
    assert sel["candidate_interface"] == "lte"


def lte_down_after_our_path_response(net: Net) -> Client:
    """A switch to LTE whose PATH_RESPONSE moved the gateway's binding to
    LTE; its ACK lost, and then LTE's link goes down (not listed, its sends
    fail, the gateway's answers to it lost): bench handoff trial 180."""
    c = switch_to_lte_until_our_path_response(net)
    net.deaf.add(LTE.source)  # the ACK: lost
    for _ in range(20):
        if net.gw.table.get(c.session_id).record.binding.addr == LTE.source:
            break
        net.run(10, data_every=10)
    assert net.gw.table.get(c.session_id).record.binding.addr == LTE.source
    assert c.dual_until is not None and c.pending is not None  # its answer unknown
    net.uplinks.remove(LTE)
    net.down.add(LTE.source)
    net.silent.add(LTE.source)
    c.monitor_step(woke=True)  # netlink's wake-up
    return c


def ms_until_data_flows(net: Net, limit_ms: int = 3_000) -> int:
    """From now, ms until a data packet sent from then on reaches the gateway."""
    start = net.clock.ms
    while net.clock.ms - start < limit_ms:
        n0 = len(net.gw.tun.written)
        net.run(10, data_every=10)
        if len(net.gw.tun.written) > n0:
            return net.clock.ms - start
    return limit_ms


def test_a_switch_target_gone_is_no_candidate_and_the_binding_is_moved_back(tmp_path):
    """Issue 15, bench handoff trial 180: the gateway's binding moved to an
    uplink that then went down, its ACK lost. The client used to keep the
    dead uplink as a candidate (the switch in flight kept it listed) and
    chose it again every tick, each request failing to leave, for 1.2 s.
    Now the gone uplink is dropped, and once the active path loses
    heartbeats the same request leaves the active socket: the gateway
    validates that transport and moves its binding back (its "move back",
    docs/protocol.md), within a few hundred ms."""
    net = Net(tmp_path, gated=True, delay={LTE.source: 30})
    c = lte_down_after_our_path_response(net)
    assert LTE.key not in c.candidates.paths  # a down uplink is no candidate
    took = ms_until_data_flows(net)
    binding = net.gw.table.get(c.session_id).record.binding.addr
    assert binding == WIFI.source == net.active_source()
    assert took <= 300, took  # main: 1.8 s
    attempts = events_of(net.events, "ReattachAttempt")
    assert len(attempts) == 1  # the one switch; no new one to the dead uplink
    assert not [e for e in events_of(net.events, EventType.PATH_SELECTED)
                if e.get("candidate_interface") == "lte"][1:]
    # the move back is the gateway's own validation of our retry (docs/
    # invariants.md S3 item 6), not a refusal of a spent epoch
    assert not [e for e in events_of(net.gw.events, "ReattachResult") if not e["accepted"]]


def requests_from(net: Net, source: str) -> list[bytes]:
    return [m for src, m in net.sent if src == source and m[0] == abi.MSG_REATTACH_REQ]


def test_a_request_that_could_not_leave_is_sent_at_the_next_tick(tmp_path):
    """Issue 15, trial 181: a switch's request sealed while its uplink's
    send still fails (the link just came up, no route yet) used to wait for
    its first retry (RETRY_BASE_MS with jitter: it left 304 ms late). A copy
    that did not leave is no try: it is sent again at the next tick."""
    net = Net(tmp_path)
    net.run(3_000, data_every=10)
    c = net.client
    net.down.add(LTE.source)
    c.start_switch(c.candidates.paths[LTE.key], "planned_move")
    assert c.pending is not None and not requests_from(net, LTE.source)
    net.down.discard(LTE.source)
    net.run(20, data_every=10)
    assert requests_from(net, LTE.source)  # main: only after ~300 ms
    assert c.pending is None or c.pending.tries == 0
    net.run(200, data_every=10)
    assert net.active_source() == LTE.source


def test_a_late_ack_of_an_earlier_request_gives_the_epoch_the_next_one_names(tmp_path):
    """Issue 15, trial 181: the ACK of a switch the gateway made arrived
    1.2 s late (held while its uplink was down), after the client had moved
    on to a new request, and was ignored; the new request then named the
    spent epoch: refused FRESHNESS_INVALID (a SEC_REPLAY_ATTEMPT at the
    gateway) and one more round trip. An authentic ACK of an earlier
    request of ours gives the epoch its switch moved to."""
    net = Net(tmp_path, gated=True, delay={LTE.source: 30})
    c = switch_to_lte_until_our_path_response(net)
    epoch = c.epoch
    net.deaf.add(LTE.source)  # the ACK is held: delivered late, below
    n = len(net.gw.sock.sent)
    net.run(40)
    [ack] = [(m, to) for m, to in net.gw.sock.sent[n:] if m[0] == abi.MSG_REATTACH_ACK]
    assert net.gw.table.get(c.session_id).record.binding.addr == LTE.source
    net.run(1_600)  # past the gateway's switch_cooldown_ms (our retries' ACKs: lost too)
    net.down.add(LTE.source)  # its link went down and comes back: a new request
    c.start_reattach("refused: a new request")
    net.deaf.discard(LTE.source)
    lte_sock = c.switching.sock
    c.receive(ack[0], LISTEN, lte_sock)  # the late ACK, for the earlier request
    assert c.epoch == epoch + 1
    net.down.discard(LTE.source)
    net.run(300, data_every=10)
    assert c.pending is None and c.epoch == epoch + 2
    assert not [e for e in events_of(net.gw.events, "ReattachResult") if not e["accepted"]]
