"""The gateway daemon: lifecycle and wiring. One object per concern, over one
session table (the model is wireguard-go's device/):

  table.py      the sessions; the only writer of records, gate elements, state events
  datapath.py   the UDP and TUN loops
  control.py    handshakes and reattach messages, carried out in order
  admission.py  handshake admission (cookies, responder, the new record)
  reattach.py   reattach validation (decisions, no writes)
  follower.py   the cluster (watch, sweep, handoff, lease and fence), or none
  ownership.py  who may serve a session (decisions, no writes)
  timers.py     which timer a session is due for; timer_checks.py: the due ones only

Threads: one reads the UDP socket, one reads the TUN, one runs the timers,
and in a cluster one watches the store. Each iteration of each loop contains
its errors and reports them (``DaemonError`` events, rate-limited); a thread
that still ends stops the gateway with one line (supervise.py). Control work (handshake, reattach,
timers, store events) is serialized by one lock; the data loops only read
the session table.

Restart: sessions live in the store and the XDP maps stay pinned, so on start
the daemon reconciles: every live store session is projected into the maps,
every map element without a store session is removed, send counters resume
above the persisted floor, replay windows start above the persisted replay
ceiling (jvpn/gateway/ceiling.py), and a session caught RECOVERING (its path
challenge died with the old process) goes to DEGRADED so that its client's
next reattach is served.
"""

from __future__ import annotations

import ipaddress
import secrets
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

from jvpn.codes import EventType, Reason
from jvpn.config import PeerConfig
from jvpn.events import EventLog
from jvpn.gate import abi
from jvpn.gateway import operations
from jvpn.gateway.admission import Admission
from jvpn.gateway.control import ControlPath
from jvpn.gateway.datapath import DataPath
from jvpn.gateway.follower import for_store
from jvpn.gateway.gate_watch import GateWatch
from jvpn.gateway.key_nudge import RekeyNudge
from jvpn.gateway.listener import listen_name, open_listener
from jvpn.gateway.operator_actions import OperatorActions
from jvpn.gateway.probes import Probes
from jvpn.gateway.reattach import ReattachServer
from jvpn.gateway.reconcile import Reconcile
from jvpn.gateway.rekey import RekeyServer
from jvpn.gateway.rekey_control import RekeyControl
from jvpn.gateway.routes import NoRoutes, SubnetRoutes
from jvpn.gateway.sending import Sender
from jvpn.gateway.supervise import Incidents, Supervisor
from jvpn.gateway.table import Live, SessionTable
from jvpn.gateway.timer_checks import TimerChecks
from jvpn.keys import KeyRing, public_from_private
from jvpn.pathmtu import DEFAULT_PATH_MTU
from jvpn.policy import Policy
from jvpn.session import Transport
from jvpn.store import Store
from jvpn.tunnel import Tun

RCVBUF = 4 << 20
TIMER_TICK_S = 0.1


class Gateway(GateWatch, Reconcile, OperatorActions, TimerChecks):
    def __init__(self, *, private_key: bytes, listen: tuple[str, int],
                 address: ipaddress.IPv4Interface,
                 peers: dict[bytes, PeerConfig | ipaddress.IPv4Address],
                 policy: Policy, store: Store, gate, events: EventLog, tun_name: str = "jvpn-gw",
                 clock_ms: Callable[[], int] | None = None, cookie_threshold_per_s: int = 50,
                 listen_device: str | None = None, sock=None, tun=None, timer_ms=None,
                 address6: ipaddress.IPv6Interface | None = None, routes=None,
                 path_mtu: int = DEFAULT_PATH_MTU, operator_socket: Path | None = None):
        """``sock`` and ``tun``: already open ones (tests: fakes); by default
        the UDP socket is bound to ``listen`` (on ``listen_device`` only, if
        given) and the TUN opened by name. ``peers``: by public key (a bare
        IPv4 address: that /32 alone). ``routes``: see ``_open_tun``.
        ``operator_socket``: see jvpn/gateway/operations.py; ``timer_ms``: indexes.py."""
        self.public_key = public_from_private(private_key)
        self.address, self.policy = address, policy
        self.store, self.gate, self.events = store, gate, events
        self.clock_ms = clock_ms or (lambda: time.time_ns() // 1_000_000)
        self.control = threading.RLock()
        self._stop = threading.Event()
        self.supervisor = Supervisor(self._stop, on_death=self._thread_died)
        self.fatal: str | None = None  # why the gateway stopped itself (exit 1); first cause
        self._fatal_lock = threading.Lock()  # two causes at once: the first one wins
        self._on_fatal: Callable[[str], None] = (
            lambda line: self.incidents.warn(f"jvpn gateway: {line}"))
        self._next_gate_watch = 0.0  # monotonic seconds; the timer thread's alone
        self.incidents = Incidents(events, self.timer_ms)
        if hasattr(store, "on_unreadable"):  # a value that does not parse: skipped, reported
            store.on_unreadable = self.incidents.unreadable
        self.sock = sock if sock is not None else self._bind(listen, listen_device)
        self.sender = Sender(self.sock, self.incidents, stopping=self._stop.is_set)
        self.tun, self.routes = self._open_tun(tun, tun_name, address, address6, routes)
        self.ownership, follower_class = for_store(store, events.node_id)
        self.table = SessionTable(store=store, gate=gate, events=events,
                                  ownership=self.ownership, clock_ms=self.clock_ms,
                                  send=self.send,
                                  control_window=policy.replay_window_size,
                                  peers={p.inner.packed: p for p in peers.values()
                                         if isinstance(p, PeerConfig)},
                                  routes=self.routes, path_mtu=path_mtu)
        self.follower = follower_class(
            store=store, table=self.table, gate=gate, ownership=self.ownership, events=events,
            lock=self.control, retry=self._retry, clock_ms=self.clock_ms)
        self.reattach = ReattachServer(store, policy, clock_ms=self.clock_ms,
                                       timer_ms=self.timer_ms, live_of=self.table.get)
        self.admission = Admission(private_key, peers, address, cookie_threshold_per_s,
                                   address6=address6)
        self.table.peer_entitled = self.peer_entitled  # a reload during a handshake's write
        self.table.timer_ms = timer_ms or clock_ms or self.table.timer_ms  # a test's: both
        self.rekey = RekeyServer(self.reattach, clock_ms=self.clock_ms,  # its policy too
                                 statics=self.admission.rekey_statics)
        self.controlpath = ControlPath(
            table=self.table, admission=self.admission, reattach=self.reattach,
            follower=self.follower, events=events, send=self.send, clock_ms=self.clock_ms,
            send_unverified=self.sender.send_cookie_reply, randbits=secrets.randbits,
            rekey=RekeyControl(table=self.table, server=self.rekey, events=events,
                               incidents=self.incidents))
        self.probes, self.datapath = self._probes(), self._datapath()
        self.rekey_nudge = RekeyNudge(self.sender, self.incidents, self.timer_ms)
        self._contain_store_watch()
        self.operator = operations.open_server(self, operator_socket)

    def timer_ms(self) -> int:
        """The table's timer clock (the real one until the table is made):
        waits, silences, intervals and refills are measured on it."""
        table = getattr(self, "table", None)
        return (SessionTable if table is None else table).timer_ms()

    def _contain_store_watch(self) -> None:
        """The store's watch thread and the sweep deliver records to the
        follower: one record it cannot handle must not end the watch."""
        follow = getattr(self.follower, "on_store_record", None)
        if follow is not None:
            self.follower.on_store_record = self._contained_call("store-watch", follow)

    def _probes(self) -> Probes:
        """Path probes, answered from memory (issue 14): a probe window of
        their own per session (not the control windows: a probe raises the
        gate's probe_floor, never ctl_floor), the policy in force (a reload
        resizes the bucket)."""
        return Probes(table=self.table, owns=self.ownership.owns,
                      policy=lambda: self.policy, clock_ms=self.clock_ms,
                      timer_ms=self.timer_ms)

    def _datapath(self) -> DataPath:
        return DataPath(
            sock=self.sock, sender=self.sender, tun=self.tun, gate=self.gate, table=self.table,
            events=self.events, lock=self.control, stop=self._stop, clock_ms=self.clock_ms,
            on_handshake=self.controlpath.handshake, on_control=self.handle_control,
            on_confirm=self.controlpath.confirm, incidents=self.incidents,
            on_new_keys=self.controlpath.rekey.keys_used, policy=lambda: self.policy)

    def _open_tun(self, tun, name: str, address: ipaddress.IPv4Interface,
                  address6: ipaddress.IPv6Interface | None, routes):
        """(TUN, routes to subnets behind peers): ours, or given (then no routes)."""
        if tun is None:
            tun = Tun(name, persist=True)
            tun.configure(str(address.ip), address.network.prefixlen, address6=address6)
            tun.set_nonblocking()  # the TUN loop sees a stop within its idle wait
            routes = SubnetRoutes(name, self.events) if routes is None else routes
        return tun, routes if routes is not None else NoRoutes()

    @staticmethod
    def _bind(listen: tuple[str, int], device: str | None) -> socket.socket:
        """Ours alone (no SO_REUSEADDR), and with the XDP gate, only its
        interface: nothing the gate did not check reaches the daemon
        (jvpn/gateway/listener.py)."""
        return open_listener(listen[0], listen[1], RCVBUF, device)

    # ------------------------------------------------------------ views (tests, tools)
    @property
    def sessions(self) -> dict[int, Live]:
        return self.table.sessions

    @property
    def standby(self) -> dict[int, tuple[KeyRing, str]]:
        return self.table.standby

    @property
    def fenced(self) -> bool:
        return self.table.fenced

    # ------------------------------------------------------------ lifecycle
    def start(self, on_fatal: Callable[[str], None] | None = None) -> None:
        """``on_fatal(line)``: the gateway must end (a thread ended although
        it was not stopping, or the gate is gone; see :meth:`_fail`); the
        caller stops it and exits non-zero (`gateway up`)."""
        if on_fatal is not None:
            self._on_fatal = on_fatal
        self.follower.arm()  # before any element of ours is written
        self.routes.flush()  # what a crashed run left; reconcile installs the live ones
        self.reconcile()
        self.revoke_orphans()  # a peer removed while the gateway was down
        loops = {"udp": self.datapath.udp_loop, "tun": self.datapath.tun_loop,
                 "timer": self._timer_loop}
        for i, loop in enumerate(self.follower.loops(self._stop)):
            loops[f"store-watch-{i}"] = loop
        if self.operator is not None:
            loops["operator"] = lambda: self.operator.serve(self._stop)
        reader = self.gate.event_reader()
        if reader is not None:
            loops["xdp-events"] = lambda: self.datapath.xdp_events_loop(reader)
        for name, target in loops.items():
            self.supervisor.start(name, target)
        self.follower.publish()
        self.events.emit(EventType.GATEWAY_STARTED, Reason.OK,
                         listen=listen_name(self.sock.getsockname()),
                         gate="xdp" if self.gate.checks_in_kernel else "userspace",
                         sessions=len(self.table.sessions))

    def stop(self) -> None:
        self._stop.set()
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        self.tun.close()
        if self.operator is not None:
            self.operator.close()
        self.supervisor.join(2)
        self.table.writes.close()  # a group commit's queue: committed and answered first
        with self.control:
            self.follower.stop()
            self.routes.flush()
        self.gate.close()
        self.events.emit(EventType.GATEWAY_STOPPED, Reason.OK,
                         sessions=len(self.table.sessions))

    # ------------------------------------------------------------ control
    def handle_control(self, msg: bytes, src: Transport) -> None:
        """A REATTACH_REQ, PATH_RESPONSE, TERMINATE, REKEY_INIT or PATH_PROBE
        as received from ``src``. A probe holds the lock for its check and
        window mark only: its send counter can wait for the store, so the
        reply is sealed after the lock (jvpn/gateway/probes.py), and every
        send goes after it."""
        probe = msg[:1] == bytes([abi.MSG_PATH_PROBE])
        with self.control:
            replies = (self.probes.message if probe else self.controlpath.reattach_message)(
                msg, src)
        if probe:
            replies = self.probes.seal(replies)
        for reply, to in replies:
            self.send(reply, to)

    def _retry(self, msg: bytes, src: Transport) -> None:
        """A parked request whose session the owner released (lock held)."""
        for reply, to in self.controlpath.reattach_message(msg, src, parked=True):
            self.send(reply, to)

    def send(self, msg: bytes, to: Transport) -> None:
        self.sender.send(msg, to)  # never waits, best effort (jvpn/gateway/sending.py)

    # ------------------------------------------------------------ supervision
    def _contained_call(self, where: str, fn: Callable[..., None]) -> Callable[..., None]:
        def contained(*args) -> None:
            try:
                fn(*args)
            except Exception as e:  # noqa: BLE001 - contained and reported
                self.incidents.report(where, e)
        return contained

    def _thread_died(self, name: str, why: str) -> None:
        """A loop ended while the gateway runs: it cannot serve as it should,
        so it must end, loudly (jvpn/gateway/supervise.py)."""
        line = (f"gateway thread {name!r} ended ({why}): stopping, so that the lease lapses "
                "and the service manager restarts the gateway")
        self.incidents.note(name, Reason.THREAD_DIED, line)
        self._fail(line)

    def _fail(self, line: str) -> None:
        """The one way the gateway ends itself (a thread died, the gate is
        gone): ``fatal`` holds the first cause's one line and ``on_fatal``
        gets it (`gateway up` stops, prints it, exits 1). Without an
        ``on_fatal`` the line goes to stderr, so it is never silent."""
        with self._fatal_lock:
            if self.fatal is not None:
                return  # already ending; the first cause is the one reported
            self.fatal = line
        self._on_fatal(line)

    # ------------------------------------------------------------ timers
    def _timer_loop(self) -> None:
        while not self._stop.wait(TIMER_TICK_S):
            self.tick()

    def tick(self) -> None:
        """One round of the timers. Each step contains its errors: the lease
        check and fence refresh run whatever a session or the store does."""
        if self._gate_watch_due() and self._gate_lost_now():
            return  # stopping: nothing more is served
        run = self._contained_call("timer", lambda step, *args: step(*args))
        with self.control:
            run(self.follower.check_lease)
            run(self.controlpath.expire_challenges)
            run(self.controlpath.expire_unconfirmed)
            run(self.table.retry_deletes)  # forgotten sessions the store kept
            run(self.revoke_orphans, True)  # new since: adopted from a gateway not reloaded
        # a batch per hold of the lock: a storm of due timers (issue 15)
        # leaves the lock to the operator, the control path and a stop
        self.run_due_timers()
        with self.control:
            run(self.rekey.forget, self.table.sessions)
            run(self.rekey_nudge.forget, self.table.sessions)
            run(self.follower.expire_parked)
        run(self.follower.sweep_if_due)
        run(self.datapath.report_drops)
        run(self.events.flush)  # rejection summaries due, lines a failing disk refused
        self.incidents.flush()
