"""The parts of `bench failover` (jvpn/bench/failover.py) that decide
without a lab: the default policy it writes, the pacing that keeps its
trials within that policy's switch bounds, and its figures (lost echoes,
trials without recovery counted, not dropped)."""

from __future__ import annotations

from jvpn.bench.failover import (
    COOLDOWN_MARGIN_MS,
    PACING_WINDOW_MS,
    SwitchPacer,
    Trial,
    default_selection_policy,
    failover_figures,
    lost_echoes,
    planned_figures,
    policy_file,
)
from jvpn.policy import Policy, load_policy


def test_the_policy_file_is_the_default_policy(tmp_path):
    path = tmp_path / "policy.toml"
    fields = default_selection_policy()
    path.write_text(policy_file(fields))
    assert load_policy(path) == Policy()
    assert fields["switching.max_switches_per_min"] == Policy().max_switches_per_min
    assert "[transport]\nmax_candidate_count = 3\nenforce_hysteresis = true\n" in path.read_text()


class Clock:
    def __init__(self, now_ms: float):
        self.now = now_ms

    def __call__(self) -> float:
        return self.now


def test_no_switch_yet_means_no_wait():
    pacer = SwitchPacer(8, 1500, lambda: [[], []], Clock(1_000_000))
    assert pacer.delay_s(2) == 0


def test_the_cooldown_is_kept_after_the_last_switch_of_either_witness():
    now = 1_000_000
    pacer = SwitchPacer(8, 1500, lambda: [[now - 1000], [now - 200]], Clock(now))
    assert pacer.delay_s(1) == (1500 + COOLDOWN_MARGIN_MS - 200) / 1000


def test_at_most_max_minus_one_in_a_minute():
    now = 1_000_000
    # six switches, 8 s apart, the last 10 s ago: room for one more (7 = 8 - 1), not two
    times = [now - 10_000 - 8_000 * k for k in range(6)]
    pacer = SwitchPacer(8, 1500, lambda: [times, []], Clock(now))
    assert pacer.delay_s(1) == 0
    wait = pacer.delay_s(2)  # the oldest must leave the minute first
    assert wait == (min(times) + PACING_WINDOW_MS - now) / 1000 and wait > 0
    # and once it has, there is room
    later = SwitchPacer(8, 1500, lambda: [times, []], Clock(now + wait * 1000 + 1))
    assert later.delay_s(2) == 0


def test_old_switches_do_not_count():
    now = 1_000_000
    times = [now - PACING_WINDOW_MS - 1 - k for k in range(20)]
    assert SwitchPacer(8, 1500, lambda: [times], Clock(now)).delay_s(1) == 0


def test_lost_echoes_are_the_missing_sequence_numbers_in_the_window():
    samples = [(n, n / 1000, n / 1000 + 0.0003) for n in range(1, 101) if not 40 <= n < 50]
    assert lost_echoes(samples, 0.0, 1.0) == 10
    assert lost_echoes(samples, 0.0, 0.030) == 0
    assert lost_echoes(samples, 0.041, 0.049) is None  # nothing came back: no figure


def test_a_trial_without_recovery_is_counted_not_dropped():
    # echoes every ms; trial 1 (t0 = 1.0) recovers at 1.2, trial 2 (t0 = 3.0) never does
    samples = [(n, n / 1000, n / 1000 + 0.0003) for n in range(1, 5000)
               if not 1000 <= n < 1200 and not 3000 <= n < 4000]
    trials = [Trial("wifi", 1.0, 2.0), Trial("lte", 3.0, 4.0)]
    got = failover_figures("blackhole", samples, trials)
    assert got["blackhole_trials_without_recovery"] == 1
    assert got["blackhole_per_trial_ms"][1] is None
    assert 200 <= got["blackhole_per_trial_ms"][0] < 201
    assert got["blackhole_p50_ms"] == got["blackhole_per_trial_ms"][0]
    assert got["blackhole_lost_per_trial"] == [200, None]
    assert got["blackhole_uplinks"] == ["wifi", "lte"]


def test_the_planned_move_figure_is_the_worst_trial():
    samples = [(n, n / 1000, n / 1000 + 0.0003) for n in range(1, 3000) if n not in (1500, 2500)]
    got = planned_figures(samples, [Trial("wifi", 1.0, 2.0), Trial("wifi", 2.2, 2.9),
                                    Trial("wifi", 0.1, 0.9, move_ms=5.0)])
    assert got["lost_packets_planned_move_per_trial"] == [1, 1, 0]
    assert got["lost_packets_planned_move"] == 1 and got["lost_packets_planned_move_total"] == 2
    assert got["planned_moves_without_switch"] == 2


def test_a_lossy_trial_that_could_not_start_is_counted_not_a_crash():
    from jvpn.bench.failover import lossy_figures

    got = lossy_figures([Trial(None, 0, 0, extra={"switches_after": None}),
                         Trial("wifi", 1, 2, move_ms=900.0, extra={"switches_after": 0})])
    assert got["switches_after_move_30pct"] == 0
    assert got["switches_after_move_30pct_per_trial"] == [None, 0]
    assert got["lossy_trials_without_move"] == 1


class LossyLab:
    """A FailoverLab stand-in for lossy_trials: the gateway switches once,
    ``move_ms`` after the loss is set, and never again."""

    def __init__(self, move_ms: float):
        self.move_ms, self.stamps, self.probation_for = move_ms, [], []
        self.imp = self

    def ready(self, what, need):
        pass

    def active_uplink(self):
        return "lte"

    def prefer(self, uplink):
        pass

    def await_probation(self, uplink):
        self.probation_for.append(uplink)

    def set(self, uplink, percent):
        import time

        self.stamps.append(time.time() * 1000 + self.move_ms)

    def clear(self, uplink):
        pass

    def switches(self, after_ms=0, before_ms=float("inf")):
        return [t for t in self.stamps if after_ms < t <= before_ms]

    def first_switch(self, after_wall, bound_s):
        got = self.switches(after_wall * 1000)
        return min(got) if got else None

    def await_switch(self, after_wall, bound_s):  # the figure as the gateway's stamp rounds
        first = self.first_switch(after_wall, bound_s)
        return None if first is None else round(first - after_wall * 1000, 1)


def test_the_move_itself_is_not_a_switch_after_it():
    from jvpn.bench.failover import lossy_figures, lossy_trials

    # 474.34 ms rounds down to 474.3: a watch from t0 + the rounded figure
    # starts 0.04 ms before the move, and the move counted as a flap
    lab = LossyLab(move_ms=474.34)
    got = lossy_figures(lossy_trials(lab, 2, watch_s=0.05))
    assert got["switches_after_move_30pct_per_trial"] == [0, 0]
    assert all(474 <= m <= 475 for m in got["lossy_move_per_trial_ms"])
    assert lab.probation_for == ["wifi", "wifi"]  # the clean uplink, before each trial


def test_switches_after_a_move_exclude_it_and_end_with_the_watch():
    from jvpn.bench.failover import switches_after

    move = 1_796_024_348_206
    assert switches_after([move], move, 10_000) == 0
    assert switches_after([move - 5, move, move + 1, move + 10_000, move + 10_001],
                          move, 10_000) == 2


def test_a_trial_waits_out_the_clean_uplinks_probation():
    from jvpn.bench.failover import probation_wait_s
    from jvpn.client_path_health import PROBATION_MS

    now = 1_000_000
    assert probation_wait_s([], now) == 0
    assert probation_wait_s([now - PROBATION_MS - COOLDOWN_MARGIN_MS - 1], now) == 0
    # left 10 s ago (the previous 30 % trial): the client may not move back for 50 s more
    wait = probation_wait_s([now - 30_000, now - 10_000], now)
    assert wait == (PROBATION_MS - 10_000 + COOLDOWN_MARGIN_MS) / 1000


def test_only_the_last_leave_of_an_uplink_starts_a_probation():
    from jvpn.bench.failover import left_volatile

    def chose(ts, frm, to, why="consecutive_drop_exceeded"):
        return {"ts_ms": ts, "event_type": "PathSelected", "reason_code": why,
                "interface": frm, "candidate_interface": to}

    lossy = [chose(1000, "wifi", "lte"), chose(9000, "lte", "wifi")]
    assert left_volatile(lossy, "wifi") == [1000]
    assert left_volatile(lossy, "lte") == [9000]
    # a planned move away from it afterwards: the client left it working
    assert left_volatile([*lossy, chose(70_000, "wifi", "lte", "planned_move")], "wifi") == []
    # dropped from the candidates (link down) since: it comes back with a fresh history
    gone = {"ts_ms": 2000, "event_type": "PathCandidate", "reason_code": "removed",
            "interface": "wifi"}
    assert left_volatile([lossy[0], gone], "wifi") == []
    # a reattach from the same socket leaves nothing
    assert left_volatile([chose(5000, "lte", None, "transport_dead")], "lte") == []
