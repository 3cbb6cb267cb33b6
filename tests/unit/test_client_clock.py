"""Review R3 #3: the client's timers do not run on the wall clock. With
the real monitor thread and the client's default clocks, the system's wall
clock set back by an hour (time.time_ns patched) neither stops the
keepalives nor ends the healthy idle session as ORPHANED; the REATTACH_REQ
still carries the wall time the gateway compares with its own."""
from __future__ import annotations

import threading
import time

from test_client_source import CL_PRIV, GW, GW_PRIV, Rig

from jvpn.client import Client
from jvpn.client_orphan import OrphanWatch
from jvpn.gate import abi
from jvpn.keys import public_from_private


def _client(rig: Rig) -> Client:
    """A client on its default clocks (the Rig's injects a fake one)."""
    c = Client(private_key=CL_PRIV, gateway_public=public_from_private(GW_PRIV), endpoint=GW,
               events=rig.events, socket_factory=rig._socket, keepalive_ms=200)
    c.handshake(attempts=1)
    c._route = lambda: None  # no netlink lookups in a unit test
    c.orphan = OrphanWatch(timeout_ms=1_000, now=c.clock_ms())
    return c


def test_a_wall_clock_set_back_keeps_a_healthy_session(monkeypatch):
    rig = Rig()
    c = _client(rig)
    real_sendto, real_ns, offset, keepalives = c.sock.sendto, time.time_ns, [0], [0]
    monkeypatch.setattr(time, "time_ns", lambda: real_ns() + offset[0])

    def sendto(msg, dst):  # a healthy gateway: every keepalive answered at once
        if msg[0] == abi.MSG_KEEPALIVE:
            keepalives[0] += 1
            c.receive(rig.gateway.keepalive(), GW)
        return real_sendto(msg, dst)
    c.sock.sendto = sendto
    t = threading.Thread(target=c._monitor_loop, daemon=True)
    t.start()
    try:
        time.sleep(0.8)
        before = keepalives[0]
        offset[0] = -3_600 * 10**9  # the wall clock goes back one hour
        time.sleep(1.6)  # longer than OrphanTimeout
    finally:
        c._stop.set()
        t.join(2)
    assert keepalives[0] - before >= 4
    assert c.failed is None, c.ended


def test_the_reattach_request_carries_the_wall_time():
    rig = Rig()
    c = _client(rig)
    c.start_reattach("test")
    [(req, _dst)] = rig.sent_of(abi.MSG_REATTACH_REQ)
    _seq, ts_ms, _nonce, _epoch = rig.gateway.request_fields(req)
    assert abs(ts_ms - time.time_ns() // 1_000_000) < 5_000
