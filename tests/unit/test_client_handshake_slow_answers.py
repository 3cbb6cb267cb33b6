"""The client's handshake against a gateway whose store is slow to make a
session durable (a loaded group commit), or over a long path (review
k18r1 F1 of the k18flood retry schedule).

The gateway answers an initiation only once its session is written, and
refuses (silently: AttemptInProgress) a peer's initiation while the
previous one's writes are queued. With the first retries at 0.25-0.5 s, the
answer to the first initiation can come after the second or third went
out: the client takes the answers to its last ATTEMPTS_KEPT (3)
initiations, so the first answer is taken and the gateway writes once
for a slow store. On a long path (0.8 s round trip) the retries that
reach a fast gateway are written too (at most ATTEMPTS_KEPT, all kept),
and the first answer is still taken. A cookie reply to an earlier
initiation is taken while the latest carries none.

A virtual clock: the socket's receive advances it to the next answer's
arrival or by the timeout the client set; nothing sleeps."""

from __future__ import annotations

import re
import types
from pathlib import Path

import pytest
from test_client_source import CL_PRIV, GW, GW_PRIV, FakeGateway

from jvpn import client_handshake
from jvpn.client import Client
from jvpn.config import ATTEMPTS_KEPT
from jvpn.events import EventLog
from jvpn.gate import abi
from jvpn.handshake import CookieChecker
from jvpn.keys import public_from_private
from kits.virtual_socket import VirtualSocket


class SlowStoreGateway(VirtualSocket):
    """The client's socket to a gateway whose session writes take
    ``write_s``: one write per peer at a time (a retry meanwhile is refused
    unanswered, AttemptInProgress), its answer sent when the write is durable."""

    source = GW

    def __init__(self, write_s: float, one_way_s: float = 0.0, under_load: bool = False):
        super().__init__()
        self.write_s = write_s
        self.one_way_s = one_way_s  # the path's delay each way
        # under load: an initiation without a valid mac2 gets a cookie reply
        self.cookies = CookieChecker(GW_PRIV, clock=lambda: 0.0) if under_load else None
        self.cookie_replies = 0
        self.busy_until = -1.0
        self.gateway = FakeGateway()
        self.sent: list[bytes] = []
        self.written: list[float] = []  # when each session write started
        self.refused = 0

    # the clocks the client reads
    def monotonic(self) -> float:
        return self.now

    def clock_ms(self) -> int:
        return int(self.now * 1000)

    # the socket
    def sendto(self, msg: bytes, _dst) -> int:
        self.sent.append(msg)
        if msg[0] == abi.MSG_HANDSHAKE_INIT:
            arrives = self.now + self.one_way_s
            reply = self.cookies.check(msg, ("198.51.100.7", 4000), True) if self.cookies else None
            if reply is not None:
                self.cookie_replies += 1
                self.pending.append((arrives + self.one_way_s, reply))
            elif arrives < self.busy_until:
                self.refused += 1  # AttemptInProgress: nothing written, nothing said
            else:
                self.busy_until = arrives + self.write_s
                self.written.append(arrives)
                self.pending.append((self.busy_until + self.one_way_s,
                                     self.gateway.respond(msg)))
        return len(msg)



def _handshake(monkeypatch, write_s: float, rand: float, one_way_s: float = 0.0,
               under_load: bool = False) -> tuple[SlowStoreGateway, float]:
    sock = SlowStoreGateway(write_s, one_way_s, under_load)
    monkeypatch.setattr(client_handshake, "time", types.SimpleNamespace(monotonic=sock.monotonic))
    client = Client(private_key=CL_PRIV, gateway_public=public_from_private(GW_PRIV),
                    endpoint=GW, events=EventLog("client-test", clock_ms=sock.clock_ms),
                    clock_ms=sock.clock_ms, socket_factory=lambda: sock, rand=lambda: rand)
    client.sock = sock
    client.handshake()
    return sock, sock.now


@pytest.mark.parametrize(("write_s", "rand"), [(0.8, 1.0), (0.8, 0.0), (0.5, 0.0), (1.5, 0.5)])
def test_a_slow_store_answer_to_the_first_initiation_is_taken(monkeypatch, write_s, rand):
    """The gateway wrote one session and answered it after ``write_s`` (well
    inside UNCONFIRMED_TTL_MS less the margin): the client takes that
    answer, and the gateway writes no second session for the same client."""
    sock, took = _handshake(monkeypatch, write_s, rand)
    assert took == pytest.approx(write_s), (took, sock.written, sock.refused)
    assert len(sock.written) == 1, f"sessions written for one client: {sock.written}"


@pytest.mark.parametrize("rand", [0.0, 1.0])
def test_a_long_path_answer_to_the_first_initiation_is_taken(monkeypatch, rand):
    """A path of 0.8 s round trip (a geostationary satellite hop, a
    bufferbloated mobile uplink) to a gateway that writes in 30 ms: the
    retries sent before the first answer came are written too, no more
    than the gateway keeps, and the answer to the first is taken."""
    sock, took = _handshake(monkeypatch, 0.03, rand, one_way_s=0.4)
    assert took == pytest.approx(0.83), (took, sock.written, sock.refused)
    assert 1 <= len(sock.written) <= ATTEMPTS_KEPT, f"sessions written: {sock.written}"


@pytest.mark.parametrize("rand", [0.0, 1.0])
def test_a_long_path_client_takes_the_cookie_of_its_first_initiation(monkeypatch, rand):
    """The flood case on a 0.8 s round trip (the gateway under load answers
    cookies): the first initiation's cookie comes after the second
    initiation went out; it is taken, the resend carries it, and the
    second initiation's late cookie does not start another resend. One
    cookie round trip and one handshake: 1.63 s, one session written."""
    sock, took = _handshake(monkeypatch, 0.03, rand, one_way_s=0.4, under_load=True)
    assert took == pytest.approx(1.63), (took, sock.written, sock.cookie_replies)
    assert len(sock.written) == 1
    # three without a cookie at most (the third goes out at 0.75 s at the
    # shortest jitter, before the first cookie comes), then the resend
    assert sum(1 for m in sock.sent if m[0] == abi.MSG_HANDSHAKE_INIT) <= 4


def test_a_round_trip_and_write_under_250_ms_never_make_the_gateway_write_twice(monkeypatch):
    """jvpn/config.py's bound (review k18r5 F5): 210 ms of path and a 30 ms
    write answer before the first retry at its shortest (250 ms)."""
    sock, _took = _handshake(monkeypatch, 0.03, 0.0, one_way_s=0.105)
    assert len(sock.written) == 1, f"sessions written for one client: {sock.written}"


STALE_DOCS = [r"`ATTEMPTS_KEPT` \(2\b", r"session and two attempts at most",
              r"Initiators of the last\s+two attempts", r"the peer's last two"]


@pytest.mark.parametrize("doc", ["docs/protocol.md", "docs/invariants.md"])
def test_the_docs_give_the_per_peer_attempts_as_configured(doc):
    """Review k18r5 F5: the docs said two after ATTEMPTS_KEPT became three."""
    text = (Path(__file__).resolve().parents[2] / doc).read_text()
    assert ATTEMPTS_KEPT == 3
    assert not [p for p in STALE_DOCS if re.search(p, text)]
