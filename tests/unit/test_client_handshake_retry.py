"""k18flood: the client's handshake retries come soon, then back off. Under
a spoofed initiation flood at the gate's rate the gate's global budget drops
some of a legitimate client's initiations (mostly the resend with the
cookie: docs/benchmarks.md "A legitimate client under the flood"); with the
first waits at 2 and 4 s one drop cost 1-4 s. Now 250-500 ms for a first
initiation, about 250 ms for the resend with a cookie (its wait sized to
the cookie's round trip), still doubled, capped and jittered, and `client
up` as patient as before (9.75-19.5 s).

The client runs on a fake socket (no answer: the wait it sets is read, and
nothing blocks) with injected randomness; the gateway's side is the real
Noise responder and cookie checker."""

from __future__ import annotations

import pytest
from test_client_source import CL_PRIV, GW, GW_PRIV, FakeGateway, FakeSocket

from jvpn.client import Client
from jvpn.client_handshake import HandshakeFailed
from jvpn.events import EventLog
from jvpn.gate import abi
from jvpn.handshake import CookieChecker
from jvpn.keys import public_from_private
from kits.daemon_kit import Clock


class Gateway(FakeSocket):
    """The client's socket to a gateway that answers per ``script``, one
    entry per initiation: "cookie" (a cookie reply: under load), "drop"
    (the gate dropped it) or "answer" (the handshake response); past the
    script, silence. ``waits``: how long the client waited after each
    initiation (the timeout it set first after sending it)."""

    def __init__(self, script: list[str]):
        super().__init__(FakeGateway())
        self.script, self.waits, self._sent_init = list(script), [], False
        self.cookies = CookieChecker(GW_PRIV)

    def sendto(self, msg: bytes, dst) -> int:
        self.sent.append((msg, dst))
        if msg[0] != abi.MSG_HANDSHAKE_INIT:
            return len(msg)
        self._sent_init = True
        what = self.script.pop(0) if self.script else "drop"
        if what == "cookie":
            self.inbox.append((self.cookies.check(msg, ("198.51.100.7", 4000), True), GW))
        elif what == "answer":
            self.inbox.append((self.gateway.respond(msg), GW))
        return len(msg)

    def settimeout(self, t) -> None:
        if self._sent_init:
            self.waits.append(t)
            self._sent_init = False

    def initiations(self) -> list[bytes]:
        return [m for m, _ in self.sent if m[0] == abi.MSG_HANDSHAKE_INIT]


def _client(sock: Gateway, rand: float) -> Client:
    return Client(private_key=CL_PRIV, gateway_public=public_from_private(GW_PRIV),
                  endpoint=GW, events=EventLog("client-test", clock_ms=Clock()),
                  clock_ms=Clock(), socket_factory=lambda: sock, rand=lambda: rand)


def _handshake(script: list[str], rand: float = 1.0) -> Gateway:
    sock = Gateway(script)
    client = _client(sock, rand)
    client.sock = sock
    client.handshake()
    return sock


@pytest.mark.parametrize(("rand", "waits"), [
    (1.0, [0.5, 1, 2, 4, 6, 6]),
    (0.0, [0.25, 0.5, 1, 2, 3, 3]),
])
def test_a_silent_gateway_gets_six_initiations_soon_then_less_often(rand, waits):
    sock = Gateway([])
    client = _client(sock, rand)
    client.sock = sock
    with pytest.raises(HandshakeFailed, match="no answer at all"):
        client.handshake()
    assert sock.waits == pytest.approx(waits, abs=0.02)
    # as patient as the 2, 4, 6, 6 s before (9 to 18 s): a slow gateway still answers
    assert 9 <= sum(sock.waits) <= 21


def test_a_dropped_resend_with_the_cookie_costs_a_quarter_of_a_second_not_four():
    sock = _handshake(["cookie", "drop", "answer"])
    first, dropped, resent = sock.initiations()
    assert first[-16:] == bytes(16) and dropped[-16:] != bytes(16) != resent[-16:]
    # the cookie came at once: the resend waits the floor, not its 1 s step (was 2-4 s)
    assert sock.waits[1] == pytest.approx(0.25, abs=0.02)


def test_a_dropped_first_initiation_costs_half_a_second_at_most():
    sock = _handshake(["drop", "cookie", "answer"], rand=1.0)
    assert len(sock.initiations()) == 3
    assert sock.waits[0] == pytest.approx(0.5, abs=0.02)  # was 2 s (1-2 s jittered)

