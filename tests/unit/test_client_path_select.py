"""The client's choice of path (jvpn/client_path_select.py): the score, who
is eligible, the three rules, hysteresis, the bounds, denials once per
episode; and seeded simulations of the whole loop (heartbeats, probes,
measurement, choice) under 5 % and 30 % loss (docs/protocol.md "Choosing a
path", "Why it does not flap")."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest

from jvpn.client_path_health import PathHealth, heartbeat_every_ms
from jvpn.client_path_select import (
    REATTACH_PREFERRED,
    REATTACH_SAME,
    STAY,
    SWITCH,
    Active,
    Candidate,
    Selector,
    score,
)
from jvpn.codes import Volatility
from jvpn.policy import Policy

P = Policy()
LOSS = Volatility.LOSS_THRESHOLD_EXCEEDED
DEAD = Volatility.HEARTBEAT_TIMEOUT
DROPS = Volatility.CONSECUTIVE_DROP_EXCEEDED


def measured(answers: list[bool], rtt: int = 20, start: int = 0) -> PathHealth:
    """A path whose samples (one per 100 ms from ``start``) were answered or lost."""
    h = PathHealth(P, start)
    now = start
    for i, ok in enumerate(answers):
        h.sent(i, now)
        if ok:
            h.answered(i, now + rtt)
        h.tick(now + 100)
        now += 100
    h.heard(now)
    return h


def clean(n: int = 20, rtt: int = 20) -> PathHealth:
    return measured([True] * n, rtt)


def lossy(fraction_lost: float, n: int = 20, rtt: int = 20) -> PathHealth:
    lost = round(n * fraction_lost)
    return measured([i % (n // max(lost, 1)) != 0 if lost else True for i in range(n)][:n], rtt)


NOW = 2000  # the end of the measured histories


def planned(s: Selector, act: Active, cands: list[Candidate]):
    """A planned move is decided once a candidate has been better for a
    whole loss window: the decision a loss window after the first."""
    first = s.decide(NOW, act, cands)
    return first if first.action == SWITCH else s.decide(NOW + P.loss_window_ms, act, cands)


def test_score_is_loss_rtt_and_preference():
    assert score(0, 0, False) == 1.0
    assert score(0, 100, False) == 0.5
    assert score(0.2, 0, True) == pytest.approx(1.0)
    assert score(0, 0, True, dead=True) == 0.0


def test_a_candidate_needs_three_decided_probes_one_of_the_last_three_answered():
    assert not Candidate("b", measured([True, True])).eligible(False, NOW)
    assert Candidate("b", measured([True, False, False])).eligible(False, NOW)
    assert not Candidate("b", measured([True, False, False, False])).eligible(False, NOW)


def test_a_dead_active_path_takes_any_candidate_whose_last_probe_was_answered():
    assert Candidate("b", measured([True])).eligible(True, NOW)
    assert not Candidate("b", measured([True, False])).eligible(True, NOW)


def test_rule1_dead_active_switches_to_the_best_eligible():
    s = Selector(P)
    act = Active(clean(), preferred=True, present=True, why=DEAD)
    d = s.decide(NOW, act, [Candidate("b", clean(rtt=80)), Candidate("c", clean(rtt=20))])
    assert (d.action, d.target, d.reason) == (SWITCH, "c", str(DEAD))


def test_rule1_no_candidate_reattaches_from_the_same_socket_or_the_preferred():
    s = Selector(P)
    there = Active(clean(), preferred=True, present=True, why=DEAD)
    assert s.decide(NOW, there, []).action == REATTACH_SAME
    gone = Active(clean(), preferred=False, present=False, why=Volatility.TRANSPORT_DEAD)
    assert Selector(P).decide(NOW, gone, []).action == REATTACH_PREFERRED


def test_rule2_a_lossy_active_path_moves_to_a_clean_candidate():
    s = Selector(P)
    act = Active(lossy(0.5), preferred=True, present=True, why=LOSS)
    d = s.decide(NOW, act, [Candidate("lte", clean())])
    assert (d.action, d.target, d.reason) == (SWITCH, "lte", str(LOSS))


def test_rule2_planned_move_to_a_better_preferred_path_held_for_a_loss_window():
    s = Selector(P)
    act = Active(clean(), preferred=False, present=True, why=None)
    cands = [Candidate("wifi", clean(), preferred=True)]
    assert s.decide(NOW, act, cands).action == STAY
    assert s.decide(NOW + P.loss_window_ms - 1, act, cands).action == STAY
    d = s.decide(NOW + P.loss_window_ms, act, cands)
    assert (d.action, d.reason) == (SWITCH, "planned_move")


def test_a_planned_move_needs_the_candidate_better_all_along():
    s = Selector(P)
    act = Active(clean(), preferred=False, present=True, why=None)
    cands = [Candidate("wifi", clean(), preferred=True)]
    assert s.decide(NOW, act, cands).action == STAY
    assert s.decide(NOW + 1000, act, []).action == STAY  # not better for a moment
    assert s.decide(NOW + P.loss_window_ms, act, cands).action == STAY
    assert s.decide(NOW + 1000 + 2 * P.loss_window_ms, act, cands).action == SWITCH


def test_rule3_volatile_with_nothing_better_denies_once_per_episode():
    s = Selector(P)
    act = Active(lossy(0.3), preferred=True, present=True, why=LOSS)
    first = s.decide(NOW, act, [])
    again = s.decide(NOW + 50, act, [])
    assert (first.action, first.denied) == (STAY, "no_valid_candidate")
    assert again.denied is None
    s.decide(NOW + 100, Active(clean(), True, True, None), [])  # recovered: episode over
    assert s.decide(NOW + 150, act, []).denied == "no_valid_candidate"


def test_switch_improvement_factor_is_the_bar():
    act = Active(clean(), preferred=False, present=True, why=None)
    better = [Candidate("b", clean(rtt=10))]  # 1/1.1 vs 1/1.2: 9 % better
    assert planned(Selector(P), act, better).action == STAY
    low = replace(P, switch_improvement_factor=1.05)
    assert planned(Selector(low), act, better).action == SWITCH


def test_enforce_hysteresis_false_takes_any_better_score():
    act = Active(clean(), preferred=False, present=True, why=None)
    better = [Candidate("b", clean(rtt=10))]
    assert planned(Selector(replace(P, enforce_hysteresis=False)), act, better).action == SWITCH


def test_switch_cooldown_ms_holds_a_switch_back():
    act = Active(lossy(0.5), preferred=True, present=True, why=LOSS)
    cands = [Candidate("b", clean())]
    s = Selector(P)
    s.switched(NOW - 1000)
    d = s.decide(NOW, act, cands)
    assert (d.action, d.denied) == (STAY, "cooldown_active")
    assert s.decide(NOW + 500, act, cands).action == SWITCH
    short = Selector(replace(P, switch_cooldown_ms=500))
    short.switched(NOW - 1000)
    assert short.decide(NOW, act, cands).action == SWITCH


def test_max_switches_per_min_minus_one_then_only_a_dead_path_moves():
    p = replace(P, max_switches_per_min=3, switch_cooldown_ms=0)
    s = Selector(p)
    s.switched(NOW - 2000)
    s.switched(NOW - 1000)
    later = Active(measured([i % 2 == 0 for i in range(20)], start=NOW + 57_000),
                   preferred=True, present=True, why=LOSS)
    lossy_act = Active(lossy(0.5), preferred=True, present=True, why=LOSS)
    d = s.decide(NOW, lossy_act, [Candidate("b", clean())])
    assert (d.action, d.denied) == (STAY, "switch_rate_limited")
    dead_act = Active(clean(), preferred=True, present=True, why=DEAD)
    assert s.decide(NOW, dead_act, [Candidate("b", clean())]).action == SWITCH
    s.switched(NOW)
    assert s.decide(NOW + 1, dead_act, [Candidate("b", clean())]).action == STAY
    assert s.decide(NOW + 59_001, later, [Candidate("b", clean())]).action == SWITCH


def test_a_path_left_volatile_is_on_probation():
    h = clean()
    h.left(volatile=True, now_ms=NOW)
    act = Active(clean(), preferred=False, present=True, why=None)
    assert planned(Selector(P), act, [Candidate("wifi", h, True)]).action == STAY
    dead = Active(clean(), preferred=False, present=True, why=DEAD)
    assert Selector(P).decide(NOW, dead, [Candidate("wifi", h, True)]).action == SWITCH
    calm = clean()
    calm.left(volatile=False, now_ms=NOW)
    assert planned(Selector(P), act, [Candidate("wifi", calm, True)]).action == SWITCH


def test_a_held_back_planned_move_is_no_denial():
    s = Selector(P)
    s.switched(NOW - 10)
    act = Active(clean(), preferred=False, present=True, why=None)
    d = s.decide(NOW, act, [Candidate("wifi", clean(), preferred=True)])
    assert (d.action, d.denied) == (STAY, None)


# ---------------------------------------------------------------- simulation
class Sim:
    """Two uplinks (wifi preferred, lte), heartbeats on the active one (every
    loss_window_ms / 40, the confirmations of a run of drops at once),
    probes on the other, the monitor tick every 50 ms; a switch completes
    one round trip after it starts. ``loss``: each way, or on the way up
    only (``each_way=False``: an uplink that drops what it forwards);
    ``change(now)``: the loss from then on, or None; ``delay(now)``: extra
    ms for an echo of what is sent at ``now`` (a stall)."""

    def __init__(self, loss: dict, seed: int, policy: Policy = P, rtt: int = 20,
                 each_way: bool = True, change=lambda now: None, delay=lambda now: 0):
        self.rng, self.loss, self.rtt, self.policy = random.Random(seed), loss, rtt, policy
        self.each_way, self.change, self.delay = each_way, change, delay
        self.health = {k: PathHealth(policy, 0) for k in loss}
        self.active, self.switch_at, self.dead_at = "wifi", [], []
        self.selector = Selector(policy)
        self.arrivals: list[tuple[int, str, int]] = []
        self.next_id, self.next_hb, self.next_probe = 0, 0, {k: 0 for k in loss}
        self.sent = {k: 0 for k in loss}

    def _send(self, path: str, now: int, confirmation: bool = False) -> None:
        self.next_id += 1
        self.sent[path] += 1
        self.health[path].sent(self.next_id, now, confirmation)
        drop = self.loss[path]
        if self.rng.random() >= drop and (not self.each_way or self.rng.random() >= drop):
            at = now + self.rtt + self.rng.randint(0, 5) + self.delay(now)
            self.arrivals.append((at, path, self.next_id))

    def run(self, until_ms: int) -> None:
        for now in range(0, until_ms, 10):
            self.loss = self.change(now) or self.loss
            for item in [a for a in self.arrivals if a[0] <= now]:
                self.arrivals.remove(item)
                self.health[item[1]].answered(item[2], now)
            if now >= self.next_hb:
                self._send(self.active, now)
                self.next_hb = now + heartbeat_every_ms(self.policy)
            for k in self.health:
                busy = self.health[self.active].unanswered()
                if k != self.active and now >= self.next_probe[k] and not busy:
                    self._send(k, now)
                    self.next_probe[k] = now + self.policy.probe_interval_ms
            if now % 50 == 0:
                self._tick(now)

    def _tick(self, now: int) -> None:
        for h in self.health.values():
            h.tick(now)
        h = self.health[self.active]
        for _ in range(h.confirm()):
            self._send(self.active, now, confirmation=True)
        act = Active(h, self.active == "wifi", True, h.volatility(now))
        if act.dead:
            self.dead_at.append(now)
        cands = [Candidate(k, v, k == "wifi") for k, v in self.health.items() if k != self.active]
        d = self.selector.decide(now, act, cands)
        if d.action == SWITCH:
            self.selector.switched(now)
            self.switch_at.append(now)
            self.health[self.active].left(act.why is not None, now)
            self.active = d.target
            self.health[d.target].rebound(now)


def most_in_a_minute(times: list[int]) -> int:
    """The most switches in any 60 s (not only the calendar's minutes)."""
    return max((len([u for u in times if t <= u < t + 60_000]) for t in times), default=0)


@pytest.mark.parametrize("each_way", [False, True])
@pytest.mark.parametrize("seed", range(6))
def test_sim_five_percent_loss_on_the_preferred_path_does_not_flap(seed, each_way):
    """5 % of what the uplink forwards dropped (as nftables would in the
    router), one way or each way (about 10 % of heartbeats): over ten
    minutes at most one switch in any 60 s (docs/protocol.md "Why it does
    not flap"): a run of drops is confirmed before the path is dead, the
    loss rule counts 40 heartbeats a window."""
    sim = Sim({"wifi": 0.05, "lte": 0.0}, seed=seed, each_way=each_way)
    sim.run(10 * 60_000)
    assert most_in_a_minute(sim.switch_at) <= 1, sim.switch_at


def test_sim_a_path_left_volatile_is_not_taken_back_within_a_minute():
    """The preferred path goes bad, the client leaves it, it heals at
    once: the move back waits for its probation (a minute)."""
    sim = Sim({"wifi": 0.30, "lte": 0.0}, seed=14,
              change=lambda now: {"wifi": 0.0, "lte": 0.0} if now == 5_000 else None)
    sim.run(3 * 60_000)
    assert len(sim.switch_at) == 2 and sim.active == "wifi"
    assert sim.switch_at[1] - sim.switch_at[0] >= 60_000


@pytest.mark.parametrize("seed", [1430, *range(5)])
def test_sim_thirty_percent_loss_moves_within_the_loss_window_and_stays(seed):
    """30 % each way (about half the heartbeats) from 10 s on, while the
    other path has been probed: moved within the loss window, never back
    while the loss lasts (five minutes)."""
    start = 10_000
    sim = Sim({"wifi": 0.0, "lte": 0.0}, seed=seed,
              change=lambda now: {"wifi": 0.30, "lte": 0.0} if now == start else None)
    sim.run(start + 5 * 60_000)
    assert sim.switch_at and sim.switch_at[0] - start <= P.loss_window_ms
    assert len(sim.switch_at) == 1 and sim.active == "lte"


@pytest.mark.parametrize("phase", range(0, 50, 10))
def test_sim_a_blackhole_is_dead_within_three_cadences_and_two_timeouts(phase):
    """Three heartbeats lost (two cadences and a timeout after the first),
    then both confirmations (a timeout): dead, plus up to a cadence's phase."""
    start = 20_000 + phase
    sim = Sim({"wifi": 0.0, "lte": 0.0}, seed=phase,
              change=lambda now: {"wifi": 1.0, "lte": 0.0} if now == start else None)
    sim.run(start + 2_000)
    cadence, timeout = heartbeat_every_ms(P), sim.health["wifi"].rtt.loss_timeout_ms()
    assert timeout == 100
    assert sim.dead_at and sim.dead_at[0] - start <= 2 * cadence + 2 * timeout + cadence
    assert sim.switch_at and sim.switch_at[0] == sim.dead_at[0] and sim.active == "lte"


@pytest.mark.parametrize("phase", range(0, 50, 10))
def test_sim_a_250_ms_stall_is_no_death_and_no_switch(phase):
    """Every echo of what is sent within 250 ms delayed by 250 ms (a
    loaded gateway or client), then normal: slow, never dead, no move."""
    start = 20_000 + phase
    sim = Sim({"wifi": 0.0, "lte": 0.0}, seed=phase,
              delay=lambda now: 250 if start <= now < start + 250 else 0)
    sim.run(start + 5_000)
    assert not sim.dead_at and not sim.switch_at
