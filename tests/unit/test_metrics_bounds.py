"""What any local user can do to the gateway through /metrics (issue 12,
review R1): slow connections are cut at a deadline per connection (not per
read), scrapes share one snapshot and hold the control lock only to copy
references, and the per-peer series (keys, names, AllowedIPs) are served
only with MetricsPeers. The daemon's real wiring over a fake socket and TUN
(tests/kits/daemon_kit.py); no root."""

from __future__ import annotations

import copy
import socket
import threading
import time
import urllib.request

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from unit.test_metrics_idle import hold_every_slot

from jvpn import keys
from jvpn.config import ConfigError, PeerConfig
from jvpn.config_report import gateway_rows
from jvpn.events import EventLog
from jvpn.gate.userspace import UserspaceGate
from jvpn.gateway import snapshot
from jvpn.gateway.daemon import Gateway
from jvpn.gateway.metrics import (
    MAX_SCRAPES,
    SNAPSHOT_MAX_AGE_S,
    GatewayCollector,
    MetricsServer,
)
from jvpn.gateway.reload import restart_only_changes
from jvpn.gateway.tally import EventTally
from jvpn.gateway.traffic import Traffic
from jvpn.policy import default_policy
from jvpn.store.sqlite import SqliteStore
from kits.daemon_kit import (
    ADDRESS,
    GW_KEY,
    LISTEN,
    PEER_INNER,
    PEER_KEYS,
    Clock,
    FakeSock,
    FakeTun,
    handshake,
    load_gateway_files,
)

PUBS = [keys.public_from_private(k) for k in PEER_KEYS]
DEADLINE_S = 1.0  # the tests' connection deadline (the daemon's is SCRAPE_DEADLINE_S)
MARGIN_S = 8.0  # wide: a loaded test machine


@pytest.fixture
def gw(tmp_path):
    peers = {pub: PeerConfig(pub, inner, name)
             for pub, inner, name in zip(PUBS, PEER_INNER, ("alice", "bob"), strict=True)}
    g = Gateway(private_key=GW_KEY, listen=LISTEN, address=ADDRESS, peers=peers,
                policy=default_policy(), store=SqliteStore(tmp_path / "s.db"),
                gate=UserspaceGate(), events=EventLog("gw-test", clock_ms=Clock()),
                clock_ms=Clock(), sock=FakeSock(), tun=FakeTun())
    yield g
    g.store.close()


class CountingLock:
    """The control lock, counted: how often and how long it is held, and by
    which thread now."""

    def __init__(self, real):
        self.real, self.holds, self.owner = real, [], None

    def __enter__(self):
        self.real.acquire()
        self.owner, self._since = threading.get_ident(), time.perf_counter()

    def __exit__(self, *_exc):
        self.holds.append(time.perf_counter() - self._since)
        self.owner = None
        self.real.release()

    def held_here(self) -> bool:
        return self.owner == threading.get_ident()


# ------------------------------------------------------------ the deadline
def _scrapes(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status == 200
    except OSError:
        return False


def _scrape_within(url: str, seconds: float) -> float | None:
    """Seconds until a scrape succeeded, None if none did within ``seconds``."""
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        if _scrapes(url):
            return time.monotonic() - start
        time.sleep(0.1)
    return None


def _closed_by_server(conn: socket.socket) -> bool:
    conn.settimeout(MARGIN_S)
    try:
        while conn.recv(65536):
            pass  # whatever it answered (a cut request may still be answered)
        return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False


def test_drip_fed_connections_are_cut_at_the_deadline_and_a_scrape_gets_through():
    """8 connections each sending one header byte every 0.2 s: each read
    returns in time, so only a deadline per connection frees the slots."""
    server = MetricsServer(("127.0.0.1", 0), deadline_s=DEADLINE_S)
    stop = threading.Event()
    conns = []
    try:
        for _ in range(8):
            c = socket.create_connection(server.address)
            c.sendall(b"GET /metrics HTTP/1.1\r\nX-Drip: ")
            conns.append(c)

        def drip():
            while not stop.is_set():
                for c in conns:
                    try:
                        c.send(b"x")
                    except OSError:
                        pass  # cut (or refused): as it should be
                time.sleep(0.2)

        threading.Thread(target=drip, daemon=True).start()
        took = _scrape_within(server.url, DEADLINE_S + MARGIN_S)
        assert took is not None, "the drip-fed connections kept every slot"
        stop.set()
        assert all(_closed_by_server(c) for c in conns)
    finally:
        stop.set()
        for c in conns:
            c.close()
        server.close()


class Big:
    """A collector whose answer is larger than the socket buffers of a
    reader that does not read: its write blocks."""

    def collect(self):
        g = GaugeMetricFamily("jvpn_test_filler", "Filler.", labels=["n"])
        for n in range(100):  # 10 MB, quick to format: few samples, long labels
            g.add_metric([f"{n:0100000d}"], n)
        yield g


def _drip_read(conn: socket.socket, got: list[int], stop: threading.Event) -> None:
    """Reads 1 kB every 0.2 s: each of the server's writes makes progress,
    so only a deadline per connection ends it."""
    conn.settimeout(MARGIN_S)
    try:
        while not stop.is_set() and (chunk := conn.recv(1024)):
            got[0] += len(chunk)
            time.sleep(0.2)
        got[1] = 1  # the server ended it (or the test did)
    except OSError:
        got[1] = 1


def test_a_reader_that_reads_the_answer_slowly_is_cut_at_the_deadline():
    server = MetricsServer(("127.0.0.1", 0), deadline_s=DEADLINE_S)
    server.registry.register(Big())
    whole = len(generate_latest(server.registry))
    stop = threading.Event()
    readers, conns = [], []
    try:
        for _ in range(MAX_SCRAPES):
            c = socket.socket()
            c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            c.connect(server.address)
            c.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")
            got = [0, 0]
            t = threading.Thread(target=_drip_read, args=(c, got, stop), daemon=True)
            t.start()
            conns.append(c)
            readers.append((t, got))
        time.sleep(DEADLINE_S / 2)  # both accepted: their answers are being written
        took = _scrape_within(server.url, DEADLINE_S + MARGIN_S)
        assert took is not None, "the slow readers kept every slot"
        for t, got in readers:  # ended by the server, before the whole answer
            t.join(MARGIN_S)
            assert got[1] == 1 and 0 < got[0] < whole
    finally:
        stop.set()
        for c in conns:
            c.close()
        server.close()


def test_at_most_two_scrapes_at_once():
    server = MetricsServer(("127.0.0.1", 0))
    held, busy = hold_every_slot(server)  # two scrapes in progress (idle ones are evicted)
    try:
        assert MAX_SCRAPES == 2 and not _scrapes(server.url)  # the third is closed at once
    finally:
        held.release.set()
        for c in busy:
            c.close()
        server.close()


# ------------------------------------------------------- the control lock
def _collector(g, clock, per_peer: bool = True) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(GatewayCollector(EventTally(g.timer_ms), g, "jvpn-gw", per_peer=per_peer,
                                       clock=clock))
    return registry


def test_concurrent_scrapes_share_one_snapshot_and_one_hold_of_the_lock(gw):
    handshake(gw)
    now = [50.0]
    registry = _collector(gw, lambda: now[0])
    lock = gw.control = CountingLock(gw.control)
    start = threading.Barrier(8)
    bodies = []

    def scrape():
        start.wait()
        bodies.append(generate_latest(registry))

    threads = [threading.Thread(target=scrape) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(bodies) == 8 and len(set(bodies)) == 1
    assert len(lock.holds) == 1  # one build for the 8, one hold of the lock in it
    now[0] += SNAPSHOT_MAX_AGE_S
    generate_latest(registry)
    assert len(lock.holds) == 2  # an older snapshot is built again


class WatchedTraffic(Traffic):
    __slots__ = ("lock", "read_under_lock")

    def figures(self):
        self.read_under_lock = self.read_under_lock or self.lock.held_here()
        return super().figures()


class KernelCounts(UserspaceGate):
    """As the XDP gate: received traffic from a map lookup per session."""

    def __init__(self, lock):
        super().__init__()
        self.checks_in_kernel = True
        self.lock, self.lookups_under_lock, self.lookups = lock, 0, 0

    def runtime(self, session_id):
        self.lookups += 1
        self.lookups_under_lock += self.lock.held_here()
        return (1, 100)


def test_sessions_are_read_and_looked_up_after_the_control_lock(gw):
    handshake(gw)
    handshake(gw, peer=1)
    lock = gw.control = CountingLock(gw.control)
    for live in gw.table.sessions.values():
        live.traffic = WatchedTraffic()
        live.traffic.lock, live.traffic.read_under_lock = lock, False
    gw.gate = KernelCounts(lock)
    generate_latest(_collector(gw, Clock(), per_peer=True))
    rows = snapshot.sessions(gw)  # the operator's `sessions`: the same way
    assert [r["rx_from"] for r in rows] == ["xdp", "xdp"] and gw.gate.lookups == 4
    assert gw.gate.lookups_under_lock == 0
    assert not any(live.traffic.read_under_lock for live in gw.table.sessions.values())
    assert len(lock.holds) == 2  # once per snapshot, for the references


def test_the_lock_hold_does_not_grow_with_the_table(gw):
    """50k sessions: the hold is two copies of references (well under a
    millisecond here), bounded with a wide margin."""
    peer = handshake(gw)
    live = gw.table.sessions[peer.session_id]
    for i in range(1, 50_001):
        gw.table.sessions[peer.session_id + i] = copy.copy(live)
    lock = gw.control = CountingLock(gw.control)
    body = generate_latest(_collector(gw, Clock(), per_peer=True)).decode()
    assert 'jvpn_sessions{state="ATTACHED"} 50001.0' in body
    assert len(lock.holds) == 1 and lock.holds[0] < 0.1


# --------------------------------------------------------- MetricsPeers
def test_the_per_peer_series_are_served_only_with_metrics_peers(gw):
    handshake(gw)
    names = ("wireguard_sent_bytes", "wireguard_received_bytes",
             "wireguard_latest_handshake_seconds")
    secret = (keys.encode(PUBS[0]), keys.encode(PUBS[1]), "alice", "bob", "10.99.0.2/32")
    for per_peer in (False, True):
        server = MetricsServer(("127.0.0.1", 0), per_peer=per_peer)
        try:
            server.attach(gw, "jvpn-gw")
            with urllib.request.urlopen(server.url, timeout=5) as r:
                body = r.read().decode()
        finally:
            server.close()
        assert 'jvpn_sessions{state="ATTACHED"} 1.0' in body
        assert all((n in body) is per_peer for n in names), per_peer
        assert all((s in body) is per_peer for s in secret), per_peer


def _load(tmp_path, extra: str):
    return load_gateway_files(tmp_path, extra)


def test_metrics_peers_is_off_by_default_and_read_as_yes_or_no(tmp_path):
    assert _load(tmp_path, "MetricsListen = 9586\n").metrics_peers is False
    assert _load(tmp_path, "MetricsListen = 9586\nMetricsPeers = yes\n").metrics_peers is True
    assert _load(tmp_path, "MetricsListen = 9586\nMetricsPeers = no\n").metrics_peers is False
    with pytest.raises(ConfigError, match=r"gw\.conf:7: MetricsPeers: 'all': must be yes or no$"):
        _load(tmp_path, "MetricsListen = 9586\nMetricsPeers = all\n")
    with pytest.raises(ConfigError, match=r"gw\.conf:6: MetricsPeers: only meaningful with "
                                          "MetricsListen$"):
        _load(tmp_path, "MetricsPeers = yes\n")


def test_gateway_check_shows_metrics_peers_and_a_reload_does_not_change_it(tmp_path):
    off = _load(tmp_path, "MetricsListen = 9586\n")
    [row] = [r for r in gateway_rows(off) if r.key == "MetricsPeers"]
    assert row.value == "no" and "no per-peer series" in row.note
    on = _load(tmp_path, "MetricsListen = 9586\nMetricsPeers = yes\n")
    [row] = [r for r in gateway_rows(on) if r.key == "MetricsPeers"]
    assert row.value == "yes" and row.source.endswith("gw.conf:7")
    assert restart_only_changes(off, on, tmp_path / "gw.conf") == (
        f"{tmp_path / 'gw.conf'}: MetricsPeers: changed, and only a restart applies it "
        "(a reload applies PeersFile and Policy)")
