"""Review k18r5 F1 (failed before the fix): a man-on-the-side (sees the
client's initiations, can
inject, cannot drop) forges a COOKIE_REPLY to every initiation. The cookie
reply's key is derived from the gateway's *public* key and its AD is the
initiation's mac1 (both seen on the path), so the forgery opens. Each forged
cookie ends the client's wait at once and uses up an attempt: the client sends
its six initiations within milliseconds and gives up before the (healthy,
not loaded) gateway's genuine answer, 30 ms away, arrives.

Six injected datagrams deny `client up`; the retry schedule (0.5 .. 6 s,
about 10-20 s of patience) is bypassed. A cookie reply must not make the
client give up sooner than its schedule, nor stop it listening for the
answers to its kept initiations."""

from __future__ import annotations

import os
import types

from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from test_client_handshake_slow_answers import SlowStoreGateway
from test_client_source import CL_PRIV, GW, GW_PRIV

from jvpn import client_handshake, wire
from jvpn.client import Client
from jvpn.events import EventLog
from jvpn.gate import abi
from jvpn.handshake import cookie_key
from jvpn.keys import public_from_private


class ManOnTheSide(SlowStoreGateway):
    """A healthy gateway (write 10 ms, 10 ms each way), plus an attacker on
    the path that injects a forged cookie reply 1 ms after each initiation."""

    def __init__(self):
        super().__init__(write_s=0.01, one_way_s=0.01)
        self.forged = 0
        gw_public = public_from_private(GW_PRIV)  # public: the attacker knows it
        self._aead = ChaCha20Poly1305(cookie_key(gw_public))

    def sendto(self, msg: bytes, dst) -> int:
        n = super().sendto(msg, dst)
        if msg[0] == abi.MSG_HANDSHAKE_INIT:
            mac1 = msg[-32:-16]  # seen on the path
            nonce = os.urandom(12)
            hdr = wire.Header(type=abi.MSG_COOKIE_REPLY, session_id=0, counter=0).pack()
            forged = hdr + nonce + self._aead.encrypt(nonce, os.urandom(16), mac1)
            self.pending.append((self.now + 0.001, forged))
            self.forged += 1
        return n


def test_forged_cookie_replies_do_not_exhaust_the_handshake(monkeypatch):
    sock = ManOnTheSide()
    monkeypatch.setattr(client_handshake, "time",
                        types.SimpleNamespace(monotonic=sock.monotonic))
    client = Client(private_key=CL_PRIV, gateway_public=public_from_private(GW_PRIV),
                    endpoint=GW, events=EventLog("client-test", clock_ms=sock.clock_ms),
                    clock_ms=sock.clock_ms, socket_factory=lambda: sock, rand=lambda: 1.0)
    client.sock = sock
    try:
        client.handshake()
    except client_handshake.HandshakeFailed as e:
        inits = sum(1 for m in sock.sent if m[0] == abi.MSG_HANDSHAKE_INIT)
        raise AssertionError(
            f"{sock.forged} forged cookie replies made the client give up after "
            f"{sock.now * 1000:.0f} ms and {inits} initiations, the gateway answering "
            f"in 30 ms: {e}") from None
