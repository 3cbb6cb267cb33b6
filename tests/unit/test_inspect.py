"""The operator's view of a running gateway (issue 12, inspect): the session
snapshot with peer identity and traffic, health, the Prometheus collector
and its event tally, MetricsListen. The daemon's real wiring over a fake
socket and TUN (tests/kits/daemon_kit.py); no root."""

from __future__ import annotations

import os
import urllib.request

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from unit.test_metrics_idle import hold_every_slot

from jvpn import keys, operator
from jvpn.codes import EventType, Reason
from jvpn.config import ConfigError, PeerConfig
from jvpn.config_report import gateway_rows
from jvpn.errors import JvpnError
from jvpn.events import EventLog
from jvpn.gate import abi
from jvpn.gate.userspace import UserspaceGate
from jvpn.gateway import snapshot
from jvpn.gateway.daemon import Gateway
from jvpn.gateway.metrics import (
    SNAPSHOT_MAX_AGE_S,
    GatewayCollector,
    MetricsServer,
)
from jvpn.gateway.ownership import ClusterOwnership
from jvpn.gateway.reload import restart_only_changes
from jvpn.gateway.tally import EventTally
from jvpn.lab.wait import wait_until
from jvpn.policy import default_policy
from jvpn.store.sqlite import SqliteStore
from kits.daemon_kit import (
    ADDRESS,
    CLIENT,
    GW_KEY,
    LISTEN,
    PEER_INNER,
    PEER_KEYS,
    Clock,
    FakeSock,
    FakeTun,
    handshake,
    initiation,
    ipv4,
    load_gateway_files,
)

NAMES = ("alice", "bob")
PUBS = [keys.public_from_private(k) for k in PEER_KEYS]


def _gateway(tmp_path, clock: Clock, *, cookie_threshold_per_s: int = 50,
             operator_socket=None) -> Gateway:
    peers = {pub: PeerConfig(pub, inner, name)
             for pub, inner, name in zip(PUBS, PEER_INNER, NAMES, strict=True)}
    return Gateway(private_key=GW_KEY, listen=LISTEN, address=ADDRESS, peers=peers,
                   policy=default_policy(), store=SqliteStore(tmp_path / "s.db"),
                   gate=UserspaceGate(), events=EventLog("gw-test", clock_ms=clock),
                   clock_ms=clock, cookie_threshold_per_s=cookie_threshold_per_s,
                   sock=FakeSock(), tun=FakeTun(), operator_socket=operator_socket)


@pytest.fixture
def gw(tmp_path):
    g = _gateway(tmp_path, Clock())
    yield g
    g.store.close()


def _traffic(gw: Gateway) -> tuple[int, int, int, int]:
    """A session of alice's, data both ways: (rx packets, rx bytes, tx packets,
    tx bytes) as the wire carried them."""
    peer = handshake(gw)
    up = [m for p in (ipv4(PEER_INNER[0]), ipv4(PEER_INNER[0], payload=b"y" * 300))
          for m in peer.seal_packet(p)]
    for m in up:
        gw.datapath.datagram(m, CLIENT)
    before = len(gw.sock.sent)
    for _ in range(3):
        gw.datapath.downstream(ipv4(ADDRESS.ip, dst=str(PEER_INNER[0])))
    down = [m for m, _to in gw.sock.sent[before:]]
    return len(up), sum(map(len, up)), len(down), sum(map(len, down))


def test_sessions_name_the_peer_and_count_its_traffic(gw):
    rx_p, rx_b, tx_p, tx_b = _traffic(gw)
    gw.clock_ms.ms += 4_500
    [row] = snapshot.sessions(gw)
    assert row["peer"] == "alice" and row["public_key"] == keys.encode(PUBS[0])
    assert row["inner"] == str(PEER_INNER[0]) and row["allowed_ips"] == ["10.99.0.2/32"]
    assert row["bound"] == f"{CLIENT[0]}:{CLIENT[1]}" and row["state"] == "ATTACHED"
    assert row["confirmed"] is True and len(row["session_id"]) == 16
    assert (row["rx_packets"], row["rx_bytes"], row["rx_from"]) == (rx_p, rx_b, "daemon")
    assert (row["tx_packets"], row["tx_bytes"]) == (tx_p, tx_b) and tx_p == 3
    assert row["key_age_s"] == 4.5 and row["last_handshake_ms"] == row["created_ms"]
    assert row["last_rx_ms"] == row["created_ms"]  # the data came before the clock moved


def test_a_keepalive_and_its_reply_are_counted(gw):
    peer = handshake(gw)
    ka = peer.seal(b"", abi.MSG_KEEPALIVE)
    before = len(gw.sock.sent)
    gw.datapath.datagram(ka, CLIENT)
    [(reply, _to)] = gw.sock.sent[before:]
    [row] = snapshot.sessions(gw)
    assert (row["rx_packets"], row["rx_bytes"]) == (1, len(ka))
    assert (row["tx_packets"], row["tx_bytes"]) == (1, len(reply))


def test_sessions_take_received_traffic_from_the_kernel_when_it_checks(gw):
    _traffic(gw)
    gw.gate.checks_in_kernel = True  # as XdpGate: the runtime map counts what it passed
    gw.gate.runtime = lambda sid: (7, 700)
    [row] = snapshot.sessions(gw)
    assert (row["rx_packets"], row["rx_bytes"], row["rx_from"]) == (7, 700, "xdp")
    gw.gate.runtime = lambda sid: None  # no packet since the element was written
    assert snapshot.sessions(gw)[0]["rx_packets"] == 0


def test_states_name_every_state(gw):
    handshake(gw)
    counts = snapshot.states(snapshot.sessions(gw))
    assert counts["BIRTH"] == 0 and sum(counts.values()) == 1 and len(counts) == 6


def test_health_of_a_running_gateway_then_of_a_lost_store(tmp_path):
    g = _gateway(tmp_path, Clock())
    g.start()
    try:
        h = snapshot.health(g)
        assert h["ok"] is True and h["cluster"] is None and h["gate"] == "userspace"
        assert {"udp", "tun", "timer"} <= set(h["threads"]) and all(h["threads"].values())
        assert h["store"]["reachable"] is True and h["store"]["error"] is None
        p = h["process"]
        assert p["pid"] == os.getpid() and p["rss_bytes"] > 0 and p["open_fds"] > 0
        assert h["draining"] is False
        g.drain(True)
        assert snapshot.health(g)["draining"] is True
        g.store.close()  # the store stops answering
        h = snapshot.health(g)
        assert h["ok"] is False and h["store"]["reachable"] is False and h["store"]["error"]
    finally:
        g.stop()


class LeaseStore:
    """Enough of a cluster store for the ownership's lease questions."""

    lease_id = 0x77

    def __init__(self):
        self.valid = True

    def lease_valid(self, _margin_s: float) -> bool:
        return self.valid


def test_health_in_a_cluster_names_the_lease_and_the_fence(gw):
    store = LeaseStore()
    gw.ownership = ClusterOwnership(store, "gw-a")
    h = snapshot.health(gw)
    assert h["cluster"] == {"node_id": "gw-a", "lease": 0x77, "lease_valid": True,
                            "fenced": False}
    store.valid, gw.table.fenced = False, True  # the lease lapsed: nothing passes
    h = snapshot.health(gw)
    assert h["cluster"]["lease_valid"] is False and h["cluster"]["fenced"] is True
    assert h["ok"] is False


def test_sessions_and_health_through_the_operator_socket(tmp_path):
    path = tmp_path / "run" / "gateway.sock"
    g = _gateway(tmp_path, Clock(), operator_socket=path)
    g.start()
    try:
        handshake(g, peer=1)
        got = operator.call(path, "sessions")
        assert got["gate"] == "userspace" and got["interface"] is None
        [row] = got["sessions"]
        assert row["peer"] == "bob" and row["public_key"] == keys.encode(PUBS[1])
        h = operator.call(path, "health")
        assert h["ok"] is True and h["threads"]["operator"] is True and h["sessions"] == 1
        f = operator.call(path, "figures")
        assert f["handshakes"] == {"HANDSHAKE_OK": 1} and f["cookie_replies"] == 0
        assert f["counters"] == g.gate.read_counters() and f["reattach_latency"]["count"] == 0
    finally:
        g.stop()
        g.store.close()


def test_tally_counts_reattaches_with_latency_handshakes_and_cookies():
    clock = Clock()
    log, tally = EventLog("t", clock_ms=clock), EventTally(clock)  # both clocks: one
    log.add_listener(tally)
    log.emit(EventType.REATTACH_ATTEMPT, Reason.RECOVERY_START, 0x11)
    clock.ms += 3_000  # that challenge expired (DEGRADED); the next attempt is timed
    log.emit(EventType.REATTACH_ATTEMPT, Reason.RECOVERY_START, 0x11)
    clock.ms += 70
    log.emit(EventType.REATTACH_RESULT, Reason.REATTACH_ACCEPT, 0x11, accepted=True)
    log.emit(EventType.REATTACH_RESULT, Reason.AUTH_FAIL, 0x22, accepted=False)
    log.emit(EventType.SESSION_STATE_CHANGE, Reason.HANDSHAKE_OK, 0x11)
    log.emit(EventType.SESSION_STATE_CHANGE, Reason.VOLATILITY_SIGNAL, 0x11)
    log.emit(EventType.HANDSHAKE_REJECTED, Reason.REPLAY_DETECTED)
    for _ in range(3):
        log.emit_unauthenticated(EventType.HANDSHAKE_COOKIE, Reason.RATE_LIMITED)
    f = tally.figures()
    assert f["reattaches"] == {"REATTACH_ACCEPT": 1, "AUTH_FAIL": 1}
    assert f["handshakes"] == {"HANDSHAKE_OK": 1, "REPLAY_DETECTED": 1}
    assert f["cookie_replies"] == 3
    assert f["latency_sum_s"] == pytest.approx(0.07)
    log.emit(EventType.REATTACH_ATTEMPT, Reason.RECOVERY_START, 0x33)
    log.emit(EventType.SESSION_TERMINATED, Reason.TTL_SESSION_EXPIRED, 0x33)
    clock.ms += 10
    log.emit(EventType.REATTACH_RESULT, Reason.REATTACH_ACCEPT, 0x33)  # (cannot be: untimed)
    assert tally.figures()["latency_buckets"][-1][1] == 1
    buckets = dict(f["latency_buckets"])
    assert buckets[0.05] == 0 and buckets[0.1] == 1 and buckets[float("inf")] == 1


def test_a_listener_that_raises_changes_no_event():
    log = EventLog("t")
    log.add_listener(lambda ev: 1 / 0)
    assert log.emit(EventType.GATEWAY_STARTED, Reason.OK)["event_type"] == "GatewayStarted"
    assert len(log.recent) == 1


def _scrape(registry) -> dict[tuple[str, tuple], float]:
    out = {}
    for fam in text_string_to_metric_families(generate_latest(registry).decode()):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_collector_reads_the_live_gateway(tmp_path):
    g = _gateway(tmp_path, Clock(), cookie_threshold_per_s=50)
    tally = EventTally(g.timer_ms)
    g.events.add_listener(tally)
    registry = CollectorRegistry(auto_describe=False)
    now = [100.0]  # the snapshot's clock (seconds)
    registry.register(GatewayCollector(tally, g, "jvpn-gw", per_peer=True,
                                       clock=lambda: now[0]))
    try:
        _rx_p, rx_b, _tx_p, tx_b = _traffic(g)
        m = _scrape(registry)
        alice = (("allowed_ips", "10.99.0.2/32"), ("friendly_name", "alice"),
                 ("interface", "jvpn-gw"), ("public_key", keys.encode(PUBS[0])))
        bob = (("allowed_ips", "10.99.0.3/32"), ("friendly_name", "bob"),
               ("interface", "jvpn-gw"), ("public_key", keys.encode(PUBS[1])))
        assert m[("wireguard_sent_bytes_total", alice)] == tx_b
        assert m[("wireguard_received_bytes_total", alice)] == rx_b
        [row] = snapshot.sessions(g)
        assert m[("wireguard_latest_handshake_seconds", alice)] == row["created_ms"] / 1000
        assert m[("wireguard_sent_bytes_total", bob)] == 0  # configured, no session
        assert m[("jvpn_sessions", (("state", "ATTACHED"),))] == 1
        assert m[("jvpn_draining", ())] == 0
        assert m[("jvpn_handshakes_total", (("result", "HANDSHAKE_OK"),))] == 1
        counters = g.gate.read_counters()
        for reason, v in counters.items():  # the same numbers as `jvpn-xdp stats --json`
            assert m[("jvpn_xdp_packets_total", (("reason", reason),))] == v["packets"]
            assert m[("jvpn_xdp_bytes_total", (("reason", reason),))] == v["bytes"]
        assert sum(v["packets"] for v in counters.values()) > 0
        assert m[("process_resident_memory_bytes", ())] > 0
        assert m[("jvpn_reattach_latency_seconds_count", ())] == 0
        g.datapath.downstream(ipv4(ADDRESS.ip, dst=str(PEER_INNER[0])))
        # within SNAPSHOT_MAX_AGE_S a scrape shares the snapshot; after it, the state now
        now[0] += SNAPSHOT_MAX_AGE_S * 0.9
        assert _scrape(registry)[("wireguard_sent_bytes_total", alice)] == tx_b
        now[0] += SNAPSHOT_MAX_AGE_S * 0.1
        assert _scrape(registry)[("wireguard_sent_bytes_total", alice)] > tx_b
    finally:
        g.store.close()


def test_cookie_replies_are_counted_from_their_events(tmp_path):
    g = _gateway(tmp_path, Clock(), cookie_threshold_per_s=0)  # always a cookie first
    tally = EventTally(g.timer_ms)
    g.events.add_listener(tally)
    try:
        g.datapath.datagram(initiation().initiation(), CLIENT)
        assert len(g.sock.sent) == 1 and tally.figures()["cookie_replies"] == 1
        assert g.table.sessions == {}
    finally:
        g.store.close()


def test_metrics_server_serves_over_http_and_refuses_a_taken_port(tmp_path):
    g = _gateway(tmp_path, Clock())
    server = MetricsServer(("127.0.0.1", 0))
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.address[1]}/metrics") as r:
            assert b"jvpn_sessions" not in r.read()  # not attached yet: nothing to read
        server.attach(g, "jvpn-gw")
        handshake(g)
        with urllib.request.urlopen(f"http://127.0.0.1:{server.address[1]}/metrics") as r:
            body = r.read().decode()
        assert 'jvpn_sessions{state="ATTACHED"} 1.0' in body
        with pytest.raises(JvpnError, match=r"^gw\.conf:6: MetricsListen: 127\.0\.0\.1:\d+: "
                                            "cannot listen: Address already in use$"):
            MetricsServer(("127.0.0.1", server.address[1]), where="gw.conf:6: MetricsListen")
    finally:
        server.close()
        g.store.close()


def test_metrics_server_bounds_its_connections(tmp_path):
    server = MetricsServer(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{server.address[1]}/metrics"
    # scrapes in progress hold every slot (idle connections would be evicted)
    held, busy = hold_every_slot(server)
    try:
        with pytest.raises(OSError):  # closed at once, not queued behind them
            urllib.request.urlopen(url, timeout=5).read()
    finally:
        held.release.set()
        for s in busy:
            s.close()
    try:
        wait_until(lambda: _scrapes(url), "a scrape once the idle connections are gone")
    finally:
        server.close()


def _scrapes(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status == 200
    except OSError:
        return False


@pytest.mark.parametrize(("value", "want"), [
    ("9586", ("127.0.0.1", 9586)),
    ("0.0.0.0:9100", ("0.0.0.0", 9100)),
    ("[::1]:9100", ("::1", 9100)),
])
def test_metrics_listen_values(tmp_path, value, want):
    assert _load(tmp_path, f"MetricsListen = {value}\n").metrics_listen == want


def test_metrics_listen_is_off_by_default(tmp_path):
    assert _load(tmp_path, "").metrics_listen is None


def test_gateway_check_reports_metrics_listen(tmp_path):
    [off] = [r for r in gateway_rows(_load(tmp_path, "")) if r.key == "MetricsListen"]
    assert off.value is None and off.source == "default"
    [on] = [r for r in gateway_rows(_load(tmp_path, "MetricsListen = 9586\n"))
            if r.key == "MetricsListen"]
    assert on.value == "127.0.0.1:9586" and on.source == f"{tmp_path / 'gw.conf'}:6"


def test_a_reload_does_not_move_the_metrics_endpoint(tmp_path):
    old = _load(tmp_path, "MetricsListen = 9586\n")
    new = _load(tmp_path, "MetricsListen = 9587\n")
    assert restart_only_changes(old, new, tmp_path / "gw.conf") == (
        f"{tmp_path / 'gw.conf'}: MetricsListen: changed, and only a restart applies it "
        "(a reload applies PeersFile and Policy)")


@pytest.mark.parametrize("value", ["localhost:9586", "0", "1.2.3.4:70000", "[::1]9586",
                                   "[10.0.0.1]:9586", "::1:9586"])
def test_metrics_listen_refuses(tmp_path, value):
    with pytest.raises(ConfigError, match=r"gw\.conf:6: MetricsListen: "):
        _load(tmp_path, f"MetricsListen = {value}\n")


def _load(tmp_path, extra: str):
    return load_gateway_files(tmp_path, extra)


