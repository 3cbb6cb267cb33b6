"""A path that drops the client's data but passes its heartbeats (review
r14a F4): a path MTU black hole, a shaper that spares small packets, an
on-path attacker. The heartbeat echo says how many DATA messages the
gateway delivered; the client compares it with what it sent from the path
(docs/protocol.md "Measuring the active path: data delivered"). The
simulated network of test_client_paths.py (real client, real gateway);
its clock is simulated."""

from __future__ import annotations

from types import SimpleNamespace

from test_client_paths import LTE, WIFI, Net

from jvpn import wire
from jvpn.codes import EventType
from jvpn.gate import abi
from jvpn.gateway import datapath
from kits.daemon_kit import events_of


def drop_data_on(net: Net, every: int) -> list[int]:
    """The active socket's path drops every ``every``-th DATA message
    (1: all of them) and passes everything else, heartbeats included."""
    sock = net.client.sock
    plain, seen = sock.sendto, [0]

    def sendto(msg, dst):
        if msg[0] == abi.MSG_DATA:
            seen[0] += 1
            if seen[0] % every == 0:
                return len(msg)  # gone on the wire
        return plain(msg, dst)

    sock.sendto = sendto
    return seen


def test_a_path_that_drops_all_data_but_passes_heartbeats_is_left_within_a_window(tmp_path):
    net = Net(tmp_path)
    net.run(4_000, data_every=10)
    drop_data_on(net, 1)
    delivered, start = len(net.gw.tun.written), net.clock.ms
    moved_at = None
    for _ in range(400):
        net.run(10, data_every=10)
        if net.active_source() == LTE.source and len(net.gw.tun.written) > delivered:
            moved_at = net.clock.ms
            break
    # a fifth of the window's data lost (the threshold), then the switch
    assert moved_at is not None and moved_at - start <= net.client.policy.loss_window_ms
    [vol] = events_of(net.events, EventType.PATH_VOLATILE)[:1]
    assert vol["reason_code"] == "loss_threshold_exceeded" and vol["detail"] == "data"
    threshold = net.client.policy.loss_volatile_threshold
    assert vol["interface"] == "wifi" and vol["data_loss"] > threshold
    assert vol["consecutive_drops"] == 0  # its heartbeats were all answered
    net.run(5_000, data_every=10)  # the new path delivers: nothing more to say
    [sel] = events_of(net.events, EventType.PATH_SELECTED)
    assert sel["reason_code"] == "loss_threshold_exceeded" and sel["candidate_interface"] == "lte"
    assert len(events_of(net.events, EventType.PATH_VOLATILE)) == 1
    assert net.active_source() == LTE.source and net.client.health.data_loss(net.clock.ms) == 0


def test_a_path_that_drops_5_percent_of_data_is_kept(tmp_path):
    net = Net(tmp_path)
    net.run(4_000, data_every=10)
    seen = drop_data_on(net, 20)
    net.run(30_000, data_every=10)
    assert seen[0] > 2_500
    assert net.active_source() == WIFI.source
    assert events_of(net.events, EventType.PATH_VOLATILE) == []


def test_an_older_gateways_echo_turns_the_check_off(tmp_path, monkeypatch):
    """An older gateway echoes the counter alone (8 bytes): heartbeats are
    measured as before, and nothing is said about data."""

    class CounterOnly:
        @staticmethod
        def pack(counter, _delivered, _incarnation):
            return wire.KEEPALIVE_ECHO_V1.pack(counter)

    monkeypatch.setattr(datapath, "wire", SimpleNamespace(KEEPALIVE_ECHO=CounterOnly))
    net = Net(tmp_path)
    net.run(4_000, data_every=10)
    drop_data_on(net, 1)
    net.run(6_000, data_every=10)
    c = net.client
    assert c.echoes_seen and c.health.window_loss(net.clock.ms) == 0.0
    assert c.health.data_loss(net.clock.ms) is None
    assert net.active_source() == WIFI.source
    assert events_of(net.events, EventType.PATH_VOLATILE) == []


def test_a_delivered_count_that_starts_again_is_no_alarm(tmp_path):
    """The gateway's count restarts (a daemon restart, a handover to
    another cluster gateway: a new session in memory there, under a new
    incarnation): the count in the echoes falls, and the comparison starts
    again from there."""
    net = Net(tmp_path)
    net.run(4_000, data_every=10)
    live = net.gw.table.get(net.client.session_id)
    for _ in range(3):
        live.traffic.delivered = 0
        live.traffic.incarnation += 1
        net.run(3_000, data_every=10)
    assert net.client.health.data_loss(net.clock.ms) == 0.0
    assert net.active_source() == WIFI.source
    assert events_of(net.events, EventType.PATH_VOLATILE) == []


def test_an_older_gateways_count_that_starts_again_is_no_alarm(tmp_path, monkeypatch):
    """An older gateway's 16-byte echo has no incarnation: a count that
    falls for a newer heartbeat is taken for a new count, as before."""

    class NoIncarnation:
        @staticmethod
        def pack(counter, delivered, _incarnation):
            return wire.KEEPALIVE_ECHO_V2.pack(counter, delivered)

    monkeypatch.setattr(datapath, "wire", SimpleNamespace(KEEPALIVE_ECHO=NoIncarnation))
    net = Net(tmp_path)
    net.run(4_000, data_every=10)
    live = net.gw.table.get(net.client.session_id)
    for _ in range(3):
        live.traffic.delivered = 0
        net.run(3_000, data_every=10)
    assert net.client.health.data_loss(net.clock.ms) == 0.0
    assert net.active_source() == WIFI.source
    assert events_of(net.events, EventType.PATH_VOLATILE) == []
