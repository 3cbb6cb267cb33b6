"""The client agent: handshake, TUN, keepalives, path-change detection,
reattach, and rekeys when the gateway asks (jvpn/client_rekey.py). It
never starts a new session silently: when the gateway ended
the session (its authenticated TERMINATE or refusal) or has presumably
forgotten it (no authenticated answer for OrphanTimeout:
jvpn/client_orphan.py), it reports why and stops; ``client up`` exits
non-zero (or, with Reconnect, starts a new session and says so).

Path changes are noticed three ways:
  - the route to the gateway changes (netlink events: an uplink went down, an
    address moved): reattach at once from the new path;
  - the gateway flags its keepalive replies (it saw us go quiet: VOLATILE);
  - replies stop for more than ``max_missed`` keepalive intervals (a NAT
    rebinding changes our source port behind our back).
"""

from __future__ import annotations

import ipaddress
import random
import socket
import threading
from collections.abc import Callable

from jvpn import client_clock, pathmtu
from jvpn.backoff import Backoff
from jvpn.client_handshake import RECV_TIMEOUT_S, ClientError, ClientHandshake
from jvpn.client_monitor_guard import ClientMonitorGuard
from jvpn.client_orphan import OrphanWatch
from jvpn.client_path import PathSize, PathSizing, route_to
from jvpn.client_paths import ClientPaths
from jvpn.client_probe_guard import ClientProbeGuard
from jvpn.client_reattach import ClientReattach, PendingReattach
from jvpn.client_rekey import ClientRekey
from jvpn.client_renew import ClientRenew
from jvpn.client_routes import ClientRouting, RouteError, RoutePlan
from jvpn.client_switch import ClientSwitch
from jvpn.codes import EventType, Reason, Security
from jvpn.config import (
    DEFAULT_ORPHAN_TIMEOUT_MS,
    HANDSHAKE_BASE_MS,
    HANDSHAKE_CAP_MS,
    RETRY_BASE_MS,
    RETRY_CAP_MS,
)
from jvpn.events import EventLog
from jvpn.gate import abi
from jvpn.handshake import Assignment
from jvpn.keys import SessionKeys
from jvpn.policy import Policy, default_policy
from jvpn.session import Transport, canonical_ip
from jvpn.tunnel import FLAG_FRAGMENT, TUN_MTU, DataChannel, Tun, send_messages

# what the client hears from the gateway besides data and keepalives
CONTROL_TYPES = frozenset({abi.MSG_PATH_CHALLENGE, abi.MSG_REATTACH_ACK, abi.MSG_REATTACH_REJECT,
                           abi.MSG_TERMINATE, abi.MSG_REKEY_RESP, abi.MSG_REKEY_REJECT,
                           abi.MSG_PATH_PROBE_REPLY})


def udp_socket(family: socket.AddressFamily = socket.AF_INET) -> socket.socket:
    """The client's outer socket, in the family of the gateway's endpoint."""
    s = socket.socket(family, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    s.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", 0))
    s.settimeout(RECV_TIMEOUT_S)  # once: settimeout is a syscall, not per packet
    return s


def endpoint_socket(endpoint: tuple[str, int]) -> socket.socket:
    """A new outer socket (at start, and at each rebind) in the family of
    the gateway's endpoint: an IPv6 gateway needs an AF_INET6 socket."""
    v6 = ipaddress.ip_address(endpoint[0]).version == 6
    return udp_socket(socket.AF_INET6 if v6 else socket.AF_INET)


def marked(factory: Callable[[], socket.socket], mark: int | None) -> Callable[[], socket.socket]:
    """``factory`` whose sockets carry SO_MARK ``mark`` (a full tunnel's outer
    socket: its datagrams skip the tunnel's table). Every socket, so a rebind's
    new one too; a mark the kernel refuses fails loudly, never unmarked."""
    if mark is None:
        return factory

    def make() -> socket.socket:
        s = factory()
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, mark)
        except OSError as e:
            s.close()
            raise ClientError(f"cannot mark the outer socket (SO_MARK {mark:#x}): {e.strerror}"
                              " (needs CAP_NET_ADMIN)", key="FwMark") from None
        return s
    return make


class StrangerDrops:
    """Datagrams that did not come from the gateway's address and port,
    dropped unread. Counted here (the agent reports the total at exit) and
    in the event log's per-interval summary of unauthenticated rejections,
    so a flood costs one summary line per interval, not a line per datagram."""

    def __init__(self, events: EventLog, session_id: Callable[[], int]):
        self.events, self.session_id = events, session_id
        self.total = 0

    def drop(self, src: tuple) -> None:
        self.total += 1  # one writer: the thread that reads the socket
        self.events.emit_unauthenticated(
            EventType.SECURITY_EVENT, Security.SEC_ABUSE_CONTROL_PLANE,
            Transport(src[0], src[1]), self.session_id(),
            detail="not from the gateway's address and port: dropped unread")


def tun_addresses(a: Assignment, host_only: bool, endpoint: str):
    """The TUN's (inner, inner6): host addresses when AllowedIPs route. A
    ClientError if the gateway's address is inside a network the TUN would
    have: that prefix route would send the outer datagrams into the tunnel."""
    inner, inner6 = a.client_inner, a.client_inner6
    if host_only:
        inner = ipaddress.ip_interface(f"{inner.ip}/{inner.max_prefixlen}")
        inner6 = inner6 and ipaddress.ip_interface(f"{inner6.ip}/{inner6.max_prefixlen}")
    gw = ipaddress.ip_address(endpoint)
    for net in (i.network for i in (inner, inner6) if i is not None):
        if gw.version == net.version and gw in net:
            raise ClientError(f"the gateway's endpoint {gw} is inside the tunnel's own "
                              f"network {net} (assigned by the gateway): its datagrams "
                              "would be routed into the tunnel; not brought up",
                              key="Endpoint")
    return inner, inner6


class Client(ClientHandshake, ClientReattach, ClientRekey, ClientRenew, ClientPaths, ClientSwitch,
             ClientProbeGuard, PathSizing, ClientMonitorGuard):
    def __init__(self, *, private_key: bytes, gateway_public: bytes, endpoint: tuple[str, int],
                 events: EventLog, tun_name: str = "jvpn0", keepalive_ms: int = 500,
                 max_missed: int = 3, retry_ms: int = RETRY_BASE_MS,
                 clock_ms: Callable[[], int] | None = None,
                 wall_ms: Callable[[], int] | None = None,
                 socket_factory: Callable[[], socket.socket] | None = None, tun_mtu: int = TUN_MTU,
                 route_plan: RoutePlan | None = None, path_mtu: int | None = None,
                 orphan_timeout_ms: int = DEFAULT_ORPHAN_TIMEOUT_MS,
                 rand: Callable[[], float] | None = None,
                 progress: Callable[[str], None] | None = None,
                 notice: Callable[[str], None] | None = None, reconnect: bool = False,
                 policy: Policy | None = None):
        self.private_key, self.gateway_public = private_key, gateway_public
        self.endpoint = endpoint
        self.tun_mtu, self.size = tun_mtu, PathSize(pathmtu.family_of(self._endpoint[0]), path_mtu)
        self.route_plan = route_plan or RoutePlan(None, ())  # jvpn.client_routes
        self.routes = ClientRouting(tun_name, self.route_plan)
        self._new_socket = marked(socket_factory or (lambda: endpoint_socket(self._endpoint)),
                                  self.route_plan.mark)
        self.events = events
        self.tun_name = tun_name
        self.keepalive_ms, self.max_missed, self.retry_ms = keepalive_ms, max_missed, retry_ms
        self.clock_ms = clock_ms or client_clock.timer_ms  # timers (jvpn/client_clock.py)
        self.wall_ms = wall_ms or clock_ms or client_clock.wall_ms  # a test's clock_ms: both
        jitter = {"rand": rand} if rand is not None else {}
        self.retry = Backoff(retry_ms, max(retry_ms, RETRY_CAP_MS), **jitter)
        self.handshake_wait = Backoff(HANDSHAKE_BASE_MS, HANDSHAKE_CAP_MS, **jitter)
        self.orphan = OrphanWatch(orphan_timeout_ms, self.clock_ms())
        self.progress = progress or (lambda _line: None)  # on a terminal only
        self.notice = notice or (lambda _line: None)  # always said (a new session)
        self.reconnect, self.renewing, self.renewals = reconnect, False, 0
        self.ended: str | None = None  # why the session ended, one line (with ``failed``)
        self.gateway_ended = False  # the gateway's authenticated word ended it
        self.said_goodbye = False  # our TERMINATE went out (once)
        self.drops = StrangerDrops(events, lambda: self.session_id)
        self.sock = self._new_socket()
        self.assignment: Assignment | None = None
        self.keys: SessionKeys | None = None
        self.channel: DataChannel | None = None
        self.tun: Tun | None = None
        self.epoch = self.seq = 0  # reattach: the switch epoch known, the last request's seq
        self.pending: PendingReattach | None = None
        self.rekey_reset()  # no rekey attempt (jvpn/client_rekey.py)
        self.retry_at: int | None = None  # a new request after a refusal that allows one
        self.last_rx_ms = 0
        self.path = None  # (source address, interface index) of the route to the gateway
        self.reattaches = 0
        self.failed: str | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._threads: list[threading.Thread] = []
        self.on_reattached: Callable[[], None] | None = None
        self.paths_init(policy or default_policy(), rand or random.random,  # client_paths.py
                        tested=socket_factory is not None)

    @property
    def endpoint(self) -> tuple[str, int]:
        """The gateway's address and port, in the form recvfrom reports a source."""
        return self._endpoint

    @endpoint.setter
    def endpoint(self, value: tuple[str, int]) -> None:
        host, port = value
        self._endpoint = (canonical_ip(str(ipaddress.ip_address(host))), int(port))

    @property
    def session_id(self) -> int:
        return self.assignment.session_id if self.assignment else 0

    # ------------------------------------------------------------ lifecycle
    def up(self, with_tun: bool = True) -> Assignment:
        a = self.handshake()
        if with_tun:
            self.progress(f"session {a.session_id:016x}: TUN {self.tun_name}, routes")
            self._tun_up(a)
        self.path = self._route()
        loops = [self._udp_loop, self._monitor_loop, self._netlink_loop]
        if with_tun:
            loops.append(self._tun_loop)
        for target in loops:
            t = threading.Thread(target=target, name=target.__name__, daemon=True)
            t.start()
            self._threads.append(t)
        return a

    def _tun_up(self, a: Assignment) -> None:
        """The TUN and its routes; with AllowedIPs, host addresses: only they are routed."""
        inner, inner6 = tun_addresses(a, bool(self.route_plan.ops), self.endpoint[0])
        self.tun = Tun(self.tun_name)
        self.tun.configure(str(inner.ip), inner.network.prefixlen, self.tun_mtu, inner6)
        try:
            self.routes.apply([str(i.ip) for i in (inner, inner6) if i is not None])
        except RouteError as e:
            raise ClientError(f"cannot install the client's routes: {e}",
                              key="AllowedIPs") from None

    def stop(self) -> None:  # signal-safe: the loops end; down() closes and undoes, later
        self._stop.set()
        self._wake.set()

    def down(self) -> list[str]:
        """Stop, tell the gateway (an authenticated TERMINATE, unless it ended
        the session), remove the routes, rules and firewall table, close the
        socket and the TUN. Idempotent. Returns what could not be removed
        (one line each)."""
        self.stop()
        self.join_loops()
        self.send_terminate()  # before the routes go: a full tunnel's mark still routes it
        left = self.routes.undo()  # first: no packet is routed into a closing tunnel
        for s in self.read_sockets():  # the active one, the candidates', the retired
            try:
                s.close()
            except OSError:
                pass
        if self.tun:
            self.tun.close()
        return left

    def wait(self) -> str | None:
        """Block until stopped; the failure reason, if any. The gateway is
        told at once (our TERMINATE), before the teardown's hooks run."""
        while not self._stop.wait(0.5):
            pass
        self.join_loops()
        self.send_terminate()
        return self.failed

    # ------------------------------------------------------------ sending
    def send_data(self, packet: bytes) -> None:
        with self._lock:  # nothing sealed after our TERMINATE's counter (join_loops)
            if self.said_goodbye:
                return
            msgs = self.channel.seal_packet(packet)
            active, dual = self.sock, self.dual_socket()  # one read: ClientSwitch.send_dual
            self.health.delivery.data_sent(len(msgs))  # once (not its dual copy), before it leaves
        self.last_data_ms = self.clock_ms()  # traffic flows: heartbeats at the loss cadence
        try:
            send_messages(active, msgs, self.endpoint)
        except OSError:
            self._wake.set()  # a send error: look at the path now
        self.send_dual(dual, msgs)  # a switch's PATH_RESPONSE is out: both paths carry it

    def rebind(self) -> None:
        """A new socket (source port), as a NAT rebinding; reattach (a new address, tests)."""
        old = self.sock
        self.sock = self._new_socket()
        self.sockets_changed()  # the receive loop reads the new one at once (client_paths.py)
        self.pin_active()  # to the active uplink, if it is still listed (client_paths.py)
        try:
            old.shutdown(socket.SHUT_RDWR)  # wakes the receive loop blocked on it at once
        except OSError:
            pass
        old.close()
        self.start_reattach("local transport changed")

    # ------------------------------------------------------------ receiving
    def receive_once(self, sock: socket.socket) -> None:
        """One datagram from ``sock``, or a timeout."""
        try:
            msg, src = sock.recvfrom(65535)
        except (TimeoutError, OSError):
            return
        self.receive(msg, src, sock)

    def receive(self, msg: bytes, src, sock: socket.socket | None = None) -> None:
        """One datagram that arrived on ``sock`` (default: the current socket).
        Only the gateway's address and port is heard, as a QUIC client hears
        only its server: anything else is dropped before it is opened, so an
        attacker who relays a genuine challenge or ACK from elsewhere gets no
        answer, changes nothing, and does not even spend its counter in our
        replay window (the genuine copy from the gateway still counts)."""
        if not self._from_gateway(src) or not msg:
            return
        t = msg[0]
        if t in (abi.MSG_DATA, abi.MSG_KEEPALIVE):
            self._data(msg, sock is None or sock is self.sock)
        elif t in CONTROL_TYPES:
            self._control(msg, src, sock or self.sock)

    def _from_gateway(self, src) -> bool:
        addr, port = self._endpoint  # src in any spelling: canonical only if plain differs
        if src[1] == port and (src[0] == addr or canonical_ip(src[0]) == addr):
            return True
        self.drops.drop(src)
        return False

    def _data(self, msg: bytes, on_active: bool = True) -> None:
        opened = self.channel.open(msg)
        if opened is None:
            return
        msg_type, flags, payload = opened
        self.last_rx_ms = self.clock_ms()
        self.orphan.heard(self.last_rx_ms)  # authenticated: the session is alive
        self.size.heard(msg_type)  # a keepalive reply: the gateway has our announcement
        self.heartbeat_heard(msg_type, payload, on_active)  # its echo (client_paths.py)
        if msg_type == abi.MSG_DATA and self.tun:
            packet = self.channel.reassembly.add(payload) if flags & FLAG_FRAGMENT else payload
            if packet is not None:
                self.tun.write(packet)
        self.gateway_flags(flags)  # a reattach or a rekey asked (client_rekey.py)

    # ------------------------------------------------------------ loops
    def _tun_loop(self) -> None:
        read = self.tun.read
        while not self._stop.is_set():
            try:
                pkt = read()
            except OSError:
                return
            self.send_data(pkt)

    def _monitor_loop(self) -> None:
        """Keepalives (heartbeats), the path step (candidates, probes, the
        choice: jvpn/client_paths.py), missing replies, retries of an
        unanswered reattach."""
        while not self._stop.is_set():
            woke = self._wake.wait(0.05)
            self._wake.clear()
            if self._stop.is_set():  # stop() woke us: no keepalive may follow our TERMINATE
                return
            self.guarded_step(woke)  # an error: contained, reported (client_monitor_guard.py)

    def monitor_step(self, woke: bool = False) -> None:
        """One tick of the monitor (``woke``: by netlink or a send error)."""
        now = self.clock_ms()
        self.events.flush()  # summaries whose interval is over (a flood that stopped)
        if self.renewing:
            return  # a new handshake is under way (jvpn/client_renew.py)
        if self.orphan_tick(now):
            return  # stopping, or renewing (Reconnect)
        if self.paths_step(now, self._route(), woke):
            return  # rebound: a fresh socket, a reattach under way
        self.reattach_timers(now)
        self.rekey_timers(now)
        if self.heartbeat_due(now) or self._announce_due(now):
            self._keepalive(now)

    def orphan_tick(self, now: int) -> bool:
        """The monitor's orphan step (jvpn/client_orphan.py): True if the
        session is now presumed ended (the agent stops)."""
        why = self.orphan.tick(now)
        if why is not None:
            self.session_over(Reason.ORPHANED, why)
        return why is not None

    def _route(self):  # the path to the gateway; its MTU sizes our datagrams (client_path.py)
        return route_to(self.endpoint[0], self.route_plan.mark, self._resize)
