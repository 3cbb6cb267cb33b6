"""The gateway's /metrics, `sessions` and `health` in the lab (issue 12,
inspect): a gateway with the XDP gate and MetricsListen, a client passing a
stream through the tunnel and reattaching once (wifi -> lte); once the
client is frozen (no packet moves), the scraped values are the ones
`jvpn-xdp stats --json` and `sessions --json` show. Then the daemon stops
and `sessions` still reads the pinned maps."""

from __future__ import annotations

import json
import signal
import time
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from jvpn.lab.addresses import METRICS_PORT
from jvpn.lab.tunnel import TunnelLab
from jvpn_cli.views import NO_DAEMON

pytestmark = pytest.mark.kernel


@pytest.fixture
def tl(tmp_path):
    # MetricsPeers: the per-peer series too (off by default: docs/metrics.md)
    t = TunnelLab(tmp_path, gateway_extra=f"MetricsListen = {METRICS_PORT}\n"
                                          "MetricsPeers = yes\n").up()
    yield t
    if t.client is not None and t.client.poll() is None:
        t.client.send_signal(signal.SIGCONT)
    t.down()


def _scrape(tl) -> dict[tuple[str, tuple], float]:
    with tl.lab.inside("gw"), urllib.request.urlopen(
            f"http://127.0.0.1:{METRICS_PORT}/metrics", timeout=10) as r:
        text = r.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def _quiet_reads(tl) -> tuple[dict, list, dict]:
    """stats, sessions and a scrape between two equal reads of both: no
    counter moved and no session changed state (the frozen client's session
    goes VOLATILE on its own) while they were read."""
    for _ in range(20):
        stats, sessions = tl.cli_json("stats", "gw0")["gw0"], _sessions(tl)
        metrics = _scrape(tl)
        if (tl.cli_json("stats", "gw0")["gw0"], _sessions(tl)) == (stats, sessions):
            return stats, sessions, metrics
        time.sleep(0.3)
    raise AssertionError("the gate's counters or the session kept changing, client frozen")


def _accepts(tl) -> list[dict]:
    return [e for e in tl.gateway_events() if e["event_type"] == "ReattachResult"
            and e["reason_code"] == "REATTACH_ACCEPT"]


def _sessions(tl) -> list[dict]:
    """`sessions --json` without the ages (they grow between two reads)."""
    return [{k: v for k, v in row.items() if k not in ("key_age_s", "last_rx_age_s")}
            for row in tl.cli_json("sessions", "gw0")["gw0"]]


def test_metrics_match_stats_and_sessions(tl):
    finish = tl.stream(2_000_000, 4.0)
    time.sleep(1.0)
    tl.lab.link("cl", "wifi", "down")  # wifi -> lte: one reattach, timed
    tl.wait(lambda: _accepts(tl), "the reattach")
    sent, received = finish()
    assert sent == received
    tl.client.send_signal(signal.SIGSTOP)  # no keepalive, no data: the counters settle
    time.sleep(0.5)
    stats, sessions, m = _quiet_reads(tl)

    for reason, v in stats.items():
        assert m[("jvpn_xdp_packets_total", (("reason", reason),))] == v["packets"], reason
        assert m[("jvpn_xdp_bytes_total", (("reason", reason),))] == v["bytes"], reason
    assert stats["pass_data"]["packets"] > 1000

    [s] = sessions
    assert s["peer"] == "alice" and s["inner"] and s["public_key"]
    assert s["rx_bytes"] > 2_000_000 and s["tx_bytes"] > 0 and s["tx_packets"] > 0
    peer = (("allowed_ips", ",".join(s["allowed_ips"])), ("friendly_name", "alice"),
            ("interface", "jvpn-gw"), ("public_key", s["public_key"]))
    assert m[("wireguard_received_bytes_total", peer)] == s["rx_bytes"]
    assert m[("wireguard_sent_bytes_total", peer)] == s["tx_bytes"]
    assert m[("wireguard_latest_handshake_seconds", peer)] == s["last_handshake_ms"] / 1000
    # the key lifecycle (issue 13): the same epoch both ways, keys no older than the session
    assert m[("jvpn_peer_key_epoch", peer)] == s["key_epoch"] >= 0
    assert s["keys_ms"] >= s["created_ms"] and m[("jvpn_key_age_max_seconds", ())] >= 0
    assert m[("jvpn_sessions", (("state", s["state"]),))] == 1
    assert m[("jvpn_handshakes_total", (("result", "HANDSHAKE_OK"),))] == 1
    accepts = _accepts(tl)
    assert m[("jvpn_reattaches_total", (("result", "REATTACH_ACCEPT"),))] == len(accepts)
    assert m[("jvpn_reattach_latency_seconds_count", ())] == len(accepts)
    assert 0 < m[("jvpn_reattach_latency_seconds_sum", ())] < 10
    assert m[("process_resident_memory_bytes", ())] > 0 and m[("process_open_fds", ())] > 0
    assert m[("jvpn_thread_alive", (("thread", "udp"),))] == 1

    health = tl.cli_json("health")
    assert health["ok"] is True and health["gate"] == "xdp" and health["sessions"] == 1
    assert all(health["threads"].values()) and "xdp-events" in health["threads"]
    assert health["store"]["reachable"] is True and health["process"]["rss_bytes"] > 0

    frame = tl.jvpn_in("gw", {**tl.env, "COLUMNS": "80"}, "top", "--once")
    assert frame.returncode == 0, frame.stderr
    assert "healthy" in frame.stdout and "alice" in frame.stdout and "pass_data" in frame.stdout

    tl.client.send_signal(signal.SIGCONT)
    tl.stop_gateway()
    out = tl.jvpn_in("gw", tl.env, "sessions", "gw0", "--json")
    assert out.returncode == 0, out.stderr
    assert out.stderr.strip() == NO_DAEMON
    [kernel] = json.loads(out.stdout)["gw0"]
    assert kernel["session_id"] == s["session_id"] and kernel["peer"] is None
    assert kernel["rx_bytes"] >= s["rx_bytes"]
    narrow = tl.jvpn_in("gw", {**tl.env, "COLUMNS": "80"}, "sessions", "gw0")
    assert narrow.returncode == 0 and s["session_id"][:8] + "…" in narrow.stdout
    assert max(map(len, narrow.stdout.splitlines())) <= 80
