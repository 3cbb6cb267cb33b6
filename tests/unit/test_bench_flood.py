"""The parts of `bench flood` (jvpn/bench/net.py) that decide without a lab:
iperf3's outcome as a figure (a collapse is goodput 0 and a reason, never an
exception), each run's flood rate and daemon CPU, and the summary when a run
collapsed. iperf3 is faked through the ``run`` it is given."""

from __future__ import annotations

import json
import subprocess

from jvpn.bench.net import Sample, flood_summary, iperf_figure, run_figures

RESULT = json.dumps({"end": {"sum_received": {"bits_per_second": 940e6}}})
NO_CONNECTION = json.dumps({"start": {}, "error": "unable to connect to server - server may "
                                                  "have stopped running or use a different "
                                                  "port, firewall issue, etc.: Connection "
                                                  "timed out"})


def fake_iperf(*, stdout: str = "", stderr: str = "", returncode: int = 0, hang: bool = False):
    calls = []

    def run(args, timeout):
        calls.append((args, timeout))
        if hang:
            raise subprocess.TimeoutExpired(args, timeout)
        return subprocess.CompletedProcess(args, returncode, stdout, stderr)
    return run, calls


def test_a_measured_run_is_its_goodput():
    run, _calls = fake_iperf(stdout=RESULT)
    assert iperf_figure(run, "10.99.0.1", 3) == {"mbps": 940.0, "why": None}


def test_iperf3_that_never_ends_is_a_figure_not_an_exception():
    run, calls = fake_iperf(hang=True)
    figure = iperf_figure(run, "10.99.0.1", 3, connect_s=5)
    assert figure["mbps"] == 0
    assert figure["why"].startswith("iperf3 did not finish within")
    [(args, bound)] = calls
    # bounded: the connection attempt, the run and a margin, not iperf3's own 2 min
    assert "--connect-timeout" in args and args[args.index("--connect-timeout") + 1] == "5000"
    assert 3 + 5 < bound <= 3 + 5 + 30


def test_a_connection_that_never_came_is_goodput_0_with_the_reason():
    run, _calls = fake_iperf(stdout=NO_CONNECTION, returncode=1)
    figure = iperf_figure(run, "10.99.0.1", 3, connect_s=5)
    assert figure["mbps"] == 0
    assert figure["why"].startswith("iperf3 could not connect within 5 s (unable to connect")


def test_any_other_failure_is_its_exit_status_and_one_line():
    run, _calls = fake_iperf(stderr="iperf3: error - control socket has closed unexpectedly\n"
                                    "more\n", returncode=1)
    figure = iperf_figure(run, "10.99.0.1", 3)
    assert figure == {"mbps": 0.0, "why": "iperf3 exited 1: iperf3: error - control socket "
                                         "has closed unexpectedly"}


def test_a_run_reports_the_flood_rate_reached_and_the_daemon_cpu():
    before, after = Sample(100.0, 1_000, 10.0), Sample(104.0, 401_000, 13.0)
    figures = run_figures({"mbps": 0.0, "why": "iperf3 did not finish within 23 s"},
                          before, after, flood=True)
    assert figures["flood_pps"] == 100_000 and figures["seconds"] == 4.0
    assert figures["daemon_cpu_s"] == 3.0 and figures["daemon_cpu_pct"] == 75.0
    assert figures["mbps"] == 0 and figures["why"]


def test_counters_that_could_not_be_read_are_none_with_the_daemon_gone_said():
    figures = run_figures({"mbps": 0.0, "why": "x"}, Sample(0.0, None, 1.0),
                          Sample(2.0, 5, None), flood=True)
    assert figures["flood_pps"] is None and figures["daemon_cpu_s"] is None
    assert figures["daemon_cpu_why"] == "the gateway daemon had exited"


def test_a_collapsed_userspace_run_is_in_the_summary_as_0_and_why():
    ok = {"mbps": 900.0, "why": None, "flood_pps": 0, "daemon_cpu_pct": 20.0}
    xdp = {**ok, "mbps": 850.0, "flood_pps": 300_000}
    gone = {"mbps": 0.0, "why": "iperf3 could not connect within 5 s", "flood_pps": 290_000,
            "daemon_cpu_pct": 99.0}
    out = flood_summary({"none": ok, "xdp": xdp, "userspace": gone, "xdp_drops": {}}, 3)
    assert out["goodput_flood_userspace_mbps"] == 0
    assert out["why"] == {"userspace": "iperf3 could not connect within 5 s"}
    assert out["xdp_over_userspace"] is None  # no ratio to a zero, and no ZeroDivisionError
    assert out["xdp_over_no_flood"] == 0.94
    assert out["flood_pps_userspace_run"] == 290_000 and out["daemon_cpu_userspace"] == 99.0
    json.dumps(out)
