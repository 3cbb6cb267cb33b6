"""The client's per-path measurement (jvpn/client_path_health.py): RTT as
RFC 6298 smooths it, the loss timeout, losses, the window and the last 20,
and the VOLATILE verdict in the spec's order (docs/protocol.md "Measuring
the active path")."""

from __future__ import annotations

import random
from dataclasses import replace

from jvpn.client_path_health import CONFIRMATIONS, PathHealth, Rtt, heartbeat_every_ms, is_dead
from jvpn.codes import Volatility
from jvpn.policy import Policy

P = Policy()


def test_rtt_starts_at_100_ms_and_smooths_like_rfc6298():
    r = Rtt()
    assert r.srtt == 100 and r.loss_timeout_ms() == 400
    r.sample(40)
    assert (r.srtt, r.rttvar) == (40, 20)
    r.sample(80)
    assert r.rttvar == 0.75 * 20 + 0.25 * 40
    assert r.srtt == 0.875 * 40 + 0.125 * 80


def test_loss_timeout_is_at_least_100_and_at_most_1000_ms():
    fast, slow = Rtt(), Rtt()
    fast.sample(1)
    slow.sample(800)
    assert fast.loss_timeout_ms() == 100
    assert slow.loss_timeout_ms() == 1000


def test_an_answer_counts_once_and_only_for_an_outstanding_sample():
    h = PathHealth(P, 0)
    h.sent(7, 0)
    assert not h.answered(8, 10)  # never sent
    assert h.answered(7, 20)
    assert not h.answered(7, 30)  # a duplicate
    assert h.decided_count() == 1 and h.rtt.srtt == 20


def test_a_late_answer_ends_the_run_grows_the_timeout_and_is_no_loss():
    h = PathHealth(P, 0)
    for i in range(10):
        h.sent(i, i * 10)
    h.tick(700)
    assert h.consecutive_drops == 10 and h.window_loss(700) == 1.0
    assert not h.answered(0, 720)  # 720 ms late: taken as no fresh answer...
    assert h.consecutive_drops == 0 and h.window_loss(720) == 0.9  # ...but delivered
    assert h.rtt.srtt == 720 and h.rtt.loss_timeout_ms() == 1000
    assert not h.answered(0, 730)  # once
    assert not h.answered(99, 730) and h.rtt.srtt == 720  # never sent


def test_an_echo_resets_the_run_of_drops():
    h = PathHealth(P, 0)
    for i in range(2):
        h.sent(i, i * 100)
    h.tick(1000)
    assert h.consecutive_drops == 2
    h.sent(5, 1000)
    h.answered(5, 1010)
    assert h.consecutive_drops == 0


def _run(h: PathHealth, now: int, cadence: int, answer) -> int:
    """One heartbeat sent at ``now``; answered 10 ms later when ``answer()``."""
    h.sent(now, now)
    if answer():
        h.answered(now, now + 10)
    h.tick(now + cadence)
    return now + cadence


def test_blackhole_third_drop_within_three_cadences_and_a_timeout():
    h = PathHealth(P, 0)
    now = 0
    for _ in range(30):  # warm: srtt 10 ms, timeout 50 ms
        now = _run(h, now, 100, lambda: True)
    start, lost_at = now, None
    while lost_at is None:
        h.sent(now, now)
        for t in range(now, now + 100, 5):
            h.tick(t)
            if h.volatility(t) is Volatility.CONSECUTIVE_DROP_EXCEEDED:
                lost_at = t
                break
        now += 100
    assert lost_at - start <= 3 * 100 + h.rtt.loss_timeout_ms()


def test_thirty_percent_loss_is_volatile_within_the_loss_window():
    rng = random.Random(14)
    h = PathHealth(P, 0)
    now = 0
    for _ in range(40):
        now = _run(h, now, 100, lambda: True)
    start, seen = now, None
    each_way = lambda: rng.random() > 0.3 and rng.random() > 0.3  # noqa: E731
    while seen is None and now - start < 5 * P.loss_window_ms:
        now = _run(h, now, 100, each_way)
        h.heard(now)  # other traffic: only the loss may name it
        why = h.volatility(now)
        if why is Volatility.LOSS_THRESHOLD_EXCEEDED:
            seen = now
    assert seen is not None and seen - start <= P.loss_window_ms


def test_five_percent_loss_rarely_crosses_the_threshold():
    rng = random.Random(5)
    h = PathHealth(P, 0)
    now, volatile_ticks, ticks = 0, 0, 0
    for _ in range(6000):  # ten minutes of 100 ms heartbeats
        now = _run(h, now, 100, lambda: rng.random() > 0.05)
        ticks += 1
        volatile_ticks += h.volatility(now) is Volatility.LOSS_THRESHOLD_EXCEEDED
    assert volatile_ticks / ticks < 0.01


def test_window_loss_needs_ten_decided_and_forgets_old_ones():
    h = PathHealth(P, 0)
    for i in range(9):
        h.sent(i, i * 10)
    h.tick(2000)
    assert h.window_loss(2000) is None
    h.sent(99, 2000)
    h.tick(3000)
    assert h.window_loss(3000) == 1.0
    assert h.window_loss(3000 + P.loss_window_ms + 1) is None  # older than the window


def test_loss_window_ms_is_the_window():
    short = PathHealth(replace(P, loss_window_ms=500), 0)
    for i in range(10):
        short.sent(i, 0)
    short.tick(1000)
    assert short.window_loss(1000) == 1.0
    assert short.window_loss(1600) is None


def test_candidate_loss_is_over_the_last_20_decided():
    h = PathHealth(P, 0)
    for i in range(20):
        h.sent(i, i * 1000)
        h.tick(i * 1000 + 999)  # each lost
    for i in range(20, 30):
        h.sent(i, i * 1000)
        h.answered(i, i * 1000 + 5)
    assert h.recent_loss() == 0.5


def test_volatility_precedence_follows_the_spec():
    h = PathHealth(P, 0)
    for i in range(10):
        h.sent(i, 0)
    h.tick(1000)  # ten lost: every condition but transport_dead holds at 3000
    assert h.volatility(3000, present=False) is Volatility.TRANSPORT_DEAD
    assert h.volatility(3000, send_failed=True) is Volatility.TRANSPORT_DEAD
    assert h.volatility(3000) is Volatility.CONSECUTIVE_DROP_EXCEEDED
    h.consecutive_drops = 0
    assert h.volatility(3000) is Volatility.HEARTBEAT_TIMEOUT
    h.heard(2900)
    assert h.volatility(2900) is Volatility.LOSS_THRESHOLD_EXCEEDED


def test_max_consecutive_drops_is_the_run():
    h = PathHealth(replace(P, max_consecutive_drops=5), 0)
    for i in range(4):
        h.sent(i, 0)
    h.tick(500)
    h.heard(500)
    assert h.volatility(500) is None
    h.sent(9, 500)
    h.tick(1000)
    assert h.volatility(1000) is Volatility.CONSECUTIVE_DROP_EXCEEDED


def test_heartbeat_volatile_ms_is_the_silence():
    h = PathHealth(replace(P, heartbeat_volatile_ms=300), 0)
    assert h.volatility(299) is None
    assert h.volatility(300) is Volatility.HEARTBEAT_TIMEOUT


def test_loss_volatile_threshold_is_the_threshold():
    for threshold, volatile in ((0.2, True), (0.5, False)):
        h = PathHealth(replace(P, loss_volatile_threshold=threshold), 0)
        for i in range(10):
            h.sent(i, i * 10)
            if i % 3:
                h.answered(i, i * 10 + 5)
        h.tick(400)
        h.consecutive_drops = 0
        assert (h.volatility(400) is not None) is volatile


def test_dead_is_transport_dead_heartbeat_timeout_and_confirmed_drops():
    assert is_dead(Volatility.TRANSPORT_DEAD, False)
    assert is_dead(Volatility.HEARTBEAT_TIMEOUT, False)
    assert not is_dead(Volatility.CONSECUTIVE_DROP_EXCEEDED, False)
    assert is_dead(Volatility.CONSECUTIVE_DROP_EXCEEDED, True)
    assert not is_dead(Volatility.LOSS_THRESHOLD_EXCEEDED, True) and not is_dead(None, True)


def test_heartbeats_every_loss_window_over_40_at_least_20_ms():
    assert heartbeat_every_ms(P) == 50
    assert heartbeat_every_ms(replace(P, loss_window_ms=400)) == 20


def _dropped_run(h: PathHealth) -> int:
    """After answers (10 ms: a 100 ms timeout), three heartbeats lost in
    a row, 100 ms apart: VOLATILE."""
    for i in range(-5, 0):
        h.sent(i, 0)
        h.answered(i, 10)
    for i in range(3):
        h.sent(i, i * 100)
        h.tick(i * 100 + 99)
    h.tick(300)
    h.heard(300)
    assert h.volatility(300) is Volatility.CONSECUTIVE_DROP_EXCEEDED
    return 300


def test_a_run_of_drops_asks_once_for_confirmations_and_is_not_yet_dead():
    h = PathHealth(P, 0)
    assert h.confirm() == 0  # no run yet
    now = _dropped_run(h)
    assert h.confirm() == CONFIRMATIONS and h.confirm() == 0  # once per run
    assert not h.drops_confirmed()
    h.sent(10, now, confirmation=True)
    h.sent(11, now + 3, confirmation=True)
    h.tick(now + 100)
    assert not h.drops_confirmed()  # the second one's timeout is not over
    h.tick(now + 103)
    assert h.drops_confirmed()


def test_an_echo_or_a_late_echo_ends_the_confirmation_episode():
    for late in (True, False):
        h = PathHealth(P, 0)
        now = _dropped_run(h)
        h.confirm()
        h.sent(10, now, confirmation=True)
        h.sent(11, now, confirmation=True)
        if late:
            h.answered(1, now + 50)  # a heartbeat already counted lost
        else:
            h.answered(10, now + 50)
        h.tick(now + 200)
        assert not h.drops_confirmed() and h.consecutive_drops <= 1
        assert h.volatility(now + 200) is not Volatility.CONSECUTIVE_DROP_EXCEEDED


def test_regular_heartbeats_lost_do_not_confirm_a_run():
    h = PathHealth(P, 0)
    now = _dropped_run(h)
    h.confirm()
    for i in range(5):
        h.sent(20 + i, now + i * 50)  # heartbeats, not confirmations
    h.tick(now + 1000)
    assert h.consecutive_drops == 8 and not h.drops_confirmed()


def test_a_rebound_or_left_path_starts_a_new_run():
    for end in ("rebound", "left"):
        h = PathHealth(P, 0)
        now = _dropped_run(h)
        h.confirm()
        h.sent(10, now, confirmation=True)
        h.sent(11, now, confirmation=True)
        h.tick(now + 200)
        assert h.drops_confirmed()
        h.rebound(now + 200) if end == "rebound" else h.left(True, now + 200)
        assert not h.drops_confirmed() and h.consecutive_drops == 0


def test_a_rebound_path_counts_only_its_heartbeats_since():
    h = PathHealth(P, 0)
    for i in range(10):
        h.sent(i, i * 10)
    h.tick(500)  # ten probes lost while it was a candidate
    assert h.window_loss(500) == 1.0
    h.rebound(500)  # the binding moved here: a fresh window, a fresh run
    assert h.window_loss(500) is None and h.consecutive_drops == 0
    assert h.volatility(500) is None


def test_a_path_left_volatile_waits_twenty_probes_and_a_minute():
    h = PathHealth(P, 0)
    h.left(volatile=True, now_ms=0)
    for i in range(20):
        h.sent(i, i * 1000)
        h.answered(i, i * 1000 + 5)
    assert h.on_probation(59_999) and not h.on_probation(60_000)
    calm = PathHealth(P, 0)
    calm.left(volatile=False, now_ms=0)
    assert not calm.on_probation(1)


def test_heartbeats_in_flight_confirm_a_run_of_drops():
    """A run of drops on a slow path: the heartbeats sent after it and
    still unanswered are the confirmations; only the missing ones are sent."""
    h = PathHealth(P, 0)
    for i in range(5):
        h.sent(i, i * 50)
    h.tick(2 * 50 + 400)  # the first three lost (start timeout 400 ms)
    assert h.consecutive_drops == 3
    assert h.confirm() == 0  # 3 and 4 are on their way: they confirm
    h.tick(3 * 50 + 400)
    assert not h.drops_confirmed()
    h.tick(4 * 50 + 400)
    assert h.drops_confirmed()


class DataPath:
    """A path's heartbeats every 50 ms (the default cadence), each echoed
    5 ms later with the gateway's count of DATA delivered; ``send`` puts
    data on the path, ``deliver`` hands what is on its way to the gateway."""

    def __init__(self):
        self.h, self.now, self.hb = PathHealth(P, 0), 0, 0
        self.delivered, self.on_way = 0, 0

    def send(self, n: int) -> None:
        self.h.delivery.data_sent(n)
        self.on_way += n

    def deliver(self, share: float = 1.0) -> None:
        self.delivered += round(self.on_way * share)
        self.on_way = 0

    def heartbeat(self, old_gateway: bool = False) -> None:
        """One heartbeat and its echo (an older gateway's says no count)."""
        self.h.sent(self.hb, self.now)
        self.now += 5
        assert self.h.answered(self.hb, self.now)
        self.h.delivery.echoed(self.hb, None if old_gateway else self.delivered, self.now)
        self.hb, self.now = self.hb + 1, self.now + 45

    def flow(self, ms: int, per_cadence: int = 5, share: float = 1.0) -> None:
        for _ in range(ms // 50):
            self.send(per_cadence)
            self.deliver(share)
            self.heartbeat()


def test_a_path_that_delivers_no_data_is_volatile_though_its_heartbeats_pass():
    p = DataPath()
    p.flow(2_000)
    assert p.h.volatility(p.now) is None and p.h.data_loss(p.now) == 0.0
    p.flow(500, share=0.0)
    assert p.h.window_loss(p.now) == 0.0  # every heartbeat answered
    assert p.h.volatility(p.now) is Volatility.LOSS_THRESHOLD_EXCEEDED
    assert p.h.data_lossy(p.now) and p.h.loss(p.now) > P.loss_volatile_threshold


def test_data_in_flight_at_the_echo_is_no_loss():
    """A burst sent just before a heartbeat reaches the gateway after it:
    data sent within a cadence of the newest echoed heartbeat is not
    counted yet (it is delivered by the next echo)."""
    p = DataPath()
    p.flow(2_000, per_cadence=1)
    p.now -= 2
    p.send(60)  # 2 ms before the heartbeat, still on its way at its echo
    p.now += 2
    p.heartbeat()
    assert p.h.volatility(p.now) is None
    p.deliver()
    p.flow(500, per_cadence=1)
    assert p.h.volatility(p.now) is None and p.h.data_loss(p.now) == 0.0


def test_a_trickle_decides_nothing():
    """Under 20 data messages sent in the window: no verdict (a few unlucky
    drops of a trickle are noise, not a path that drops data)."""
    p = DataPath()
    for _ in range(40):
        p.send(1 if p.hb % 4 == 0 else 0)  # 10 in the window, half lost
        p.deliver(0.0 if p.hb % 8 == 0 else 1.0)
        p.heartbeat()
    assert p.h.data_loss(p.now) is None and p.h.volatility(p.now) is None


def test_a_count_that_falls_starts_the_comparison_again():
    """A gateway restart or a handover: the count starts from 0 elsewhere.
    No alarm; a path that then drops data is still seen."""
    p = DataPath()
    p.flow(2_000)
    p.delivered = 3  # a new daemon's count
    for _ in range(40):
        p.flow(50)
        assert p.h.volatility(p.now) is None and p.h.data_loss(p.now) in (None, 0.0)
    assert p.h.data_loss(p.now) == 0.0
    p.flow(1_000, share=0.0)
    assert p.h.volatility(p.now) is Volatility.LOSS_THRESHOLD_EXCEEDED


def test_an_older_gateways_echo_turns_the_check_off():
    p = DataPath()
    p.flow(2_000)
    for _ in range(20):  # a handover to an older gateway: no count in its echoes
        p.send(5)
        p.heartbeat(old_gateway=True)
    assert p.h.data_loss(p.now) is None and p.h.volatility(p.now) is None


def test_a_rebound_or_left_path_compares_afresh():
    p = DataPath()
    p.flow(2_000)
    p.flow(500, share=0.0)
    assert p.h.data_lossy(p.now)
    p.h.rebound(p.now)  # the binding moved (perhaps to another gateway's count)
    assert p.h.data_loss(p.now) is None and p.h.volatility(p.now) is None
