"""No datagram and no store value can stop the gateway (issue 10 items 1 and 2,
and the tunnel mechanisms of items 9 and 14 in the data path): every loop
contains its errors and reports them as rate-limited events; a thread that
still ends takes the process down with one clear line; store reads skip what
they cannot parse. The daemon's real wiring over a fake socket and TUN
(tests/kits/daemon_kit.py)."""

from __future__ import annotations

import errno
import os
import sqlite3

import pytest

from jvpn import wire
from jvpn.events import EventLog
from jvpn.gate import abi
from jvpn.gate.userspace import UserspaceGate
from jvpn.gateway.supervise import INCIDENT_INTERVAL_MS
from jvpn.lab.wait import wait_until
from jvpn.session import State, Transport
from jvpn.store import StoreError
from jvpn.store.sqlite import SqliteStore
from kits.daemon_kit import (
    CLIENT,
    PEER_INNER,
    AdmitAll,
    Clock,
    Peer,
    events_of,
    handshake,
    initiation,
    ipv4,
    make_gateway,
)

NEW = ("198.51.100.7", 6000)


@pytest.fixture
def running():
    """Gateways started by a test, stopped after it."""
    started = []

    def start(gw):
        gw.start()
        started.append(gw)
        return gw

    yield start
    for gw in started:
        gw.stop()
        gw.store.close()


def _threads_alive(gw) -> None:
    assert gw.fatal is None
    assert gw.supervisor.dead() == []


def _errors(gw, reason=None) -> list[dict]:
    return [e for e in events_of(gw.events, "DaemonError")
            if reason is None or e["reason_code"] == reason]


# ------------------------------------------------------------ item 1: port 0
def test_port_zero_initiation_under_cookie_load_is_dropped_and_the_loop_lives(tmp_path, running):
    """Cookie mode, then one initiation with a valid mac1 from source port 0:
    its COOKIE_REPLY cannot be sent (EINVAL). The daemon drops port 0 before
    any work, as the XDP gate does, and serves the next client."""
    gw = running(make_gateway(tmp_path, gate=AdmitAll(), cookie_threshold_per_s=2))
    for i in range(4):  # more than 2 per second: cookie mode
        gw.sock.deliver(initiation().initiation(), (f"192.0.2.{20 + i}", 4000 + i))
    gw.sock.deliver(initiation().initiation(), ("192.0.2.66", 0))
    gw.sock.settle()
    assert ("192.0.2.66", 0) not in gw.sock.attempts
    assert gw.datapath.dropped["source_port_0"] == 1
    _threads_alive(gw)


def test_no_send_error_ends_a_loop(tmp_path, running):
    """Every send of the daemon fails (ENOBUFS): handshake responses, keepalive
    replies, the TUN loop's data. Every loop lives on and reports it."""
    gw = running(make_gateway(tmp_path))
    client = handshake(gw)
    gw.sock.fail_sends = errno.ENOBUFS
    gw.sock.deliver(client.seal(b"", abi.MSG_KEEPALIVE), CLIENT)
    gw.sock.deliver(initiation(1).initiation(), ("192.0.2.11", 7777))
    gw.tun.deliver(ipv4(PEER_INNER[1], dst=str(PEER_INNER[0])))
    gw.sock.settle()
    gw.tun.settle()
    gw.sock.fail_sends = None
    gw.sock.deliver(client.seal(b"", abi.MSG_KEEPALIVE), CLIENT)
    gw.sock.settle()
    assert gw.sock.sent[-1][1] == CLIENT  # answered again
    _threads_alive(gw)


# ------------------------------------------------------------ item 2: contained errors
class FloorFails(SqliteStore):
    fail_floor = False

    def set_floor(self, session_id, floor):
        if self.fail_floor:
            raise StoreError("counter floor write failed (disk full)")
        super().set_floor(session_id, floor)


def test_counter_floor_write_failure_sends_nothing_and_ends_no_thread(tmp_path, running):
    store = FloorFails(tmp_path / "s.db")
    gw = running(make_gateway(tmp_path, store=store))
    client = handshake(gw)
    store.fail_floor = True
    n = len(gw.sock.sent)
    gw.tun.deliver(ipv4(PEER_INNER[1], dst=str(PEER_INNER[0])))  # TUN loop: a counter
    gw.sock.deliver(client.seal(b"", abi.MSG_KEEPALIVE), CLIENT)  # keepalive reply: a counter
    gw.sock.settle()
    gw.tun.settle()
    gw.tick()
    assert gw.sock.sent[n:] == []  # no counter above the durable floor was used
    assert _errors(gw, "COUNTER_UNAVAILABLE")
    _threads_alive(gw)


def test_a_reattach_without_a_send_counter_is_refused_before_any_change(tmp_path):
    """The control path takes its reply's counter before it commits: a
    counter it cannot have turns into a rejection, the record unchanged."""
    store = FloorFails(tmp_path / "s.db")
    gw = make_gateway(tmp_path, store=store)
    client = handshake(gw)
    sid = client.session_id
    before = store.get(sid)[0]
    store.fail_floor = True
    req = wire.seal_control(
        wire.Header(type=abi.MSG_REATTACH_REQ, session_id=sid, counter=client.next_counter()),
        client_keys(client).hdr_c2s, client_keys(client).reattach, 1, gw.clock_ms(),
        b"n" * wire.NONCE_LEN, 0)
    gw.datapath.datagram(req, NEW)
    assert store.get(sid)[0] == before and gw.sessions[sid].record == before
    [res] = events_of(gw.events, "ReattachResult")
    assert res["reason_code"] == "COUNTER_UNAVAILABLE" and res["accepted"] is False
    store.close()


class FullMapGate(UserspaceGate):
    full = False

    def put(self, *a, **kw):
        if self.full:
            raise OSError(errno.E2BIG, "Argument list too long")
        super().put(*a, **kw)


def test_a_full_sessions_map_ends_no_thread(tmp_path, running):
    gate = FullMapGate()
    gw = running(make_gateway(tmp_path, gate=gate))
    gate.full = True
    gw.sock.deliver(initiation().initiation(), CLIENT)
    gw.sock.settle()
    [err] = _errors(gw, "OS_ERROR")
    assert "E2BIG" in err["detail"] and err["where"] == "udp"
    gate.full = False
    handshake(gw, ("192.0.2.12", 5000), peer=1)  # the next one is served
    _threads_alive(gw)


class StoreOutage(SqliteStore):
    down = False

    def _check(self):
        if self.down:
            raise StoreError("etcd get at 127.0.0.1:2379 failed: connection refused")

    def get(self, sid):
        self._check()
        return super().get(sid)

    def create(self, rec, secrets):
        self._check()
        return super().create(rec, secrets)


def test_a_store_outage_during_a_handshake_ends_no_thread(tmp_path, running):
    store = StoreOutage(tmp_path / "s.db")
    gw = running(make_gateway(tmp_path, store=store))
    store.down = True
    gw.sock.deliver(initiation().initiation(), CLIENT)
    gw.sock.settle()
    assert gw.sessions == {}
    store.down = False
    handshake(gw)
    _threads_alive(gw)


def test_a_failing_events_file_does_not_stop_a_reattach(tmp_path):
    """The first event of a reattach used to end the network thread, the
    session stuck in RECOVERING. Now the reattach completes; the failures are
    counted and reported (not into the failing file)."""
    log, clock = EventLog("gw-test", tmp_path / "events.jsonl"), Clock()
    gw = make_gateway(tmp_path, events=log, clock=clock)
    client = handshake(gw)
    log._file._fd = os.open("/dev/full", os.O_WRONLY)  # fault injection: ENOSPC from now on
    ack = reattach(gw, client, NEW)
    assert ack is not None and gw.sessions[client.session_id].record.binding == Transport(*NEW)
    assert log.write_errors > 0
    clock.ms += INCIDENT_INTERVAL_MS + 1
    gw.tick()
    assert _errors(gw, "EVENTS_WRITE_FAILED")
    gw.store.close()


def test_one_event_per_kind_per_interval_with_a_count(tmp_path):
    clock = Clock()
    gw = make_gateway(tmp_path, clock=clock, gate=FullMapGate())
    gw.gate.full = True
    for i in range(50):
        gw.datapath.receive(initiation(clock_ms=clock).initiation(), (f"192.0.2.{i + 1}", 5000))
    assert len(_errors(gw)) == 1  # the first, at once
    clock.ms += INCIDENT_INTERVAL_MS + 1
    gw.tick()
    [first, summary] = _errors(gw)
    assert (first["count"], summary["count"]) == (1, 49)
    gw.store.close()


# ------------------------------------------------------------ store values
def _plant_malformed_row(path, sid=0x0BAD):
    db = sqlite3.connect(str(path))
    db.execute("INSERT INTO sessions VALUES (?,?,?,?)", (sid, 1, '{"state": "NOPE"}', b""))
    db.commit()
    db.close()


def test_sqlite_reads_skip_and_report_a_record_they_cannot_parse(tmp_path):
    store = SqliteStore(tmp_path / "s.db")
    _plant_malformed_row(tmp_path / "s.db")
    seen = []
    store.on_unreadable = lambda key, detail: seen.append(key)
    assert store.list() == []
    assert store.get(0x0BAD) is None
    assert seen == ["0000000000000bad", "0000000000000bad"]
    store.close()


def test_a_malformed_stored_value_blocks_no_start_and_stops_no_timer(tmp_path, running):
    store = SqliteStore(tmp_path / "s.db")
    _plant_malformed_row(tmp_path / "s.db")
    gw = running(make_gateway(tmp_path, store=store))
    handshake(gw)
    gw.tick()
    assert _errors(gw, "STORE_RECORD_UNREADABLE")
    _threads_alive(gw)


# ------------------------------------------------------------ supervision
def test_a_thread_that_ends_ends_the_gateway_with_one_line(tmp_path):
    gw = make_gateway(tmp_path)
    told = []
    gw.sock.fail_read = errno.EIO  # the receive loop cannot go on
    gw.start(on_fatal=told.append)
    try:
        wait_until(lambda: told, "the supervisor to notice", 5)
        [line] = told
        assert "\n" not in line and "udp" in line and gw.fatal == line
        assert events_of(gw.events, "DaemonError")[-1]["reason_code"] == "THREAD_DIED"
    finally:
        gw.stop()
        gw.store.close()


class DetachedGate(AdmitAll):
    """The XDP gate as the watch sees it once someone detached it."""

    def detached(self) -> str | None:
        return "no program attached to gw0"


def test_a_lost_gate_takes_the_same_fatal_path_once(tmp_path):
    gw = make_gateway(tmp_path, gate=DetachedGate())
    told = []
    gw.start(on_fatal=told.append)
    try:
        wait_until(lambda: told, "the gate watch to notice", 5)
        [line] = told
        assert line.startswith("the XDP gate is gone") and gw.fatal == line
        [lost] = events_of(gw.events, "GateLost")
        assert lost["reason_code"] == "GATE_DETACHED"
        gw.supervisor.join(2)  # the loops end as stopping: no second cause, no THREAD_DIED
        assert told == [line] and not _errors(gw, "THREAD_DIED")
    finally:
        gw.stop()
        gw.store.close()


# ------------------------------------------------------------ item 14 in the data path
def test_an_authenticated_client_cannot_send_as_another_peer(tmp_path):
    clock = Clock()
    gw = make_gateway(tmp_path, clock=clock)
    client = handshake(gw)
    for m in client.seal_packet(ipv4(PEER_INNER[1], payload=b"s" * 3000)):  # fragmented
        gw.datapath.datagram(m, CLIENT)
    gw.datapath.datagram(client.seal(ipv4(PEER_INNER[1])), CLIENT)
    gw.datapath.datagram(client.seal(ipv4(PEER_INNER[0])), CLIENT)
    assert gw.tun.written == [ipv4(PEER_INNER[0])]
    clock.ms += INCIDENT_INTERVAL_MS + 1
    gw.tick()
    [sec] = [e for e in events_of(gw.events, "SecurityEvent")
             if e["reason_code"] == "SEC_INNER_SOURCE_SPOOFED"]
    assert sec["count"] == 2 and sec["session_id"] == f"{client.session_id:016x}"
    gw.tick()  # counts per interval: nothing new, nothing reported
    assert len([e for e in events_of(gw.events, "SecurityEvent")
                if e["reason_code"] == "SEC_INNER_SOURCE_SPOOFED"]) == 1
    gw.store.close()


# ------------------------------------------------------------ helpers
def client_keys(client: Peer):
    return client.keys


def reattach(gw, client: Peer, src) -> bytes | None:
    """A whole reattach from ``src`` through the dispatch: the ACK, if any."""
    sid = client.session_id
    keys = client_keys(client)
    rec = gw.sessions[sid].record
    n = len(gw.sock.sent)
    gw.datapath.datagram(wire.seal_control(
        wire.Header(type=abi.MSG_REATTACH_REQ, session_id=sid, counter=client.next_counter()),
        keys.hdr_c2s, keys.reattach, 1, gw.clock_ms(), b"c" * wire.NONCE_LEN, rec.epoch), src)
    out = gw.sock.sent[n:]
    if len(out) != 1 or wire.parse_header(out[0][0]).type != abi.MSG_PATH_CHALLENGE:
        return None
    _hdr, (server_nonce, client_nonce) = wire.open_control(out[0][0], keys.reattach)
    gw.datapath.datagram(wire.seal_control(
        wire.Header(type=abi.MSG_PATH_RESPONSE, session_id=sid, counter=client.next_counter()),
        keys.hdr_c2s, keys.reattach, server_nonce, client_nonce), src)
    out = gw.sock.sent[n + 1:]
    ok = [m for m, _to in out if wire.parse_header(m).type == abi.MSG_REATTACH_ACK]
    assert gw.sessions[sid].record.state is State.ATTACHED or not ok
    return ok[0] if ok else None
