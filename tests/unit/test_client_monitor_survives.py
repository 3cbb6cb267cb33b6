"""Review r14b B: the receive thread's switch_done (candidates.take, then
adopt) resized the candidate dict while the monitor walked it, and the
monitor thread died on "dictionary changed size during iteration" (no
handler): no heartbeats, keepalives, retries or rekey timers, and the agent
looked up while its session died. The candidate set is now serialized, and
a monitor step that raises is contained and reported; steps failing in a
row end the session loudly (jvpn/client_monitor_guard.py)."""

from __future__ import annotations

import random
import sys
import threading

from test_client_source import Rig

from jvpn.client_candidates import Candidates, Uplink
from jvpn.client_monitor_guard import MONITOR_FAILURES_MAX
from jvpn.client_path_health import PathHealth
from jvpn.codes import EventType, Reason
from jvpn.policy import default_policy
from kits.daemon_kit import events_of

RACE_S = 1.5


def _candidates() -> tuple[Candidates, list[Uplink]]:
    p = default_policy()
    c = Candidates(p, lambda: 0, random.random, lambda u: object())
    ups = [Uplink("10.0.0.2", 1, "wifi"), Uplink("10.1.0.2", 2, "lte"),
           Uplink("10.2.0.2", 3, "eth")]
    for u in ups:
        c.adopt(u, object(), PathHealth(p, 0))
    return c, ups


def test_a_switch_in_the_receive_thread_does_not_kill_the_monitors_walk():
    c, ups = _candidates()
    errors, stop = [], threading.Event()

    def monitor():  # what the monitor walks: tick, due, the selector's and the switch's view
        now = 0
        while not stop.is_set():
            now += 1
            try:
                c.tick(now)
                c.due(now)
                assert all(p.uplink.key == k for k, p in c.listed())
            except RuntimeError as e:
                errors.append(str(e))
                return

    def receiver():  # switch_done: the chosen one taken, the old one adopted
        while not stop.is_set():
            u = random.choice(ups)
            path = c.take(u.key)
            if path is not None:
                c.adopt(u, path.sock, path.health)

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        threads = [threading.Thread(target=monitor), threading.Thread(target=receiver)]
        for t in threads:
            t.start()
        threads[0].join(RACE_S)
        stop.set()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(interval)
    assert errors == []


class NoWait:
    """The monitor's wake event: no wait between steps."""

    def wait(self, _t):
        return False

    def clear(self):
        pass

    def set(self):
        pass


def test_a_monitor_step_that_raises_once_does_not_end_the_loop():
    rig = Rig()
    c = rig.client
    c._wake = NoWait()
    steps = []

    def step(_woke=False):
        steps.append(1)
        if len(steps) == 1:
            raise RuntimeError("dictionary changed size during iteration")
        if len(steps) == 3:
            c.stop()

    c.monitor_step = step
    c._monitor_loop()  # returns at the stop, not at the error
    assert len(steps) == 3 and c.failed is None
    [err] = events_of(rig.events, EventType.DAEMON_ERROR)
    assert err["reason_code"] == Reason.INTERNAL_ERROR and err["where"] == "client-monitor"
    assert "dictionary changed size" in err["detail"] and err["count"] == 1


def test_a_monitor_that_keeps_failing_ends_the_session_loudly():
    rig = Rig()
    c = rig.client
    c._wake = NoWait()
    steps = []

    def step(_woke=False):
        steps.append(1)
        raise KeyError("gone")

    c.monitor_step = step
    c._monitor_loop()  # the session is over: the loop ends
    assert len(steps) == MONITOR_FAILURES_MAX
    assert c.failed == Reason.INTERNAL_ERROR and "in a row" in c.ended
    [over] = events_of(rig.events, EventType.SESSION_TERMINATED)
    assert over["reason_code"] == Reason.INTERNAL_ERROR
    assert len(events_of(rig.events, EventType.DAEMON_ERROR)) == 1  # one per interval
