"""Review R4 #1: the client takes the answer to its previous attempt only
while the gateway still has that session: within ANSWER_WINDOW_MS (the
gateway's UNCONFIRMED_TTL_MS less a margin) of the initiation it answers."""
from __future__ import annotations

from test_client_source import Rig

from jvpn.client_handshake import ANSWER_WINDOW_MS
from jvpn.config import UNCONFIRMED_TTL_MS
from jvpn.gate import abi


def _held_first_answer(rig: Rig, late_ms: int):
    """The first answer arrives after the second initiation, ``late_ms``
    after the first went out; the second answer is lost."""
    c = rig.client
    c.sock = sock = rig._socket()
    real, held = sock.sendto, []

    def sendto(msg, dst):
        n = real(msg, dst)
        if msg[0] == abi.MSG_HANDSHAKE_INIT:
            if not held:
                held.append(sock.inbox.pop())
            elif len(held) == 1:  # the second initiation: its answer is lost
                held.append(sock.inbox.pop())
                sock.inbox.append(held[0])
                rig.clock.ms += late_ms
        return n
    sock.sendto = sendto
    return sock


def _inits(sock) -> int:
    return len([m for m, _ in sock.sent if m[0] == abi.MSG_HANDSHAKE_INIT])


def test_the_window_is_inside_the_gateways_ttl():
    assert 0 < ANSWER_WINDOW_MS < UNCONFIRMED_TTL_MS


def test_an_answer_older_than_the_window_is_refused():
    rig = Rig()
    sock = _held_first_answer(rig, ANSWER_WINDOW_MS)
    before = rig.client.keys
    rig.client.handshake(attempts=3)  # the third attempt is answered
    assert _inits(sock) == 3
    assert rig.client.keys == rig.gateway.keys and rig.client.keys != before


def test_an_answer_inside_the_window_is_taken():
    rig = Rig()
    sock = _held_first_answer(rig, ANSWER_WINDOW_MS - 1)
    rig.client.handshake(attempts=3)
    assert _inits(sock) == 2 and rig.client.keys != rig.gateway.keys
