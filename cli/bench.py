"""`jvpn-xdp bench ...`: benchmarks. They print figures; they assert nothing.
Record what they print, with the command, in docs/benchmarks.md."""

from __future__ import annotations

import json
from pathlib import Path

import click


@click.group(help="Benchmarks (not tests): measure and print, side by side in one run.")
def bench():
    pass


@bench.command("xdp", help="ns per packet for each XDP verdict path next to an empty XDP "
                           "program, through BPF_PROG_TEST_RUN (no traffic).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--repeat", default=200_000, show_default=True, type=click.IntRange(1),
              help="Kernel repetitions per batch for repeatable paths.")
@click.option("--batches", default=5, show_default=True, type=click.IntRange(1),
              help="Batches per path; the median is reported.")
@click.option("--singles", default=20_000, show_default=True, type=click.IntRange(10),
              help="Distinct frames for the non-repeatable data_valid path.")
@click.option("--breakdown", is_flag=True,
              help="Also time each primitive (hash lookup, spin lock, SipHash, clock) alone.")
@click.pass_obj
def bench_xdp(app, as_json: bool, repeat: int, batches: int, singles: int, breakdown: bool):
    from jvpn.bench.xdp import run_cost_breakdown, run_xdp_bench  # needs bcc: keep --help cheap
    from jvpn.gate.attach import require_root
    from jvpn.gate.loader import require_bcc

    require_root()
    require_bcc()
    console = getattr(app, "console", None)
    if as_json or console is None:
        result = run_xdp_bench(repeat, batches, singles)
        if breakdown:
            result["components_ns"] = run_cost_breakdown(repeat, batches)
        click.echo(json.dumps(result, indent=None if as_json else 2))
        return
    with console.status("measuring") as status:
        result = run_xdp_bench(repeat, batches, singles,
                               progress=lambda p: status.update(f"measuring {p}"))
    from rich.table import Table

    table = Table(title=f"XDP verdict paths (baseline {result['baseline_ns']} ns, "
                        f"empty XDP program)")
    table.add_column("path")
    table.add_column("ns/packet", justify="right")
    table.add_column("x baseline", justify="right")
    for name, ns in result["paths"].items():
        table.add_row(name, f"{ns:.1f}", f"{result['ratios'][name]:.2f}")
    console.print(table)
    rk = result["rekey"]
    for prefix in ("data_valid", "drop_replay"):
        console.print(f"{prefix} during a rekey's overlap (both phases accepted) against the "
                      f"single-key element: current phase "
                      f"x{rk[f'{prefix}_overlap_current_vs_single_key']}, previous phase "
                      f"x{rk[f'{prefix}_overlap_previous_vs_single_key']}")
    console.print(f"[dim]{result['method']}[/dim]")
    if breakdown:
        parts = run_cost_breakdown(repeat, batches)
        base = parts["empty_program"]
        table = Table(title="primitives alone (ns above the empty program)")
        table.add_column("primitive")
        table.add_column("ns", justify="right")
        for name, ns in parts.items():
            table.add_row(name, f"{ns - base:.1f}" if name != "empty_program" else f"{ns:.1f}")
        console.print(table)


@bench.command("tunnel", help="TCP goodput (iperf3) between two lab namespaces: plain routing, "
                              "through jvpn (XDP gate on) and through wireguard-go, interleaved "
                              "in one run.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--seconds", default=5.0, show_default=True, type=click.FloatRange(1, 60))
@click.option("--rounds", default=2, show_default=True, type=click.IntRange(1, 10))
@click.option("--path-mtu", type=click.IntRange(1280, 9000), default=None,
              help="The client's uplink carries datagrams of at most this many bytes "
                   "(default: the lab's 1500): jvpn sizes to it from the route, "
                   "wireguard-go gets wg-quick's MTU (this less 80).")
@click.option("--rekey-interval-ms", type=click.IntRange(100, 7 * 24 * 3600 * 1000),
              default=None,
              help="Also measure jvpn rekeying at this interval (a second lab whose policy "
                   "sets keys.rekey_after_ms) against jvpn never rekeying, interleaved in "
                   "the same run: rekey_over_none.")
@click.pass_obj
def bench_tunnel(app, as_json: bool, seconds: float, rounds: int, path_mtu: int | None,
                 rekey_interval_ms: int | None):
    from jvpn.bench.net import run_tunnel_bench
    from jvpn.gate.attach import require_root
    from jvpn.gate.loader import require_bcc

    require_root()
    require_bcc()
    _need("iperf3", "wireguard-go", "wg")
    _report(app, as_json,
            lambda progress: run_tunnel_bench(seconds, rounds, progress, path_mtu=path_mtu,
                                              rekey_interval_ms=rekey_interval_ms))


@bench.command("reattach", help="Address change (the client's uplink goes down, or a better one "
                                "returns) to data flowing again through the tunnel, many trials.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--trials", default=30, show_default=True, type=click.IntRange(2, 500))
@click.option("--trace", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Write every trial's timeline (probe echoes, the prober's own pauses, "
                   "client and gateway events, XDP counters and the reattach messages on the "
                   "wire, in one clock) to DIR/trials.jsonl, the stalled ones (over 50 ms) as "
                   "text to DIR/stalls.txt, and the raw logs. The JSON always lists the stalled "
                   "trials' timelines (without the wire) under \"stalls\".")
@click.pass_obj
def bench_reattach(app, as_json: bool, trials: int, trace: Path | None):
    from jvpn.bench.net import run_reattach_bench
    from jvpn.gate.attach import require_root
    from jvpn.gate.loader import require_bcc

    require_root()
    require_bcc()
    _report(app, as_json, lambda progress: run_reattach_bench(trials, progress, trace))


@bench.command("failover", help="The client's active uplink fails while a 1 ms UDP echo runs "
                                "through the tunnel, default policy, many trials: silently (an "
                                "nftables drop in the router namespace, no link or route event), "
                                "by its link going down, or by 30% random loss; ms to data "
                                "flowing again on the other uplink and echoes lost per failover; "
                                "echoes lost by a planned move (a better uplink appears); "
                                "switches per minute under 5% loss (issue 14).")
@click.option("--json", "as_json", is_flag=True,
              help='Print one JSON object: {"blackhole_p50_ms", "blackhole_p99_ms", '
                   '"linkdown_p50_ms", "linkdown_p99_ms", "lost_packets_planned_move", '
                   '"switches_per_min_5pct_loss", "trials", ...}.')
@click.option("--trials", default=20, show_default=True, type=click.IntRange(1, 500),
              help="Trials of each of blackhole, link down and planned move.")
@click.option("--lossy-trials", default=3, show_default=True, type=click.IntRange(0, 50),
              help="Trials with 30% loss on the active uplink.")
@click.option("--watch-seconds", default=20.0, show_default=True,
              type=click.FloatRange(1, 600),
              help="After a move off the 30%-loss uplink, switches are counted this long "
                   "(flapping).")
@click.option("--loss-seconds", default=60.0, show_default=True,
              type=click.FloatRange(1, 3600),
              help="How long 5% loss is kept on the active uplink (switches per minute).")
@click.pass_obj
def bench_failover(app, as_json: bool, trials: int, lossy_trials: int, watch_seconds: float,
                   loss_seconds: float):
    from jvpn.bench.failover import run_failover_bench
    from jvpn.gate.attach import require_root
    from jvpn.gate.loader import require_bcc

    require_root()
    require_bcc()
    _need("nft")
    _report(app, as_json, _one_line_errors(
        "bench failover", lambda progress: run_failover_bench(
            trials, lossy_trials, watch_seconds, loss_seconds, progress)))


@bench.command("handoff", help="A client moving between two gateways of a cluster (etcd, XDP "
                               "on both): ms from the move to data flowing again, and packets "
                               "of the session accepted by both gateways while its traffic is "
                               "mirrored to the old owner (goal: 0); then the same moves "
                               "with both uplinks on one gateway of the same cluster (the "
                               "baseline). With --compare, also the single-gateway (SQLite) "
                               "reattach, in the same run.")
@click.option("--json", "as_json", is_flag=True,
              help='Print one JSON object: {"p50_ms", "p99_ms", "trials", '
                   '"dual_active_packets", ...}.')
@click.option("--trials", default=30, show_default=True, type=click.IntRange(2, 500))
@click.option("--compare/--no-compare", default=True, show_default=True,
              help="Also run `bench reattach` (one gateway) with as many trials.")
@click.option("--trace", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Every move's timeline, the stalled ones as text and the raw logs, as "
                   "`bench reattach --trace` writes them: in DIR/handoff (and DIR/reattach "
                   "with --compare). The JSON always lists the stalled moves' timelines.")
@click.pass_obj
def bench_handoff(app, as_json: bool, trials: int, compare: bool, trace: Path | None):
    from jvpn.bench.handoff import run_handoff_bench
    from jvpn.bench.net import run_reattach_bench
    from jvpn.gate.attach import require_root
    from jvpn.gate.loader import require_bcc

    require_root()
    require_bcc()
    _need("etcd")

    def run(progress):
        result = run_handoff_bench(trials, progress, trace and trace / "handoff")
        if compare:
            single = run_reattach_bench(trials, progress, trace and trace / "reattach")
            result["reattach_p99_ms"] = single["p99_ms"]
            result["reattach_p50_ms"] = single["p50_ms"]
            if single["p99_ms"] and result["p99_ms"]:
                result["p99_vs_reattach"] = round(result["p99_ms"] / single["p99_ms"], 2)
        return result

    _report(app, as_json, run)


@bench.command("flood", help="Legit TCP goodput through the tunnel with no flood, then while "
                             "the attacker floods forged packets (trafgen), once with the XDP "
                             "gate and once with the same checks in the daemon (no XDP). Each "
                             "run reports the flood rate reached and the daemon's CPU; a run "
                             "that collapses (iperf3 cannot connect or finish) is goodput 0 "
                             "with the reason.")
@click.option("--json", "as_json", is_flag=True,
              help='Print one JSON object: {"goodput_no_flood_mbps", '
                   '"goodput_flood_xdp_mbps", "goodput_flood_userspace_mbps", "why", '
                   '"flood_pps", "runs", ...}.')
@click.option("--seconds", default=5.0, show_default=True, type=click.FloatRange(1, 60))
@click.pass_obj
def bench_flood(app, as_json: bool, seconds: float):
    from jvpn.bench.net import run_flood_bench
    from jvpn.gate.attach import require_root
    from jvpn.gate.loader import require_bcc

    require_root()
    require_bcc()
    _need("iperf3", "trafgen")
    _report(app, as_json, _lab_errors("bench flood", _one_line_errors(
        "bench flood", lambda progress: run_flood_bench(seconds, progress))))


@bench.command("handshake", help="Handshakes per second one gateway daemon core completes "
                                 "(in-process daemon: admission, Noise, the SQLite store, "
                                 "events; pinned to one core), with cookies off and forced "
                                 "on; then a legitimate client's handshake time while spoofed "
                                 "initiations arrive at the gate's admitted rate.")
@click.option("--json", "as_json", is_flag=True,
              help='Print one JSON object: {"handshakes_per_s", "handshakes_per_s_cookie", '
                   '"legit_under_flood_ms": {"p50", "max"}, "flood_pps", ...}.')
@click.option("--handshakes", default=2000, show_default=True, type=click.IntRange(1, 100_000),
              help="Handshakes in each throughput run (one configured peer each).")
@click.option("--tries", default=10, show_default=True, type=click.IntRange(1, 1000),
              help="Legitimate handshakes under the flood, one after another.")
@click.option("--flood-pps", type=click.FloatRange(1, 1_000_000), default=None,
              help="Spoofed initiations per second (default: the gate's global initiation "
                   "rate, GateConfig.global_control_pps).")
@click.pass_obj
def bench_handshake(app, as_json: bool, handshakes: int, tries: int, flood_pps: float | None):
    from jvpn.bench.handshake import run_handshake_bench

    _report(app, as_json, _lab_errors("bench handshake", lambda progress: run_handshake_bench(
        handshakes, tries, progress, flood_pps=flood_pps)))


def _need(*tools: str) -> None:
    import shutil

    from jvpn.errors import JvpnError

    missing = [t for t in tools if not shutil.which(t)]
    if missing:
        raise JvpnError(f"missing {', '.join(missing)}: run `sudo make setup`")


def _one_line_errors(what: str, run):
    """``run``, with a lab that fails (a wait that timed out, a command the
    namespace refused) reported as one line, not a traceback."""
    import subprocess

    from jvpn.errors import JvpnError
    from jvpn.lab.wait import WaitTimeout

    def wrapped(progress):
        try:
            return run(progress)
        except WaitTimeout as e:
            raise JvpnError(f"{what}: {str(e).splitlines()[0]}") from None
        except subprocess.CalledProcessError as e:
            why = (e.stderr or "").strip().splitlines()[-1:] or [f"exit {e.returncode}"]
            raise JvpnError(f"{what}: `{' '.join(map(str, e.cmd))}` failed: {why[0]}") from None
        except subprocess.TimeoutExpired as e:
            raise JvpnError(f"{what}: `{' '.join(map(str, e.cmd))}` timed out") from None
    return wrapped


def _lab_errors(what: str, run):
    """``run``, with a lab's own checks that failed (an assertion in its set-up)
    or a system call it made reported as one line, not a traceback."""
    from jvpn.errors import JvpnError

    def wrapped(progress):
        try:
            return run(progress)
        except (AssertionError, OSError) as e:
            line = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise JvpnError(f"{what}: {line}") from None
    return wrapped


def _report(app, as_json: bool, run) -> None:
    if as_json:
        click.echo(json.dumps(run(lambda _p: None)))
        return
    with app.console.status("measuring") as status:
        result = run(lambda p: status.update(f"measuring: {p}"))
    for k, v in result.items():
        app.console.print(f"{k}: {v}", markup=False)


@bench.command("scale", help="The gateway at N sessions, for each N (issue 15): synthetic "
                             "sessions of its own in a fresh SQLite store, the gate attached "
                             "with room for them in a lab namespace, the daemon started on "
                             "them: kernel and daemon bytes per session, the reconcile's "
                             "seconds, XDP ns per packet (a session's DATA, an unknown "
                             "session) and their ratios to the smallest N measured side by "
                             "side (the smallest N's lab kept up, its test runs and N's "
                             "alternated: the median of 9 pairs' ratios), `sessions --json` "
                             "timed; at the largest N, a restart timed.")
@click.option("--json", "as_json", is_flag=True,
              help='Print one JSON object: {"sizes", "by_size": {"N": '
                   '{"kernel_bytes_per_session", "daemon_bytes_per_session", "reconcile_s", '
                   '"xdp_valid_ns", "xdp_valid_ratio", "xdp_valid_ratio_range", '
                   '"xdp_valid_ref_ns", "xdp_unknown_ns", "xdp_unknown_ratio", '
                   '"sessions_json_s", ...}}, "restart": {...}, "handshakes_per_s", '
                   '"handshakes_per_s_cookie", "handshakes": {...}}.')
@click.option("--sizes", default="1000,100000,1000000", show_default=True,
              help="Session counts, comma-separated (each a lab of its own, smallest first).")
@click.option("--handshakes", default=2000, show_default=True, type=click.IntRange(0, 100_000),
              help="Then `bench handshake` with this many handshakes per run (0: none): "
                   '"handshakes_per_s" and the rest of its figures join the JSON.')
@click.pass_obj
def bench_scale(app, as_json: bool, sizes: str, handshakes: int):
    from jvpn.bench.scale import run_scale_bench
    from jvpn.bench.scale_handshakes import with_handshakes
    from jvpn.bench.scale_store import MAX_SESSIONS
    from jvpn.gate.attach import require_root
    from jvpn.gate.loader import require_bcc

    counts = _sizes(sizes, MAX_SESSIONS)
    require_root()
    require_bcc()
    _need("bpftool")
    run = _lab_errors("bench scale", _one_line_errors("bench scale", with_handshakes(
        lambda progress: run_scale_bench(counts, progress), handshakes)))
    if as_json:
        from jvpn_cli.progress import progress as status

        with status(app.err, "bench scale") as step:
            click.echo(json.dumps(run(step)))
        return
    _report(app, as_json, run)


def _sizes(text: str, most: int) -> list[int]:
    try:
        counts = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise click.BadParameter(f"{text!r}: comma-separated session counts") from None
    if not counts or any(not 1 <= c <= most for c in counts):
        raise click.BadParameter(f"{text!r}: each count between 1 and {most}")
    return counts
