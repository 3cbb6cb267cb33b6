"""Review R3 #1: a handshake reply that does not open (forged from the
gateway's address, or the genuine but late answer to the attempt before)
is counted and ignored; the attempt keeps waiting until its deadline, and a
late answer to the previous attempt still opens (under the Initiator kept
for it). The session accepted is one the gateway created."""
from __future__ import annotations

import os

import pytest
from test_client_source import GW, Rig

from jvpn.client_handshake import HandshakeFailed
from jvpn.gate import abi


def _forged() -> bytes:
    return bytes([abi.MSG_HANDSHAKE_RESP]) + os.urandom(91)


def test_a_forged_response_before_the_genuine_one_is_ignored():
    rig = Rig()
    c = rig.client
    c.sock = sock = rig._socket()
    sock.inbox.append((_forged(), GW))  # read first, then the gateway's answer
    a = c.handshake(attempts=4)
    assert len([m for m, _ in sock.sent if m[0] == abi.MSG_HANDSHAKE_INIT]) == 1
    assert a == c.assignment and c.keys == rig.gateway.keys  # the gateway's session
    rig.events.close()  # the summary of unauthenticated rejections is written
    [ev] = [e for e in rig.events.recent if e["event_type"] == "HandshakeFailed"]
    assert "late or forged" in str(ev) and ev["count"] == 1


def test_the_late_answer_to_the_previous_attempt_is_accepted():
    rig = Rig()
    c = rig.client
    c.sock = sock = rig._socket()
    real, held = sock.sendto, []

    def sendto(msg, dst):  # the answer to the first initiation arrives after the second
        n = real(msg, dst)
        if msg[0] == abi.MSG_HANDSHAKE_INIT:
            if not held:
                held.append(sock.inbox.pop())
            else:
                sock.inbox.clear()  # the second answer is lost
                sock.inbox.append(held[0])
        return n
    sock.sendto = sendto
    answered_first = rig.gateway.keys
    c.handshake(attempts=4)
    assert len([m for m, _ in sock.sent if m[0] == abi.MSG_HANDSHAKE_INIT]) == 2
    assert c.keys is not None and c.keys != rig.gateway.keys  # the first attempt's keys
    assert c.keys != answered_first  # (the Rig's own handshake, before)


def test_only_forgeries_fail_with_the_key_cause():
    rig = Rig()
    c = rig.client
    c.sock = sock = rig._socket()
    sock.sendto = lambda msg, dst: sock.inbox.append((_forged(), GW)) or len(msg)
    with pytest.raises(HandshakeFailed, match="did not decrypt"):
        c.handshake(attempts=2)


def test_one_forgery_among_silence_is_not_blamed_on_the_key():
    rig = Rig()
    c = rig.client
    c.sock = sock = rig._socket()
    sock.sendto = lambda msg, dst: len(msg)  # the gateway is silent
    sock.inbox.append((_forged(), GW))
    with pytest.raises(HandshakeFailed) as e:
        c.handshake(attempts=3)
    assert "did not verify (late or forged)" in str(e.value)
    assert "PublicKey (the gateway's public key)" not in str(e.value)
