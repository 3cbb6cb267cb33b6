"""Review R3 #4: nothing the client seals after stop() may overtake its
TERMINATE (a keepalive with a higher counter, verified first, raises the
gateway's control floor and the TERMINATE is dropped as a replay). The
monitor re-checks the stop after every wait; down() joins the loops
(bounded) before the TERMINATE; nothing is sealed after it."""
from __future__ import annotations

import threading

from test_client_source import Rig

from jvpn.gate import abi


class StopDuringWait:
    """The monitor's wake event; stop() arrives while it waits."""

    def __init__(self, client):
        self.client = client

    def wait(self, _t):
        self.client.stop()
        return True

    def clear(self):
        pass

    def set(self):
        pass


def test_the_monitor_sends_nothing_once_stopped_during_its_wait():
    rig = Rig()
    c = rig.client
    c._route = lambda: None
    before = len(rig.sent)
    c._wake = StopDuringWait(c)
    c._monitor_loop()  # returns: the stop is seen after the wait
    assert rig.sent[before:] == []


def test_down_joins_the_monitor_before_the_terminate_and_seals_nothing_after():
    rig = Rig()
    c = rig.client
    c._route = lambda: None
    t = threading.Thread(target=c._monitor_loop, name="_monitor_loop", daemon=True)
    c._threads.append(t)
    t.start()
    sock = c.sock
    real, alive_at_terminate = sock.sendto, []

    def sendto(msg, dst):
        if msg[0] == abi.MSG_TERMINATE:
            alive_at_terminate.append(t.is_alive())
        return real(msg, dst)
    sock.sendto = sendto
    c.down()
    assert alive_at_terminate == [False]
    n = len(rig.sent)
    c.send_data(b"\x45" + bytes(39))
    c._keepalive(rig.clock.ms)
    c.start_reattach("after the goodbye")
    assert rig.sent[n:] == []
