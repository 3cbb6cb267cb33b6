"""Review R3 #8: during the handshake (IP_RECVERR on) any ICMP error queued
for the socket fails the next send, whatever destination it names. A send
refused so is drained and retried a few times, and a flood that fails every
send is worded as ICMP, never as a routing problem."""
from __future__ import annotations

import errno

import pytest
from test_client_source import Rig

from jvpn.client_handshake import HandshakeFailed
from jvpn.gate import abi


class RefusingSocket:
    """The gateway would answer; ``refusals`` sends fail first with an
    ICMP error (forged, naming another destination: drained, not counted)."""

    def __init__(self, inner, refusals):
        self.inner, self.refusals = inner, refusals

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def sendto(self, msg, dst):
        if self.refusals > 0:
            self.refusals -= 1
            raise ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused")
        return self.inner.sendto(msg, dst)

    def recvmsg(self, *_a):
        raise BlockingIOError


def test_two_forged_icmp_errors_do_not_lose_the_initiation():
    rig = Rig()
    c = rig.client
    c.sock = RefusingSocket(rig._socket(), refusals=2)
    c.handshake(attempts=1)
    assert c.assignment is not None
    assert len([m for m, _ in c.sock.inner.sent if m[0] == abi.MSG_HANDSHAKE_INIT]) == 1


def test_a_flood_is_worded_as_icmp_not_as_a_route():
    rig = Rig()
    c = rig.client
    c.sock = RefusingSocket(rig._socket(), refusals=10**6)
    with pytest.raises(HandshakeFailed) as e:
        c.handshake(attempts=3)
    assert "refused (ICMP)" in str(e.value) and "route" not in str(e.value)
