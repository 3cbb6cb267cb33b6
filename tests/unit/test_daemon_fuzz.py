"""The daemon's message handling under random, truncated and mutated messages
of every type, from random sources including port 0 (issue 10, "Done when").

Valid messages are captured once from a real handshake and a real reattach
(handshake init, DATA whole and fragmented, KEEPALIVE, REATTACH_REQ,
PATH_RESPONSE); each example starts a fresh gateway that restores the same
session from its store (the restart path), then feeds it mutated copies,
random bodies under every type byte, and unknown types, through the UDP
loop's dispatch (``DataPath.datagram``: the userspace gate, then data path or
control path). Checked after each example: no exception escaped, the daemon
had to contain none, nothing was sent to port 0, and unless an example
happened to hold an authentic message, no session state changed: store
records and versions, bindings, the gate's elements, the TUN.

A second test runs the gateway's threads and pushes a few hundred such
datagrams through the fake socket: every thread lives on."""

from __future__ import annotations

import random
import tempfile
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jvpn import wire
from jvpn.gate import abi
from jvpn.gate.userspace import UserspaceGate
from jvpn.session import Transport
from jvpn.store.sqlite import SqliteStore
from kits.daemon_kit import (
    CLIENT,
    PEER_INNER,
    AdmitAll,
    Peer,
    handshake,
    initiation,
    ipv4,
    make_gateway,
)

NEW = ("198.51.100.7", 6000)
PORT_ZERO = ("192.0.2.66", 0)
HS = abi.MSG_HANDSHAKE_INIT
MAC2 = 16  # an initiation's last bytes: mac2, not part of what the responder proves


def _capture():
    """A session and the valid messages of every type, from a real exchange."""
    tmp = Path(tempfile.mkdtemp(prefix="jvpn-fuzz-"))
    gw = make_gateway(tmp)
    peer = handshake(gw)
    sid = peer.session_id
    record, secrets = gw.store.get(sid)
    msgs = [initiation(1).initiation(), peer.seal(ipv4(PEER_INNER[0])),
            *peer.seal_packet(ipv4(PEER_INNER[0], payload=b"f" * 3000)),
            peer.seal(b"", abi.MSG_KEEPALIVE)]
    req = wire.seal_control(
        wire.Header(type=abi.MSG_REATTACH_REQ, session_id=sid, counter=peer.next_counter()),
        peer.keys.hdr_c2s, peer.keys.reattach, 1, gw.clock_ms(), b"c" * wire.NONCE_LEN,
        record.epoch)
    gw.datapath.datagram(req, NEW)
    [(challenge, _to)] = gw.sock.sent[-1:]
    _hdr, (server_nonce, client_nonce) = wire.open_control(challenge, peer.keys.reattach)
    resp = wire.seal_control(
        wire.Header(type=abi.MSG_PATH_RESPONSE, session_id=sid, counter=peer.next_counter()),
        peer.keys.hdr_c2s, peer.keys.reattach, server_nonce, client_nonce)
    captured_ms = gw.clock_ms()
    gw.store.close()
    return record, secrets, peer, [*msgs, req, resp], captured_ms


RECORD, SECRETS, PEER, VALID, CAPTURED_MS = _capture()


def _as_captured():
    """A clock that starts at the capture's time: the session's keys are as
    young as when captured, however long after the module's import a test
    runs (the data path refuses keys past reject_after_ms at use, and the
    full suite reaches this file 20 minutes after importing it)."""
    start = time.monotonic()
    return lambda: CAPTURED_MS + int((time.monotonic() - start) * 1000)
TYPES = sorted({m[0] for m in VALID} | {abi.MSG_HANDSHAKE_RESP, abi.MSG_COOKIE_REPLY,
                                         abi.MSG_PATH_CHALLENGE, abi.MSG_REATTACH_ACK,
                                         abi.MSG_REATTACH_REJECT, abi.MSG_TERMINATE, 0, 99, 255})


def _mutate(msg: bytes, rnd: random.Random) -> bytes:
    """One to three of: truncate, flip bytes, overwrite a slice, append,
    another type byte, another session id."""
    m = bytearray(msg)
    for _ in range(rnd.randint(1, 3)):
        op = rnd.randrange(6)
        if op == 0 and m:
            del m[rnd.randrange(len(m)):]
        elif op == 1 and m:
            m[rnd.randrange(len(m))] ^= 1 << rnd.randrange(8)
        elif op == 2 and m:
            i = rnd.randrange(len(m))
            m[i:i + rnd.randint(1, 40)] = rnd.randbytes(rnd.randint(0, 40))
        elif op == 3:
            m += rnd.randbytes(rnd.randint(1, 64))
        elif op == 4 and m:
            m[0] = rnd.choice(TYPES)
        elif op == 5 and len(m) >= 16:
            m[8:16] = rnd.randbytes(8)
    return bytes(m)


def _random_message(rnd: random.Random) -> bytes:
    kind = rnd.randrange(8)
    if kind == 7:  # now and then an authentic one, from any source (port 0 too)
        return rnd.choice(VALID)
    if kind == 0:
        return rnd.randbytes(rnd.randint(0, 200))
    if kind in (1, 2):  # a header that names our session, then anything
        return bytes([rnd.choice(TYPES), abi.WIRE_VERSION, 0, 0]) + bytes(4) + \
            PEER.session_id.to_bytes(8, "little") + rnd.randbytes(rnd.randint(0, 150))
    return _mutate(rnd.choice(VALID), rnd)


def _source(rnd: random.Random) -> tuple[str, int]:
    return rnd.choice([CLIENT, NEW, PORT_ZERO, (CLIENT[0], 0),
                       (f"203.0.113.{rnd.randint(1, 254)}", rnd.randint(0, 65535))])


def _authentic(msg: bytes) -> bool:
    """An unmutated valid message (a mutation may give one back), or an
    initiation whose proven part is intact (only its mac2 changed)."""
    return any(msg == v or (v[0] == HS and len(msg) == len(v) and msg[:-MAC2] == v[:-MAC2])
               for v in VALID)


def _gateway(tmp: Path, gate=None):
    store = SqliteStore(tmp / "s.db")
    store.create(RECORD, SECRETS)
    gw = make_gateway(tmp, store=store, gate=gate, clock=_as_captured())
    gw.reconcile()  # the session, restored as after a restart
    return gw


def _state(gw) -> tuple:
    sessions = {sid: (live.record, live.installed) for sid, live in gw.sessions.items()}
    stored = [(rec, gw.store.get(rec.session_id)) for rec in gw.store.list()]
    return (sessions, dict(gw.table.by_inner), dict(gw.table.standby), stored,
            dict(gw.gate.model.sessions), list(gw.tun.written))


@pytest.mark.parametrize("gate", [UserspaceGate, AdmitAll], ids=["userspace-gate", "xdp-mode"])
@settings(max_examples=120, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(rnd=st.randoms(use_true_random=False), n=st.integers(1, 8))
def test_no_unauthenticated_message_changes_state_or_escapes(gate, rnd, n):
    """``xdp-mode``: the daemon sees everything its socket gets (as behind
    the XDP gate, or from an interface it does not guard)."""
    with tempfile.TemporaryDirectory(prefix="jvpn-fuzz-") as tmp:
        gw = _gateway(Path(tmp), gate())
        try:
            before = _state(gw)
            batch = [(_random_message(rnd), _source(rnd)) for _ in range(n)]
            for msg, src in batch:
                gw.datapath.datagram(msg, src)  # an exception here fails the example
            assert gw.incidents.total == 0, [e for e in gw.events.recent
                                             if e["event_type"] == "DaemonError"]
            assert all(dst[1] != 0 for dst in gw.sock.attempts)
            if not any(_authentic(m) for m, _src in batch):
                assert _state(gw) == before
        finally:
            gw.store.close()


def test_the_threads_live_through_a_fuzzed_stream(tmp_path):
    rnd = random.Random(10)
    gw = _gateway(tmp_path, AdmitAll())
    gw.start()
    try:
        for _ in range(400):
            gw.sock.deliver(_random_message(rnd), _source(rnd))
        for _ in range(5):  # the session still works: authentic data reaches the TUN
            gw.sock.deliver(PEER.seal(ipv4(PEER_INNER[0])), CLIENT)
        gw.sock.settle(timeout_s=30)
        assert gw.fatal is None and gw.supervisor.dead() == []
        assert gw.tun.written.count(ipv4(PEER_INNER[0])) == 5
        assert gw.sessions[PEER.session_id].record.binding == Transport(*CLIENT)
    finally:
        gw.stop()
        gw.store.close()


def test_the_captured_messages_are_valid(tmp_path):
    """The fuzz starts from messages the gateway accepts (else it proves little)."""
    gw = _gateway(tmp_path)
    try:
        gw.datapath.datagram(VALID[1], CLIENT)
        assert gw.tun.written == [ipv4(PEER_INNER[0])]
        assert isinstance(PEER, Peer)
    finally:
        gw.store.close()
