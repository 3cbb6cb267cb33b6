"""Issue 10 item 6, the client's part (threat 4.2, S3): the client hears only
its gateway. A datagram from any other address or port, however authentic, is
dropped before it is even opened (so it cannot spend a counter of the replay
window either), counted, and reported at most once per interval; everything
the client sends goes to the gateway's address, a PATH_RESPONSE included.

The client runs on an injected socket and clock; the gateway is the real Noise
responder (handshake) and, for the relay attack, the in-memory gateway of
test_reattach.py (validator, control path, session table)."""

from __future__ import annotations

import ipaddress
import os
from collections import deque

import pytest
from test_reattach import Harness  # the in-memory gateway of the reattach tests

from jvpn import wire
from jvpn.client import Client
from jvpn.codes import EventType, Security
from jvpn.events import DEFAULT_SUMMARY_INTERVAL_MS, EventLog
from jvpn.gate import abi
from jvpn.handshake import Assignment, Responder
from jvpn.keys import public_from_private
from jvpn.session import Event, Transport, apply, new_session
from jvpn.tunnel import FLAG_REATTACH, DataChannel
from kits.daemon_kit import Clock

SID = 0x5EC0_0000_0000_0006
GW_PRIV, CL_PRIV = b"\x11" * 32, b"\x22" * 32
GW = ("192.0.2.1", 51900)
ASSIGN = Assignment(SID, ipaddress.IPv4Interface("10.77.100.2/24"),
                    ipaddress.IPv4Address("10.77.100.1"))
STRANGERS = [("203.0.113.66", 51900),  # another address, the gateway's port
             ("192.0.2.1", 51901),     # the gateway's address, another port
             ("192.0.2.1", 0)]         # malformed source port
IDS = ["other-address", "other-port", "port-0"]



class FakeSocket:
    """The client's UDP socket: what it sent, and a queue of (datagram, source)."""

    def __init__(self, gateway: FakeGateway):
        self.gateway = gateway
        self.inbox: deque = deque()
        self.sent: list[tuple[bytes, tuple]] = []

    def sendto(self, msg: bytes, dst) -> int:
        self.sent.append((msg, dst))
        if msg[0] == abi.MSG_HANDSHAKE_INIT:
            self.inbox.append((self.gateway.respond(msg), self.gateway.reply_from))
        return len(msg)

    def recvfrom(self, _size: int):
        if not self.inbox:
            raise TimeoutError
        return self.inbox.popleft()

    def settimeout(self, _t) -> None:
        pass

    def shutdown(self, _how) -> None:
        pass

    def close(self) -> None:
        pass


class FakeGateway:
    """The gateway's end of one session: its Noise responder and s2c keys."""

    def __init__(self):
        self.responder = Responder(GW_PRIV, lambda _k: True)
        self.reply_from = GW
        self.keys = self.channel = None

    def respond(self, initiation: bytes) -> bytes:
        resp, self.keys = self.responder.open(initiation).respond(ASSIGN)
        self.channel = DataChannel(self.keys, "gateway")
        return resp

    def control(self, msg_type: int, *fields) -> bytes:
        hdr = wire.Header(type=msg_type, session_id=SID, counter=self.channel.next_counter())
        return wire.seal_control(hdr, self.keys.hdr_s2c, self.keys.reattach, *fields)

    def keepalive(self, flags: int = 0) -> bytes:
        return self.channel.seal(b"", abi.MSG_KEEPALIVE, flags)

    def request_fields(self, request: bytes) -> tuple:
        """(seq, timestamp_ms, client_nonce, epoch) of the client's REATTACH_REQ."""
        return wire.open_control(request, self.keys.reattach)[1]


class FakeTun:
    def __init__(self):
        self.written: list[bytes] = []

    def write(self, packet: bytes) -> None:
        self.written.append(packet)

    def close(self) -> None:
        pass


class Rig:
    def __init__(self):
        self.clock = Clock()
        self.gateway = FakeGateway()
        self.events = EventLog("client-test", clock_ms=self.clock)
        self.sockets: list[FakeSocket] = []
        self.client = Client(private_key=CL_PRIV, gateway_public=public_from_private(GW_PRIV),
                             endpoint=GW, events=self.events, clock_ms=self.clock,
                             socket_factory=self._socket)
        self.client.handshake(attempts=1)
        self.client.tun = FakeTun()

    def _socket(self) -> FakeSocket:
        self.sockets.append(FakeSocket(self.gateway))
        return self.sockets[-1]

    @property
    def sent(self) -> list[tuple[bytes, tuple]]:
        return [s for sock in self.sockets for s in sock.sent]

    def sent_of(self, msg_type: int) -> list[tuple[bytes, tuple]]:
        return [(m, dst) for m, dst in self.sent if m[0] == msg_type]

    def reattach(self) -> tuple:
        """The client starts a reattach; the gateway's view of its request."""
        self.client.start_reattach("test")
        return self.gateway.request_fields(self.sent_of(abi.MSG_REATTACH_REQ)[-1][0])

    def challenge(self) -> bytes:
        _seq, _ts, client_nonce, _epoch = self.reattach()
        return self.gateway.control(abi.MSG_PATH_CHALLENGE, os.urandom(16), client_nonce)

    def drop_events(self) -> list[dict]:
        return [e for e in self.events.recent if e["event_type"] == EventType.SECURITY_EVENT
                and e["reason_code"] == Security.SEC_ABUSE_CONTROL_PLANE]


@pytest.fixture
def rig():
    return Rig()


@pytest.mark.parametrize("stranger", STRANGERS, ids=IDS)
def test_path_challenge_from_a_stranger_is_not_answered(rig, stranger):
    challenge = rig.challenge()
    rig.client.receive(challenge, stranger)
    assert rig.sent_of(abi.MSG_PATH_RESPONSE) == []
    assert rig.client.drops.total == 1
    # the relayed copy did not spend the counter: the genuine challenge, from
    # the gateway, is still answered, and only to the gateway
    rig.client.receive(challenge, GW)
    [(_answer, dst)] = rig.sent_of(abi.MSG_PATH_RESPONSE)
    assert dst == GW


def test_everything_the_client_sends_goes_to_the_gateway(rig):
    rig.client.receive(rig.challenge(), GW)
    rig.client.send_data(b"\x45" + bytes(39))
    rig.client.rebind()
    assert {abi.MSG_HANDSHAKE_INIT, abi.MSG_REATTACH_REQ, abi.MSG_PATH_RESPONSE,
            abi.MSG_DATA} <= {m[0] for m, _ in rig.sent}
    assert {dst for _m, dst in rig.sent} == {GW}


@pytest.mark.parametrize("stranger", STRANGERS, ids=IDS)
def test_ack_from_a_stranger_is_not_acted_on(rig, stranger):
    seq, _ts, _nonce, epoch = rig.reattach()
    ack = rig.gateway.control(abi.MSG_REATTACH_ACK, seq, epoch + 1, 9)
    rig.client.receive(ack, stranger)
    assert rig.client.pending is not None and rig.client.epoch == epoch
    assert rig.client.reattaches == 0
    rig.client.receive(ack, GW)
    assert rig.client.pending is None and rig.client.epoch == epoch + 1


def test_told_a_stale_epoch_the_client_names_the_current_one_at_once(rig):
    """A switch it asked for committed, its ACK never came (the client had
    moved on): the gateway's REJECT of its next request says the epoch."""
    seq, _ts, _nonce, epoch = rig.reattach()
    stale = rig.gateway.control(abi.MSG_REATTACH_REJECT, seq,
                                wire.REJECT_REASONS.index("FRESHNESS_INVALID"), epoch + 1)
    rig.client.receive(stale, GW)
    assert rig.client.pending is None and rig.client.epoch == epoch + 1
    rig.client.reattach_timers(rig.clock.ms)  # the next request goes out at once
    new_seq, _ts, _nonce, named = rig.gateway.request_fields(
        rig.sent_of(abi.MSG_REATTACH_REQ)[-1][0])
    assert new_seq > seq and named == epoch + 1
    # an older epoch, or one in another refusal, teaches nothing
    rig.client.receive(rig.gateway.control(abi.MSG_REATTACH_REJECT, new_seq,
                                           wire.REJECT_REASONS.index("FRESHNESS_INVALID"),
                                           epoch), GW)
    assert rig.client.epoch == epoch + 1


@pytest.mark.parametrize("stranger", STRANGERS, ids=IDS)
def test_fatal_reject_and_terminate_from_a_stranger_do_not_end_the_session(rig, stranger):
    seq = rig.reattach()[0]
    reject = rig.gateway.control(abi.MSG_REATTACH_REJECT, seq,
                                 wire.REJECT_REASONS.index("SESSION_NOT_FOUND"), 0)
    terminate = rig.gateway.control(abi.MSG_TERMINATE, 2)
    rig.client.receive(reject, stranger)
    rig.client.receive(terminate, stranger)
    assert rig.client.failed is None and rig.client.pending is not None
    assert not [e for e in rig.events.recent if e["event_type"] == "SessionTerminated"]
    rig.client.receive(terminate, GW)
    assert rig.client.failed == "POLICY_TERMINATION"


@pytest.mark.parametrize("stranger", STRANGERS, ids=IDS)
def test_keepalive_and_data_from_a_stranger_are_not_acted_on(rig, stranger):
    last_rx = rig.client.last_rx_ms
    rig.clock.ms += 5_000
    rig.client.receive(rig.gateway.keepalive(FLAG_REATTACH), stranger)
    rig.client.receive(rig.gateway.channel.seal(b"\x45" + bytes(19)), stranger)
    assert rig.client.last_rx_ms == last_rx  # no "the gateway is alive"
    assert rig.client.pending is None and rig.sent_of(abi.MSG_REATTACH_REQ) == []
    assert rig.client.tun.written == []
    rig.client.receive(rig.gateway.keepalive(FLAG_REATTACH), GW)
    assert rig.client.last_rx_ms == rig.clock.ms and rig.client.pending is not None


def test_handshake_response_from_a_stranger_is_ignored(rig):
    rig.gateway.reply_from = STRANGERS[0]
    with pytest.raises(Exception, match="answers came from another address or port"):
        rig.client.handshake(attempts=2)
    assert rig.client.drops.total == 2


def test_a_flood_from_strangers_is_counted_in_summaries_not_lines(rig):
    challenge = rig.challenge()
    for i in range(10_000):
        rig.client.receive(challenge, ("203.0.113.66", 1024 + i % 60_000))
        rig.clock.ms += 3  # 30 s of flood
    rig.events.close()  # as `client up` does at exit: the last summary is written
    reports = rig.drop_events()
    assert rig.client.drops.total == 10_000
    assert all(e["aggregated"] for e in reports)
    assert sum(e["count"] for e in reports) == 10_000
    assert len(reports) <= 30_000 // DEFAULT_SUMMARY_INTERVAL_MS + 1
    assert rig.sent_of(abi.MSG_PATH_RESPONSE) == []


# ---------------------------------------------------------------- the relay
CLIENT, EVIL = Transport("198.51.100.7", 40000), Transport("203.0.113.66", 6666)


def test_relayed_challenge_does_not_move_the_binding(rig, tmp_path):
    """The attack of item 6 end to end, in memory: a captured REATTACH_REQ
    reaches the gateway first from EVIL; the gateway challenges EVIL; the
    attacker relays the challenge to the client from EVIL. The client must
    not answer (before the fix it answered to EVIL, and the attacker's
    relayed answer moved the binding there). The gateway is test_reattach's
    (the validator, the control path and the session table of a gateway)."""
    gw = Harness(tmp_path)
    rec, _ = apply(new_session(SID, rig.clock.ms), Event.ATTACH_OK, rig.clock.ms,
                   binding=CLIENT)
    gw.store.create(rec, rig.gateway.keys.pack())
    gw.table.install(rec, rig.gateway.keys, ASSIGN.client_inner.ip.packed)
    gw.clock.ms = rig.clock.ms
    try:
        rig.client.start_reattach("replies missing")
        captured = rig.sent_of(abi.MSG_REATTACH_REQ)[-1][0]
        [(challenge, to)] = gw.handle(captured, EVIL)  # the attacker is first
        assert to == EVIL
        rig.client.receive(challenge, (EVIL.addr, EVIL.port))  # relayed to the client
        for answer, _dst in rig.sent_of(abi.MSG_PATH_RESPONSE):  # whatever it said
            gw.handle(answer, EVIL)  # the attacker hands it in from EVIL
        after = gw.store.get(SID)[0]
        assert after.binding == CLIENT and after.epoch == 0  # before the fix: EVIL, 1
        assert "REATTACH_ACCEPT" not in gw.reasons()
        assert rig.sent_of(abi.MSG_PATH_RESPONSE) == []
    finally:
        gw.store.close()


def test_an_unknown_reattach_refusal_reason_reads_as_policy_deny(rig):
    """A newer gateway's reason index the client does not know (review R2
    #5): read as POLICY_DENY, like a rekey refusal's, not an IndexError."""
    seq = rig.reattach()[0]
    rig.client.receive(rig.gateway.control(abi.MSG_REATTACH_REJECT, seq, 200, 0), GW)
    assert rig.client.pending is None and rig.client.failed is None
    assert [e["reason_code"] for e in rig.events.recent
            if e["event_type"] == "ReattachResult"][-1] == "POLICY_DENY"
