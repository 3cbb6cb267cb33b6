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
