"""`jvpn-xdp bench xdp --json` prints one JSON object with every path (a smoke
test of the command; the figures themselves are not asserted: they live in
docs/benchmarks.md)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.kernel

PATHS = {"data_valid", "drop_unknown_session", "drop_malformed", "drop_bad_tag",
         "drop_wrong_binding", "drop_replay", "drop_rate_limited", "pass_other",
         "drop_key_phase", *(f"{p}_{c}" for p in ("data_valid", "drop_replay")
                             for c in ("single_key", "overlap_current", "overlap_previous"))}


def test_bench_xdp_prints_one_json_object():
    cli = Path(sys.executable).with_name("jvpn-xdp")
    out = subprocess.run([str(cli), "bench", "xdp", "--json", "--repeat", "2000", "--batches", "1",
                          "--singles", "50", "--breakdown"], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["baseline_ns"] > 0
    assert set(result["paths"]) == PATHS and all(v > 0 for v in result["paths"].values())
    assert set(result["components_ns"]) >= {"empty_program", "hash_hit_spin_lock"}
    # each path really took its verdict in the kernel
    seen = result["verdicts_seen"]
    for counter in ("pass_data", "drop_unknown_session", "drop_malformed", "drop_bad_tag",
                    "drop_wrong_binding", "drop_replay", "drop_rate_source", "pass_other",
                    "drop_key_phase"):
        assert seen.get(counter, 0) > 0, counter
    # issue 13: data_valid's 50, then 5 rounds of 10 for each of the three rekey
    # configurations (single key; overlap, current and previous phase): all passed
    assert seen["pass_data"] == 50 + 3 * 5 * 10
    assert set(result["rekey"]) >= {"data_valid_overlap_current_vs_single_key",
                                    "drop_replay_overlap_previous_vs_single_key"}


def test_bench_handoff_prints_one_json_object():
    """Two handoffs in the cluster lab (the figures live in docs/benchmarks.md);
    the dual-acceptance count must be zero."""
    cli = Path(sys.executable).with_name("jvpn-xdp")
    out = subprocess.run([str(cli), "bench", "handoff", "--json", "--trials", "2",
                          "--no-compare"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert {"p50_ms", "p99_ms", "trials", "dual_active_packets"} <= set(result)
    assert result["trials"] == 2 and result["dual_active_packets"] == 0
    assert result["p99_ms"] > 0 and result["mirrored_to_old_owner"] > 0


def test_bench_tunnel_with_a_rekey_interval_prints_the_ratio():
    """`bench tunnel --rekey-interval-ms`: a second lab rekeys every second
    (a short run sees several), the first never; one JSON object with
    both goodputs and their ratio (the figure itself lives in
    docs/benchmarks.md)."""
    cli = Path(sys.executable).with_name("jvpn-xdp")
    out = subprocess.run([str(cli), "bench", "tunnel", "--json", "--seconds", "2", "--rounds",
                          "1", "--rekey-interval-ms", "1000"], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["jvpn_mbps"] > 0 and result["jvpn_rekey_mbps"] > 0
    assert result["rekey_over_none"] == round(result["jvpn_rekey_mbps"] / result["jvpn_mbps"], 3)
    assert result["rekey_interval_ms"] == 1000
    assert result["rekeys"] >= 2 and result["rekeys_in_none"] == 0
    assert result["rekey_lab_handshakes"] == 1  # rekeys, not new sessions
    assert "drop_key_phase" not in result["rekey_lab_drops"]  # nothing lost to a key switch


def test_bench_failover_prints_one_json_object_and_terminates():
    """One trial of each case, short loss periods, in the roaming lab: the
    JSON has the issue's fields and every trial is accounted for (a trial
    that never recovers is counted, not waited for: the run terminates;
    the figures themselves live in docs/benchmarks.md)."""
    cli = Path(sys.executable).with_name("jvpn-xdp")
    out = subprocess.run([str(cli), "bench", "failover", "--json", "--trials", "1",
                          "--lossy-trials", "1", "--watch-seconds", "2", "--loss-seconds", "3"],
                         capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert {"blackhole_p50_ms", "blackhole_p99_ms", "linkdown_p50_ms", "linkdown_p99_ms",
            "lost_packets_planned_move", "switches_per_min_5pct_loss", "trials",
            "lost_packets_blackhole_p50", "lost_packets_linkdown_p50", "rtt_ms",
            "switches_after_move_30pct", "policy", "method"} <= set(result)
    assert result["trials"] == 1 and result["policy"]["default"] is True
    assert result["policy"]["switching.max_switches_per_min"] == 8  # not raised for the bench
    for case in ("blackhole", "linkdown"):
        per = result[f"{case}_per_trial_ms"]
        assert len(per) == 1 and result[f"{case}_uplinks"][0] in ("wifi", "lte")
        assert result[f"{case}_trials_without_recovery"] == sum(p is None for p in per)
    assert result["linkdown_trials_without_recovery"] == 0  # today's case recovers
    assert len(result["lost_packets_planned_move_per_trial"]) == 1
    assert len(result["switches_after_move_30pct_per_trial"]) == 1
    assert result["switches_per_min_5pct_loss"] is not None
    assert result["rtt_ms"] > 0


def test_bench_handshake_prints_one_json_object():
    """A tiny run: every handshake completed (confirmed), with and without
    cookies, and the legitimate client completed under the flood (the rates
    themselves live in docs/benchmarks.md)."""
    cli = Path(sys.executable).with_name("jvpn-xdp")
    out = subprocess.run([str(cli), "bench", "handshake", "--json", "--handshakes", "20",
                          "--tries", "2", "--flood-pps", "500"], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert {"handshakes_per_s", "handshakes_per_s_cookie", "legit_under_flood_ms",
            "flood_pps"} <= set(result)
    assert result["runs"]["plain"]["completed"] == 20
    assert result["runs"]["cookie"]["completed"] == 20
    assert result["handshakes_per_s"] > 0 and result["handshakes_per_s_cookie"] > 0
    assert result["flood_pps"] == 500 and result["flood_pps_sent"] > 0
    assert len(result["legit_per_try_ms"]) == 2 and result["legit_not_completed"] == 0
    assert result["legit_under_flood_ms"]["max"] >= result["legit_under_flood_ms"]["p50"] > 0


def test_bench_scale_prints_one_json_object_and_cleans_up():
    """1,000 synthetic sessions in the lab (the figures live in
    docs/benchmarks.md): every size's fields, the daemon restored them all
    (at start and at the restart), the XDP runs took their verdicts (the
    bench checks them), a client reattached after the restart, and nothing
    of its lab is left (its namespaces and pins are named after its pid:
    jvpn/lab/netns.py)."""
    cli = Path(sys.executable).with_name("jvpn-xdp")
    proc = subprocess.Popen([str(cli), "bench", "scale", "--sizes", "1000", "--handshakes", "20",
                             "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stdout, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 0, stderr
    result = json.loads(stdout)
    assert result["sizes"] == [1000]
    fig = result["by_size"]["1000"]
    assert {"kernel_bytes_per_session", "daemon_bytes_per_session", "reconcile_s",
            "reconcile_cpu_s", "xdp_valid_ns", "xdp_valid_ratio", "xdp_unknown_ns",
            "sessions_json_s"} <= set(fig)
    assert fig["reconcile_cpu_s"] >= 0 and result["restart"]["reconcile_cpu_s"] >= 0
    assert fig["sessions_restored"] == 1000 and fig["xdp_valid_ratio"] == 1.0
    assert fig["kernel_bytes_per_map"]["sessions"]["max_entries"] == fig["capacity"] == 1024
    assert fig["xdp_valid_ns"] > 0 and fig["xdp_unknown_ns"] > 0 and fig["reconcile_s"] >= 0
    quiet = fig["quiet"]  # the same runs once the daemon is quiet, another session's packets
    assert quiet["xdp_valid_ns"] > 0 and quiet["xdp_valid_ratio"] == 1.0
    assert 0 <= quiet["daemon_quiet_wait_s"] <= 61 and quiet["daemon_cpu_during_xdp_s"] >= 0
    restart = result["restart"]
    assert restart["sessions_restored"] == 1000 and restart["stop"] == "SIGTERM"
    assert "client_reattach_error" not in restart and restart["client_reattach_s"] > 0
    assert fig["state_changes"] == 0  # the idle sessions stayed ATTACHED while measured
    assert result["handshakes_per_s"] > 0 and result["handshakes_per_s_cookie"] > 0
    assert result["handshakes"]["runs"]["plain"]["completed"] == 20
    # the listing first thing once serving, before the XDP test runs (issue 15)
    assert fig["state_changes_during_listing"] == 0 and fig["listing_after_serving_s"] >= 0
    assert fig["daemon_pages_s"] >= 0
    ours = f"jl{proc.pid}x"
    namespaces = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert ours not in namespaces
    assert not [p for p in Path("/sys/fs/bpf").iterdir() if p.name.startswith(ours)]


def test_bench_scale_takes_each_larger_sizes_xdp_ratio_beside_the_smallest():
    """Two sizes through the real kernel: the smallest lab stays up while
    the larger one is measured, and the larger size's XDP ratios are the
    pairs' (reference set, size-N set, ... each pair's ratio, their median
    and range); both labs are gone afterwards."""
    cli = Path(sys.executable).with_name("jvpn-xdp")
    proc = subprocess.Popen([str(cli), "bench", "scale", "--sizes", "2000,200", "--handshakes",
                             "0", "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stdout, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 0, stderr
    result = json.loads(stdout)
    assert result["sizes"] == [200, 2000]
    small, big = result["by_size"]["200"], result["by_size"]["2000"]
    assert small["xdp_valid_ratio"] == 1.0 and small["xdp_pairs"] == 0
    for fig in (big, big["quiet"]):
        assert fig["xdp_pairs"] == 9
        for name in ("xdp_valid", "xdp_unknown"):
            ratios = fig[f"{name}_pair_ratios"]
            assert len(ratios) == 9 and all(r > 0 for r in ratios)
            low, high = fig[f"{name}_ratio_range"]
            assert low == min(ratios) <= fig[f"{name}_ratio"] <= high == max(ratios)
            assert fig[f"{name}_ns"] > 0 and fig[f"{name}_ref_ns"] > 0
    assert big["sessions_restored"] == 2000 and result["restart"]["sessions"] == 2000
    ours = f"jl{proc.pid}x"
    namespaces = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert ours not in namespaces
    assert not [p for p in Path("/sys/fs/bpf").iterdir() if p.name.startswith(ours)]
