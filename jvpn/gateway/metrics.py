"""The gateway's Prometheus endpoint (config ``MetricsListen``; off by
default). Nothing here keeps a second copy of the gateway's state: each
scrape reads it live (a custom collector), the way `jvpn-xdp stats` and
`sessions` read it. What only the event stream knows (handshakes, cookie
replies, reattach results and their latency) is counted from the events the
daemon emits, through one listener on its EventLog: no counting call is
scattered through the control path.

Every metric, its type and labels: docs/metrics.md.
"""

from __future__ import annotations

import socket
import struct
import sys
import threading
import time
from collections.abc import Iterator
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from jvpn import keys
from jvpn.config import DEFAULT_METRICS_PEERS
from jvpn.errors import JvpnError
from jvpn.gateway import snapshot
from jvpn.gateway.shared import Shared
from jvpn.gateway.tally import EventTally

# Anyone on the host can connect (an unprivileged user included): a bounded
# number of scrapes at once, each connection cut at a deadline from its
# accept (reading the request, waiting for the snapshot, writing the answer:
# all of it), so that slow or idle connections cannot keep the slots, the
# daemon's threads or its descriptors. Prometheus' own default scrape_timeout
# is 10 s: a scrape that takes longer is one it abandoned already.
MAX_SCRAPES = 2
SCRAPE_DEADLINE_S = 10.0
# A scraper sends its request (line and headers) at once: a connection that
# has not within this long is cut, and while every slot is taken a new
# connection evicts the oldest one still without its request. So idle
# connections cannot hold the slots for the scrape deadline (review R4).
REQUEST_DEADLINE_S = 1.0
# Scrapes within this long of a snapshot's build share it (jvpn/gateway/shared.py):
# the control lock is taken once per this interval however many scrape.
SNAPSHOT_MAX_AGE_S = 1.0


class GatewayCollector:
    """One scrape: the gate's verdict counters, the sessions, the event
    counts, the peers (as the WireGuard exporters name theirs; only with
    ``per_peer``: MetricsPeers), the process. Nothing before ``gw`` is set
    (the endpoint is bound before the gateway is built, so that a taken port
    is refused before anything opens); ``tally`` is set with it."""

    def __init__(self, tally: EventTally | None, gw=None, interface: str = "", *,
                 per_peer: bool = DEFAULT_METRICS_PEERS,
                 max_age_s: float = SNAPSHOT_MAX_AGE_S, clock=time.monotonic):
        self.gw, self.tally, self.interface, self.per_peer = gw, tally, interface, per_peer
        self._shared = Shared(self._build, max_age_s, clock)

    def collect(self) -> Iterator[Metric]:
        if self.gw is None:
            return
        yield from self._shared.get()

    def _build(self) -> list[Metric]:
        """The families every scrape within SNAPSHOT_MAX_AGE_S serves: the
        control lock held once, for references only (snapshot.references);
        the sessions read, the kernel's counters looked up and everything
        formatted after it."""
        gw = self.gw
        lives, peers = snapshot.references(gw)
        states = GaugeMetricFamily("jvpn_sessions", "Sessions this gateway serves, by state.",
                                   labels=["state"])
        for state, n in snapshot.count_states(live.record.state.name for live in lives).items():
            states.add_metric([state], n)
        now = gw.clock_ms()
        oldest = max((now - snapshot.keys_made_ms(live.record) for live in lives), default=0)
        out = [*verdict_metrics(gw.gate.read_counters()), states,
               GaugeMetricFamily("jvpn_draining", "1 while the gateway refuses new sessions "
                                 "(jvpn-xdp drain).", value=1 if gw.draining else 0),
               GaugeMetricFamily("jvpn_key_age_max_seconds", "Age of the oldest current "
                                 "session keys (0: no session).", value=max(0, oldest) / 1000),
               GaugeMetricFamily("jvpn_sessions_key_overlap", "Sessions whose previous key "
                                 "epoch is still accepted (a rekey committed, unconfirmed or "
                                 "in its overlap).", value=overlapping(lives)),
               *event_metrics(self.tally.figures()), probe_metrics(gw), send_metrics(gw)]
        if self.per_peer:  # the rows (one kernel lookup per session) only when served
            rows = snapshot.sessions(gw, now_ms=now, refs=(lives, peers))
            out += peer_metrics(rows, list(peers.values()), self.interface)
        out += process_metrics(snapshot.process_figures(), gw.supervisor.alive())
        return out


def overlapping(lives) -> int:
    """Sessions with a previous key epoch still live (the key ring's)."""
    return sum(1 for live in lives if snapshot.key_ring_state(live.keys)["key_overlap"])


def verdict_metrics(counters: dict[str, dict[str, int]]) -> Iterator[Metric]:
    packets = CounterMetricFamily("jvpn_xdp_packets", "Packets by the gate's verdict reason "
                                  "(as `jvpn-xdp stats --json`).", labels=["reason"])
    nbytes = CounterMetricFamily("jvpn_xdp_bytes", "Bytes by the gate's verdict reason.",
                                 labels=["reason"])
    for reason, v in counters.items():
        packets.add_metric([reason], v["packets"])
        nbytes.add_metric([reason], v["bytes"])
    yield packets
    yield nbytes


def event_metrics(f: dict) -> Iterator[Metric]:
    hs = CounterMetricFamily("jvpn_handshakes", "Handshake initiations by result "
                             "(HANDSHAKE_OK, or the rejection's reason code).", labels=["result"])
    for result, n in sorted(f["handshakes"].items()):
        hs.add_metric([result], n)
    yield hs
    yield CounterMetricFamily("jvpn_cookie_replies", "Cookie replies sent (handshakes under "
                              "load).", value=f["cookie_replies"])
    ra = CounterMetricFamily("jvpn_reattaches", "Reattach results by reason code.",
                             labels=["result"])
    for result, n in sorted(f["reattaches"].items()):
        ra.add_metric([result], n)
    yield ra
    hist = HistogramMetricFamily("jvpn_reattach_latency_seconds", "From a session's latest "
                                 "reattach attempt (path challenge sent) to its acceptance.")
    hist.add_metric([], [(_le(le), n) for le, n in f["latency_buckets"]], f["latency_sum_s"])
    yield hist
    yield from key_metrics(f)


def key_metrics(f: dict) -> Iterator[Metric]:
    """The key lifecycle (issue 13): KeyRotated, RekeyDenied and KeyExpired
    events by result and reason code, and SecurityKeyCompromiseSuspected."""
    rekeys = CounterMetricFamily("jvpn_rekeys", "Key lifecycle events by result (rotated: "
                                 "KeyRotated, denied: RekeyDenied, expired: KeyExpired) and "
                                 "reason code.", labels=["result", "reason"])
    for result, reason, n in f["rekeys"]:
        rekeys.add_metric([result, reason], n)
    yield rekeys
    yield CounterMetricFamily("jvpn_key_compromises_suspected", "SecurityKeyCompromiseSuspected "
                              "events: an authentic request under keys already replaced.",
                              value=f["key_compromises_suspected"])


def probe_metrics(gw) -> Metric:
    """Path probes by result (issue 14; jvpn/gateway/probes.py): counted
    there, never one event per probe (a flood must not flood the log); five
    labels, whatever arrives."""
    probes = CounterMetricFamily("jvpn_path_probes", "Path probes by result (answered, "
                                 "replayed, forged, rate_limited, refused).", labels=["result"])
    counts = getattr(gw, "probes", None)
    for result, n in sorted((counts.counts if counts is not None else {}).items()):
        probes.add_metric([result], n)
    return probes


def send_metrics(gw) -> Metric:
    """Datagrams the gateway dropped rather than wait for room in its send
    buffer (jvpn/gateway/sending.py): three labels, whatever is sent."""
    drops = CounterMetricFamily("jvpn_send_drops", "Datagrams dropped by the gateway's "
                                "send path (buffer_full: no room, never waited for; "
                                "unverified_budget: cookie replies past their share; "
                                "data_share: inner packets while the uplink is behind).",
                                labels=["reason"])
    sender = getattr(gw, "sender", None)
    for reason, n in sorted((sender.counts() if sender is not None else {}).items()):
        drops.add_metric([reason], n)
    return drops


def _le(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(bound)


def peer_metrics(rows: list[dict], peers: list, interface: str) -> Iterator[Metric]:
    """Per configured peer, summed over its sessions; the names and labels of
    prometheus_wireguard_exporter (interface, public_key, allowed_ips,
    friendly_name). A peer without a session is 0, as WireGuard's. The key
    epoch and age (jvpn's own) are those of the peer's newest session."""
    labels = ["interface", "public_key", "allowed_ips", "friendly_name"]
    sent = CounterMetricFamily("wireguard_sent_bytes", "Bytes sent to the peer.", labels=labels)
    received = CounterMetricFamily("wireguard_received_bytes", "Bytes received from the peer.",
                                   labels=labels)
    handshake = GaugeMetricFamily("wireguard_latest_handshake_seconds", "UNIX time of the "
                                  "peer's latest handshake (0: none).", labels=labels)
    epoch = GaugeMetricFamily("jvpn_peer_key_epoch", "Key epoch of the peer's newest "
                              "session (0: the handshake's keys, or no session).", labels=labels)
    key_age = GaugeMetricFamily("jvpn_peer_key_age_seconds", "Age of the current keys of the "
                                "peer's newest session (0: none).", labels=labels)
    by_key: dict[str, list[dict]] = {}
    for row in rows:
        by_key.setdefault(row["public_key"], []).append(row)
    for peer in peers:
        pk = keys.encode(peer.public_key)
        mine = by_key.get(pk, [])
        values = [interface, pk, ",".join(str(n) for n in peer.allowed_ips), peer.name]
        sent.add_metric(values, sum(r["tx_bytes"] for r in mine))
        received.add_metric(values, sum(r["rx_bytes"] for r in mine))
        handshake.add_metric(values, max((r["last_handshake_ms"] for r in mine), default=0) / 1000)
        newest = max(mine, key=lambda r: r["created_ms"], default=None)
        epoch.add_metric(values, newest["key_epoch"] if newest else 0)
        key_age.add_metric(values, newest["key_age_s"] if newest else 0)
    yield from (sent, received, handshake, epoch, key_age)


def process_metrics(p: dict, threads: dict[str, bool]) -> Iterator[Metric]:
    """The daemon's process through psutil, with the standard process_* names."""
    yield CounterMetricFamily("process_cpu_seconds", "User and system CPU time spent, seconds.",
                              value=p["cpu_seconds"])
    yield GaugeMetricFamily("process_resident_memory_bytes", "Resident memory size, bytes.",
                            value=p["rss_bytes"])
    yield GaugeMetricFamily("process_open_fds", "Open file descriptors.", value=p["open_fds"])
    yield GaugeMetricFamily("process_start_time_seconds", "Start time of the process, UNIX "
                            "seconds.", value=p["start_time_s"])
    yield GaugeMetricFamily("process_threads", "OS threads of the process.", value=p["threads"])
    alive = GaugeMetricFamily("jvpn_thread_alive", "1 while the daemon's named loop runs.",
                              labels=["thread"])
    for name, up in sorted(threads.items()):
        alive.add_metric([name], 1 if up else 0)
    yield alive


class MetricsServer:
    """The HTTP endpoint: bound at once (a taken port is one line naming the
    key), serving from its own threads until ``close``; it has figures once
    ``attach`` gave it the gateway."""

    def __init__(self, listen: tuple[str, int], where: str = "MetricsListen", *,
                 per_peer: bool = DEFAULT_METRICS_PEERS, deadline_s: float = SCRAPE_DEADLINE_S,
                 request_deadline_s: float = REQUEST_DEADLINE_S):
        """``where``: what an error names (the config's ``FILE:LINE: MetricsListen``);
        ``per_peer``: serve the per-peer series (MetricsPeers); ``deadline_s``:
        every connection is cut this long after its accept; ``request_deadline_s``:
        one without its whole request by then is cut."""
        self.tally: EventTally | None = None  # made by attach, on the gateway's timer clock
        self.collector = GatewayCollector(None, per_peer=per_peer)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self.collector)
        host, port = listen
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        server_class = type("MetricsHTTPServer", (_BoundedServer,),
                            {"address_family": family, "deadline_s": deadline_s,
                             "request_deadline_s": min(request_deadline_s, deadline_s)})
        handler_class = type("MetricsHandler", (_QuietHandler,), {"timeout": deadline_s})
        try:
            self._httpd = make_server(host, port, make_wsgi_app(self.registry), server_class,
                                      handler_class=handler_class)
        except OSError as e:
            raise JvpnError(f"{where}: {_spell(listen)}: cannot listen: "
                            f"{e.strerror or e}") from None
        self.address = self._httpd.server_address[:2]
        self.url = f"http://{_spell(self.address)}/metrics"
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="jvpn-metrics",
                                        daemon=True)
        self._thread.start()

    def attach(self, gw, interface: str) -> None:
        """Before ``gw.start()``: the tally sees every event from the first."""
        self.tally = EventTally(gw.timer_ms)  # the gateway's timer clock (a test's)
        gw.events.add_listener(self.tally)
        self.collector.tally, self.collector.interface = self.tally, interface
        self.collector.gw = gw  # last: a scrape serves nothing until it is set

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


class _QuietHandler(WSGIRequestHandler):
    # each blocking read or write gives up after this (the server's deadline
    # cuts the connection as a whole; this is the per-call backstop)
    timeout = SCRAPE_DEADLINE_S

    def log_message(self, *_args) -> None:
        pass  # a scrape is not news (and stderr is the daemon's log)

    def parse_request(self) -> bool:
        """Called once the request line is read; reads the headers. Then
        (and only then) the connection is a scrape, not an idle one."""
        ok = super().parse_request()
        self.server.request_read(self.request)
        return ok


class _BoundedServer(ThreadingMixIn, WSGIServer):
    """At most MAX_SCRAPES connections served at once. While all slots are
    taken a new connection evicts the oldest one that has not sent its whole
    request yet, and is closed at once (not queued) when every slot holds a
    scrape. Each connection is cut ``request_deadline_s`` after its accept if
    its request has not arrived, and ``deadline_s`` after it whatever it
    waits for: a timeout per read would let a client that drips one byte at
    a time keep its slot for ever."""

    daemon_threads = True
    deadline_s = SCRAPE_DEADLINE_S
    request_deadline_s = REQUEST_DEADLINE_S

    def __init__(self, *args, **kwargs):
        self._guard = threading.Lock()
        self._slots: dict[socket.socket, bool] = {}  # in accept order: request read yet?
        super().__init__(*args, **kwargs)

    def process_request(self, request, client_address) -> None:
        if not self._admit(request):
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._leave(request)
            raise

    def _admit(self, request: socket.socket) -> bool:
        with self._guard:
            if len(self._slots) >= MAX_SCRAPES:
                idle = next((c for c, read in self._slots.items() if not read), None)
                if idle is None:
                    return False  # every slot serves a scrape
                del self._slots[idle]  # its slot is the new one's now; its thread ends
                _cut(idle)
            self._slots[request] = False
            return True

    def request_read(self, request: socket.socket) -> None:
        with self._guard:
            if request in self._slots:
                self._slots[request] = True

    def _cut_if_idle(self, request: socket.socket) -> None:
        with self._guard:
            if self._slots.get(request) is False:
                _cut(request)

    def _leave(self, request: socket.socket) -> None:
        with self._guard:
            self._slots.pop(request, None)

    def process_request_thread(self, request, client_address) -> None:
        timers = [threading.Timer(self.deadline_s, _cut, (request,)),
                  threading.Timer(self.request_deadline_s, self._cut_if_idle, (request,))]
        for t in timers:
            t.daemon = True
            t.start()
        try:
            super().process_request_thread(request, client_address)
        finally:
            for t in timers:
                t.cancel()
            self._leave(request)

    def handle_error(self, request, client_address) -> None:
        if not isinstance(sys.exc_info()[1], OSError):  # a cut or reset connection is not news
            super().handle_error(request, client_address)


def _cut(request: socket.socket) -> None:
    """Wakes the connection's thread from any read or write (they fail: the
    thread ends and frees its slot), and makes its close a reset: what was
    queued for a slow reader is dropped, not drained to it at its pace. A
    socket already closed has no descriptor any more (-1): nothing else is
    touched."""
    try:
        request.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET_ON_CLOSE)
        request.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # closed already: the scrape ended just in time


_RESET_ON_CLOSE = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s


def _spell(listen: tuple[str, int]) -> str:
    host, port = listen
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
