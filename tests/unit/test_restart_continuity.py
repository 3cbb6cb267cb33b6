"""Sessions survive a gateway restart without replays or strands (issue 10
items 8 and 11): an in-process Gateway (userspace gate, SQLite store, a fake
TUN) is stopped or "killed" and a new one starts on the same store.

A SIGKILL leaves exactly what the store had durably written: the test takes
a copy of the database files while the first gateway runs, and the second
gateway starts on that copy.
"""

from __future__ import annotations

import ipaddress
import queue
import shutil
import socket
import threading
import time

import pytest

from jvpn import keys, wire
from jvpn.events import EventLog
from jvpn.gate import abi
from jvpn.gate.userspace import UserspaceGate
from jvpn.gateway import daemon
from jvpn.keys import derive_session_keys
from jvpn.policy import default_policy
from jvpn.session import Event, State, Transport, apply, new_session
from jvpn.store.sqlite import SqliteStore
from jvpn.tunnel import DataChannel

SID = 0x1122334455667788
INNER = ipaddress.IPv4Address("10.99.0.2")
KEYS = derive_session_keys(SID, b"\1" * 32, b"\2" * 32, b"\3" * 32)
GW_KEY, CLIENT_KEY = keys.generate_private(), keys.generate_private()


def inner_packet(n: int) -> bytes:
    """A minimal IPv4 header from the client's inner address, then ``n``."""
    return (bytes([0x45, 0, 0, 24]) + bytes(8) + INNER.packed
            + ipaddress.IPv4Address("10.99.0.1").packed + n.to_bytes(4, "big"))


class FakeTun:
    def __init__(self, name: str, persist: bool = False):
        self.written: queue.Queue[bytes] = queue.Queue()
        self._closed = threading.Event()

    def configure(self, *_a, **_k) -> None:
        pass

    def set_nonblocking(self) -> None:
        pass

    def read(self) -> bytes:
        self._closed.wait()
        raise OSError("closed")

    def write(self, packet: bytes) -> None:
        self.written.put(packet)

    def close(self) -> None:
        self._closed.set()


@pytest.fixture(autouse=True)
def fake_tun(monkeypatch):
    monkeypatch.setattr(daemon, "Tun", FakeTun)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def gateway(path, port: int, policy=None) -> daemon.Gateway:
    gw = daemon.Gateway(private_key=GW_KEY, listen=("127.0.0.1", port),
                        address=ipaddress.IPv4Interface("10.99.0.1/24"),
                        peers={keys.public_from_private(CLIENT_KEY): INNER},
                        policy=policy or default_policy(), store=SqliteStore(path),
                        gate=UserspaceGate(), events=EventLog("gw-restart"))
    return gw


class Client:
    """The client's side of the session: its socket (the binding) and channel."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(2)
        self.channel = DataChannel(KEYS, "client")
        self.transport = Transport(*self.sock.getsockname())

    def open_session(self, gw: daemon.Gateway) -> None:
        now = gw.clock_ms()
        rec, tr = apply(new_session(SID, now, owner=gw.events.node_id), Event.ATTACH_OK, now,
                        binding=self.transport)
        with gw.control:
            # the peer's key, as a handshake records it (revocation is by key)
            gw.table.create(rec.with_(inner_addr=str(INNER), peer_key=keys.encode(
                keys.public_from_private(CLIENT_KEY))), KEYS, INNER.packed, tr)

    def data(self, n: int) -> bytes:
        return self.channel.seal(inner_packet(n))

    def send(self, msg: bytes, port: int) -> None:
        self.sock.sendto(msg, ("127.0.0.1", port))


def delivered(gw: daemon.Gateway, timeout: float = 1.0) -> list[int]:
    """The inner packets the gateway wrote to its TUN (their numbers)."""
    out, end = [], time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            out.append(int.from_bytes(gw.tun.written.get(timeout=0.05)[-4:], "big"))
        except queue.Empty:
            if out:
                break
    return out


def crash_copy(src, dst) -> None:
    """What a SIGKILL leaves: the database files as they are now."""
    for suffix in ("", "-wal", "-shm"):
        f = src.with_name(src.name + suffix)
        if f.exists():
            shutil.copy(f, dst.with_name(dst.name + suffix))


@pytest.fixture
def client():
    c = Client()
    yield c
    c.sock.close()


def run_first_gateway(tmp_path, client, port):
    gw = gateway(tmp_path / "s.db", port)
    gw.start()
    client.open_session(gw)
    recorded = [client.data(n) for n in range(1, 6)]
    for msg in recorded:
        client.send(msg, port)
    assert delivered(gw) == [1, 2, 3, 4, 5]
    return gw, recorded


@pytest.mark.parametrize("how", ["clean stop", "crash"])
def test_recorded_data_is_refused_after_a_restart(tmp_path, client, how):
    """Issue 10 item 8: a restarted gateway seeds its replay windows above
    every counter it accepted before (clean stop: the exact floor; crash: the
    durable ceiling), so recorded DATA is not delivered a second time."""
    port = free_port()
    gw, recorded = run_first_gateway(tmp_path, client, port)
    db = tmp_path / "s.db"
    if how == "crash":
        crash_copy(db, tmp_path / "crash.db")
        db = tmp_path / "crash.db"
    gw.stop()
    gw.store.close()
    gw2 = gateway(db, port)
    gw2.start()
    try:
        assert SID in gw2.sessions
        for msg in recorded:
            client.send(msg, port)
        assert delivered(gw2, 0.5) == []
        if how == "clean stop":  # no strand: the client's next counter passes
            client.send(client.data(6), port)
            assert delivered(gw2) == [6]
    finally:
        gw2.stop()
        gw2.store.close()


def reattach(client: Client, port: int, now_ms: int, seq: int) -> int:
    """A full reattach from the client's socket; returns the ACK's type."""
    client.send(control_request(client, now_ms, seq), port)
    challenge, _ = client.sock.recvfrom(2048)
    assert challenge[0] == abi.MSG_PATH_CHALLENGE
    _hdr, (server_nonce, client_nonce) = wire.open_control(challenge, KEYS.reattach)
    client.send(wire.seal_control(
        wire.Header(type=abi.MSG_PATH_RESPONSE, session_id=SID,
                    counter=client.channel.next_counter()),
        KEYS.hdr_c2s, KEYS.reattach, server_nonce, client_nonce), port)
    ack, _ = client.sock.recvfrom(2048)
    return ack[0]


def test_after_a_crash_data_flows_again_after_a_reattach(tmp_path, client):
    """The rule after a crash (docs/protocol.md): the window cannot be
    restored exactly (the stored ceiling is a block ahead), so no data passes
    until the client proves the path again; then its next counters pass (no
    strand) and the recorded ones stay refused."""
    port = free_port()
    gw, recorded = run_first_gateway(tmp_path, client, port)
    crash_copy(tmp_path / "s.db", tmp_path / "crash.db")
    gw.stop()
    gw.store.close()
    ceiling, exact = SqliteStore(tmp_path / "crash.db").get_replay_ceiling(SID)
    assert ceiling > 6 and not exact
    gw2 = gateway(tmp_path / "crash.db", port)
    gw2.start()
    try:
        client.send(client.data(6), port)
        assert delivered(gw2, 0.3) == []
        assert reattach(client, port, gw2.clock_ms(), seq=1) == abi.MSG_REATTACH_ACK
        for msg in recorded:
            client.send(msg, port)
        client.send(client.data(7), port)
        assert delivered(gw2) == [7]
    finally:
        gw2.stop()
        gw2.store.close()


def control_request(client: Client, now_ms: int, seq: int = 1) -> bytes:
    hdr = wire.Header(type=abi.MSG_REATTACH_REQ, session_id=SID,
                      counter=client.channel.next_counter())
    return wire.seal_control(hdr, KEYS.hdr_c2s, KEYS.reattach, seq, now_ms, b"n" * wire.NONCE_LEN,
                             0)


def test_a_crash_while_recovering_does_not_strand_the_session(tmp_path, client):
    """Issue 10 item 11: the gateway dies with a path challenge outstanding
    (the record says RECOVERING, the challenge lived in memory). After the
    restart the session is usable again: the client's next reattach gets a
    new challenge, not OWNERSHIP_CONFLICT until its TTL."""
    port = free_port()
    gw = gateway(tmp_path / "s.db", port)
    gw.start()
    client.open_session(gw)
    mover = Client()
    try:
        mover.channel = client.channel  # the same client, from a new transport
        mover.send(control_request(client, gw.clock_ms()), port)
        mover.sock.recvfrom(2048)  # the PATH_CHALLENGE: the record is RECOVERING
        assert gw.store.get(SID)[0].state is State.RECOVERING
        crash_copy(tmp_path / "s.db", tmp_path / "crash.db")
        gw.stop()
        gw.store.close()
        gw2 = gateway(tmp_path / "crash.db", port)
        gw2.start()
        try:
            assert gw2.store.get(SID)[0].state is not State.RECOVERING
            mover.send(control_request(client, gw2.clock_ms(), seq=2), port)
            reply, _ = mover.sock.recvfrom(2048)
            assert reply[0] == abi.MSG_PATH_CHALLENGE
        finally:
            gw2.stop()
            gw2.store.close()
    finally:
        mover.sock.close()


def test_a_session_never_served_since_a_crash_is_not_settled_at_a_stop(tmp_path, client):
    """After a crash the session waits, blind, for its client's reattach. A
    clean stop before that must not settle the crashed gateway's ceiling
    (a block ahead of the client) as the exact floor: the next start would
    then trust it, refuse every message of the client below it (its
    reattach requests too), and the session would be lost. The same floor
    was handed to the next owner by a cluster handover (cluster lab:
    c2s_floor 78804 for a client at 13351, every message DROP_REPLAY)."""
    port = free_port()
    gw, recorded = run_first_gateway(tmp_path, client, port)
    crash_copy(tmp_path / "s.db", tmp_path / "crash.db")
    gw.stop()
    gw.store.close()
    gw2 = gateway(tmp_path / "crash.db", port)
    gw2.start()
    gw2.stop()  # stopped cleanly, blind: no reattach came
    gw2.store.close()
    _ceiling, exact = SqliteStore(tmp_path / "crash.db").get_replay_ceiling(SID)
    assert not exact
    gw3 = gateway(tmp_path / "crash.db", port)
    gw3.start()
    try:
        assert reattach(client, port, gw3.clock_ms(), seq=1) == abi.MSG_REATTACH_ACK
        for msg in recorded:
            client.send(msg, port)
        client.send(client.data(7), port)
        assert delivered(gw3) == [7]
    finally:
        gw3.stop()
        gw3.store.close()
