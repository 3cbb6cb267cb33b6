"""Benchmarks that need the lab (namespaces, real traffic between them only):

- ``tunnel``: TCP goodput (iperf3) between the same two namespaces through
  plain routing, through jvpn, and through wireguard-go, in one run;
- ``reattach``: address change to data flowing again, many trials.
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psutil

from jvpn.bench.rekey import (
    alternate,
    no_rekey_policy,
    rekey_figures,
    rekey_lab,
    rekey_summary,
)
from jvpn.bench.stall_trace import (
    STALL_MS,
    Trial,
    gate_counters,
    pause_in_gap_ms,
    pause_marks,
    stalls,
    write_trace,
)
from jvpn.bench.wire_log import WireLog
from jvpn.lab.addresses import (
    ATTACKER_IP,
    ATTACKER_ROUTER_IF,
    ECHO_PORT,
    FLOOD_PORTS,
    GW_INNER,
    GW_IP,
    PORT,
    ROUTER_GW_IF,
    UPLINK_METRIC,
    UPLINK_ROUTER_IP,
    WG_CL_IP,
    WG_GW_IP,
    WG_NET,
    WG_PORT,
)
from jvpn.lab.running import lab_policy
from jvpn.lab.tunnel import TunnelLab
from jvpn.lab.wait import wait_until


def _iperf(tl: TunnelLab, server_ip: str, seconds: float) -> float:
    server = subprocess.Popen(tl.lab.cmd("gw", "iperf3", "-s", "-1", "-B", server_ip),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    tl.lab.procs.append(server)
    time.sleep(0.3)
    out = tl.lab.run("cl", "iperf3", "-c", server_ip, "-t", str(seconds), "-J",
                     timeout=seconds + 30)
    server.wait(timeout=10)
    data = json.loads(out.stdout)
    return data["end"]["sum_received"]["bits_per_second"] / 1e6


WG_OVERHEAD = 80  # wg-quick's MTU rule: the path's MTU less 80 (an IPv6 outer header's worth)


def _wireguard_go(tl: TunnelLab, tmp: Path, path_mtu: int = 1500) -> None:
    """wireguard-go between the same namespaces, on its own subnet and port,
    with the MTU wg-quick would give it on this path (1420 on 1500)."""
    env = {**os.environ, "WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD": "1"}
    keys = {}
    for role in ("gw", "cl"):
        priv = subprocess.run(["wg", "genkey"], capture_output=True, text=True,
                              check=True).stdout.strip()
        pub = subprocess.run(["wg", "pubkey"], input=priv, capture_output=True, text=True,
                             check=True).stdout.strip()
        (tmp / f"wg-{role}.key").write_text(priv + "\n")
        keys[role] = pub
        # distinct names: the UAPI socket /var/run/wireguard/<name>.sock is not per namespace
        tl.lab.spawn(role, "wireguard-go", "-f", f"wg{role}", env=env,
                     log=tmp / f"wg-{role}.log")
    time.sleep(1.0)
    tl.lab.run("gw", "wg", "set", "wggw", "listen-port", str(WG_PORT), "private-key",
               str(tmp / "wg-gw.key"), "peer", keys["cl"], "allowed-ips", f"{WG_CL_IP}/32")
    tl.lab.run("cl", "wg", "set", "wgcl", "private-key", str(tmp / "wg-cl.key"), "peer",
               keys["gw"], "endpoint", f"{GW_IP}:{WG_PORT}", "allowed-ips", WG_NET)
    for role, ip in (("gw", WG_GW_IP), ("cl", WG_CL_IP)):
        tl.lab.run(role, "ip", "addr", "add", f"{ip}/24", "dev", f"wg{role}")
        tl.lab.run(role, "ip", "link", "set", f"wg{role}", "mtu", str(path_mtu - WG_OVERHEAD),
                   "up")


def run_tunnel_bench(seconds: float = 5.0, rounds: int = 2,
                     progress: Callable[[str], None] = lambda _: None,
                     path_mtu: int | None = None, rekey_interval_ms: int | None = None) -> dict:
    """``path_mtu``: the client's active uplink (and the router's port behind
    it) carries datagrams of at most this size (RoamingLab.narrow_uplink);
    jvpn's client reads it from its route, wireguard-go gets wg-quick's MTU.
    ``rekey_interval_ms``: a second jvpn lab rekeys at that interval, the
    first one never (jvpn/bench/rekey.py); both measured in each round."""
    with tempfile.TemporaryDirectory(prefix="jvpn-bench-") as d:
        tmp = Path(d)
        tl = TunnelLab(tmp, policy=no_rekey_policy() if rekey_interval_ms else "")
        narrow = (lambda: tl.lab.narrow_uplink("wifi", path_mtu)) if path_mtu else None
        tl.up(before_client=narrow)
        rk = None
        try:
            if rekey_interval_ms:
                rk = rekey_lab(tmp, rekey_interval_ms, path_mtu)
            _wireguard_go(tl, tmp, path_mtu or 1500)
            targets = [("veth", tl, GW_IP), ("jvpn", tl, GW_INNER),
                       *([("jvpn_rekey", rk, GW_INNER)] if rk else []),
                       ("wireguard_go", tl, WG_GW_IP)]
            figures: dict[str, list[float]] = {name: [] for name, _t, _ip in targets}
            for r in range(rounds):  # interleaved, so a noisy moment hits all of them
                for name, lab, ip in alternate(targets, r):
                    progress(f"round {r + 1}/{rounds}: {name}")
                    figures[name].append(_iperf(lab, ip, seconds))
            counters = tl.cli_json("stats", "gw0")["gw0"]
            status = tl.cli_json("status")
            rekeyed = rekey_figures(tl, rk, rekey_interval_ms) if rk else {}
        finally:
            if rk is not None:
                rk.down()
            tl.down()
    med = {k: round(statistics.median(v), 1) for k, v in figures.items()}
    return {"jvpn_mbps": med["jvpn"], "wireguard_go_mbps": med["wireguard_go"],
            "veth_mbps": med["veth"],
            "jvpn_over_wireguard_go": round(med["jvpn"] / med["wireguard_go"], 2)
            if med["wireguard_go"] else None,
            **rekey_summary(med, figures, rekeyed),
            "samples_mbps": figures, "seconds_each": seconds, "rounds": rounds,
            "path_mtu": path_mtu or 1500, "wireguard_go_mtu": (path_mtu or 1500) - WG_OVERHEAD,
            "xdp_mode": status[0].get("mode") if status else None,
            "xdp_counters": {k: v["packets"] for k, v in counters.items() if v["packets"]},
            "tool": "iperf3 TCP, client namespace -> gateway namespace, one stream"}


# The prober keeps its echoes in memory and writes them when it stops: a
# write per echo to a disk file could block for ~200 ms (a file system
# journal commit) and the prober, not the tunnel, would then be the stall
# (docs/benchmarks.md "The reattach stall"). Only the first echo is written
# at once (start_prober waits for it). Pauses of its own sending (over
# PROBER_PAUSE_S between two probes) go to LOG.pauses: a timeline shows them.
PROBER_PAUSE_S = 0.02
PROBER = r"""
import array, json, os, socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(0.001)
dst = (sys.argv[1], int(sys.argv[2])); end = time.monotonic() + float(sys.argv[3])
log, pause_s = sys.argv[4], float(sys.argv[5]); stop = log + ".stop"
echoes, pauses = array.array("d"), array.array("d")
seq = 0; last_send = None; out = open(log, "w")
while time.monotonic() < end and not (seq % 64 == 0 and os.path.exists(stop)):
    seq += 1
    now = time.monotonic()
    if last_send is not None and now - last_send > pause_s:
        pauses.extend((last_send, now))
    last_send = now
    try:
        s.sendto(json.dumps([seq, now]).encode(), dst)
    except OSError:  # no route for a moment (a path change): the next one goes
        time.sleep(0.001)
    try:
        while True:
            b = s.recv(100)
            n, sent = json.loads(b)
            echoes.extend((n, sent, time.monotonic()))
            if len(echoes) == 3:
                out.write(f"{n} {sent} {echoes[2]}\n"); out.flush()
    except (socket.timeout, BlockingIOError):
        pass
out.write("".join(f"{echoes[i]:.0f} {echoes[i + 1]!r} {echoes[i + 2]!r}\n"
                  for i in range(3, len(echoes), 3)))
out.close()
with open(log + ".pauses", "w") as p:
    p.write("".join(f"{pauses[i]!r} {pauses[i + 1]!r}\n" for i in range(0, len(pauses), 2)))
"""
ECHO = r"""
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind((sys.argv[1], int(sys.argv[2])))
while True:
    b, a = s.recvfrom(100); s.sendto(b, a)
"""


BENCH_POLICY = lab_policy(max_switches_per_min=600)


def start_prober(lab, role: str, dst: str, bound_s: float, log: Path,
                 ready_s: float = 30.0) -> subprocess.Popen:
    """PROBER in ``role``, returned once its first echo came back (the
    tunnel carries traffic): under load the session can take longer than
    any fixed sleep, and a trial before it measures nothing."""
    prober = lab.spawn(role, sys.executable, "-c", PROBER, dst, str(ECHO_PORT), str(bound_s),
                       str(log), str(PROBER_PAUSE_S))
    wait_until(lambda: log.exists() and log.stat().st_size > 0, "the first echo", ready_s)
    return prober


def stop_prober(prober: subprocess.Popen, log: Path, timeout_s: float = 10.0) -> None:
    """Stop PROBER and wait until it has closed its log (every echo written)."""
    Path(str(log) + ".stop").touch()
    try:
        prober.wait(timeout_s)
    except subprocess.TimeoutExpired:
        prober.kill()


def read_probes(log: Path) -> list[tuple[float, float, float]]:
    """PROBER's log: (sequence, sent, came back) per echo, in sequence order."""
    return sorted(tuple(map(float, line.split())) for line in log.read_text().splitlines()
                  if line.count(" ") == 2)


def read_pauses(log: Path) -> list[tuple[float, float]]:
    """PROBER's own pauses: (last probe before, next probe) when it sent
    nothing for more than PROBER_PAUSE_S (it was not scheduled, or blocked)."""
    path = Path(str(log) + ".pauses")
    if not path.exists():
        return []
    return [tuple(map(float, line.split())) for line in path.read_text().splitlines()
            if line.count(" ") == 1]


def prober_pause_figures(trials: list[Trial], pauses: list[tuple[float, float]]) -> dict:
    """The prober's own pauses over the run, and the trials they lengthened
    (a gap the prober made, not the tunnel: docs/benchmarks.md)."""
    hit = [t.index for t in trials if t.extra.get("prober_pause_ms", 0) > 0]
    longest = max((b - a for a, b in pauses), default=0.0)
    return {"prober_pauses": len(pauses), "prober_pause_max_ms": round(longest * 1000, 1),
            "trials_with_prober_pause": hit}


def gaps_after(samples: list[tuple[float, float, float]], moves: list[float]) -> list:
    """Per move: ms from the move to the first probe sent after it that came
    back (None: none came back before the next move)."""
    out = []
    for i, t0 in enumerate(moves):
        t1 = moves[i + 1] if i + 1 < len(moves) else float("inf")
        after = [got for _n, sent, got in samples if t0 <= sent < t1]
        out.append(round((min(after) - t0) * 1000, 2) if after else None)
    return out


def percentiles(values: list, qs: tuple[float, ...] = (0.5, 0.99)) -> tuple:
    """Nearest-rank percentiles of the values that are not None (median for 0.5)."""
    got = sorted(v for v in values if v is not None)
    if not got:
        return tuple(None for _ in qs)
    return tuple(round(statistics.median(got), 2) if q == 0.5 else
                 round(got[min(len(got) - 1, int(len(got) * q))], 2) for q in qs)


def gate_reader(env: dict, ifname: str = "gw0"):
    """A function reading the counters of the gate ``env``'s gateway
    attached (its pin root and run dir), in this process; None without a
    gate (the userspace-gated lab) or bcc."""
    try:
        from jvpn.gate.paths import GatePaths  # noqa: PLC0415 - bcc only when a lab runs
        from jvpn.gate.pins import GateMaps  # noqa: PLC0415
        from jvpn.gate.records import Attachment  # noqa: PLC0415

        paths = GatePaths(env["JVPN_PIN_ROOT"], env["JVPN_RUN_DIR"])
        att = Attachment.load(ifname, paths)
        maps = GateMaps(Path(att.pin_dir), att.replay_bits)
    except Exception:  # noqa: BLE001 - the counters are a diagnostic only
        return None
    return maps.read_counters


def _move(tl: TunnelLab, i: int) -> str:
    """Trial ``i``'s uplink change, done when this returns; what it was."""
    if i % 2 == 0:  # wifi -> lte: the uplink disappears
        tl.lab.link("cl", "wifi", "down")
        return "wifi down"
    # lte -> wifi: wifi comes back and is preferred again
    tl.lab.link("cl", "wifi", "up")
    time.sleep(0.3)
    tl.lab.run("cl", "ip", "route", "replace", "default", "via",
               UPLINK_ROUTER_IP["wifi"], "dev", "wifi", "metric",
               str(UPLINK_METRIC["wifi"]))
    return "wifi back"


def _reattach_trials(tl: TunnelLab, trials: int, progress, read_counters) -> list[Trial]:
    out = []
    for i in range(trials):
        progress(f"trial {i + 1}/{trials}")
        before = gate_counters(read_counters)
        # t0 is taken once the change is done: probes sent before it may
        # still have left on the old path and would look like no gap at all
        trial = Trial(i, "", time.monotonic(), counters_before=before)
        trial.kind = _move(tl, i)
        trial.done()
        time.sleep(1.2)
        trial.counters_after = gate_counters(read_counters)
        out.append(trial)
    return out


def run_reattach_bench(trials: int = 20, progress: Callable[[str], None] = lambda _: None,
                       trace: Path | None = None) -> dict:
    """Each trial takes the client's active uplink down (wifi <-> lte) and
    measures from that instant to the first echo that went out after it and
    came back through the tunnel. Each trial slower than STALL_MS gets its
    timeline in ``stalls`` (jvpn/bench/stall_trace.py); ``trace``: a
    directory for every trial's timeline and the raw logs."""
    with tempfile.TemporaryDirectory(prefix="jvpn-bench-") as d:
        tmp = Path(d)
        # The lab's default policy allows 30 switches a minute: more trials than
        # that would (rightly) be stopped as a switch storm. Raise the bound.
        tl = TunnelLab(tmp, policy=BENCH_POLICY).up()
        try:
            tl.lab.spawn("gw", sys.executable, "-c", ECHO, GW_INNER, str(ECHO_PORT))
            duration = 30 + trials * 5  # a bound only: stopped by a file after the trials
            log = tmp / "probe.txt"
            prober = start_prober(tl.lab, "cl", GW_INNER, duration, log)
            # --trace: the reattach messages on the router's gateway-side port too
            wire = WireLog(tl.lab.ns("rt"), ROUTER_GW_IF) if trace is not None else None
            time.sleep(0.5)  # a few round trips before the first change: the RTT baseline
            done = _reattach_trials(tl, trials, progress, gate_reader(tl.env))
            time.sleep(1.0)
            stop_prober(prober, log, timeout_s=30)
            marks = [(t, "wire", what) for t, what in wire.stop()] if wire else []
            samples, pauses = read_probes(log), read_pauses(log)
            marks += pause_marks(pauses)
            sources = {"client": tl.client_event_list(), "gateway": tl.gateway_events()}
            per_trial = gaps_after(samples, [t.t0 for t in done])
            for t, gap in zip(done, per_trial, strict=True):
                t.gap_ms = gap
                t.extra["prober_pause_ms"] = pause_in_gap_ms(t, pauses)
            if trace is not None:
                write_trace(trace, done, samples, sources,
                            {"probe.txt": log, "client-events.jsonl": tl.client_events,
                             "gateway-events.jsonl": tl.events_file,
                             "client.log": tmp / "client.log", "gateway.log": tmp / "gateway.log"},
                            marks)
        finally:
            tl.down()
    rtts = [got - sent for _n, sent, got in samples if sent < done[0].started]
    gaps = sorted(g for g in per_trial if g is not None)
    rtt_ms = statistics.median(rtts) * 1000 if rtts else None
    p50, p99 = percentiles(per_trial)
    slow = stalls(done, samples, sources, marks)
    return {"p50_ms": p50, "p99_ms": p99,
            "rtt_ms": round(rtt_ms, 3) if rtt_ms else None, "trials": len(gaps),
            "trials_without_recovery": len(done) - len(gaps),
            "per_trial_ms": per_trial,
            "max_ms": round(max(gaps), 2) if gaps else None,
            "stall_threshold_ms": STALL_MS, "stall_count": len(slow),
            **prober_pause_figures(done, pauses), "stalls": slow,
            "policy": "max_switches_per_min 600, switch_cooldown_ms 0",
            "method": "UDP echo every ~1 ms through the tunnel; t0 = the uplink change done "
                      "(link down, or the better route back); time to the first echo sent "
                      "after t0 that came back"}


# ---------------------------------------------------------------- flood

def _bytes(b: bytes) -> str:
    return ", ".join(f"0x{x:02x}" for x in b)


def _trafgen_config(dst_mac: bytes, src_mac: bytes, sid: int, keys, binding: str) -> str:
    """Four forged kinds, cycled: unknown sessions, bad tags for the victim's
    session, a replayed data message from the victim's own source, and
    authentic-looking data from a spoofed (unbound) transport."""
    import struct as _s

    from jvpn import wire
    from jvpn.gate import abi

    mac = lambda m: ":".join(f"{x:02x}" for x in m)  # noqa: E731
    eth = f"eth(da={mac(dst_mac)}, sa={mac(src_mac)}, type=0x0800)"
    b_ip, b_port = binding.rsplit(":", 1)

    def block(saddr: str, sport: int, body: str) -> str:
        return (f"{{ {eth}, ipv4(saddr={saddr}, daddr={GW_IP}, ttl=64), "
                f"udp(sport={sport}, dport={PORT}), {body} }}\n")

    pad = "fill(0x00, 64)"
    hdr = _bytes(_s.pack("<BBHI", abi.MSG_DATA, 1, 0, 0))
    unknown, bad_tag, binding_port = FLOOD_PORTS
    out = block(ATTACKER_IP, unknown, f"{hdr}, drnd(8), drnd(16), {pad}")              # unknown
    out += block(ATTACKER_IP, bad_tag, f"{hdr}, {_bytes(_s.pack('<Q', sid))}, drnd(16), {pad}")
    replay = wire.message(wire.Header(type=abi.MSG_DATA, session_id=sid, counter=1),
                          keys.hdr_c2s, bytes(64))
    out += block(b_ip, int(b_port), _bytes(replay))                               # replay
    spoof = wire.message(wire.Header(type=abi.MSG_DATA, session_id=sid, counter=2**40),
                         keys.hdr_c2s, bytes(64))
    out += block(ATTACKER_IP, binding_port, _bytes(spoof))                            # binding
    return out


IPERF_CONNECT_S = 5.0  # a flooded gateway that cannot take a connection in this long has collapsed
IPERF_SLACK_S = 15.0  # past connect + run: iperf3's result exchange on a struggling path
SERVER_STOP_S = 5.0


def _cpu_seconds(pid: int) -> float | None:
    """The process's CPU seconds so far; None if it is gone (a daemon that died)."""
    try:
        times = psutil.Process(pid).cpu_times()
    except psutil.Error:
        return None
    return times.user + times.system


def collapsed(why: str) -> dict:
    """A run whose goodput could not be measured: a figure (0), and why."""
    return {"mbps": 0.0, "why": why}


def iperf_figure(run: Callable[[list[str], float], subprocess.CompletedProcess],
                 server_ip: str, seconds: float, connect_s: float = IPERF_CONNECT_S) -> dict:
    """iperf3's client through ``run(args, timeout)``: {"mbps", "why"}, why
    None for a measured run. A collapse (no connection, an error, no end in
    time) is a figure of 0 with its reason, never an exception: it is the
    result the flood bench exists to show."""
    args = ["iperf3", "-c", server_ip, "-t", str(seconds), "-J",
            "--connect-timeout", str(int(connect_s * 1000))]
    bound = connect_s + seconds + IPERF_SLACK_S
    try:
        out = run(args, bound)
    except subprocess.TimeoutExpired:
        return collapsed(f"iperf3 did not finish within {bound:.0f} s")
    return parse_iperf(out.returncode, out.stdout, out.stderr, connect_s)


def parse_iperf(returncode: int, stdout: str, stderr: str, connect_s: float) -> dict:
    try:
        data = json.loads(stdout)
    except ValueError:
        data = {}
    error = data.get("error") if isinstance(data, dict) else None
    if error or returncode != 0:
        line = _first_line(error or stderr or stdout) or "no output"
        if "unable to connect" in line:
            return collapsed(f"iperf3 could not connect within {connect_s:g} s ({line})")
        return collapsed(f"iperf3 exited {returncode}: {line}")
    try:
        bps = data["end"]["sum_received"]["bits_per_second"]
    except (KeyError, TypeError):
        return collapsed("iperf3 printed no received total")
    return {"mbps": round(bps / 1e6, 1), "why": None if bps else "no bytes received"}


def _first_line(text: str) -> str:
    lines = [s.strip() for s in (text or "").splitlines() if s.strip()]
    return lines[0][:200] if lines else ""


def _iperf_in_lab(tl: TunnelLab, server_ip: str, seconds: float) -> dict:
    """One iperf3 run client namespace -> gateway namespace, every wait bounded."""
    server = tl.lab.spawn("gw", "iperf3", "-s", "-1", "-B", server_ip)
    try:
        time.sleep(0.3)
        return iperf_figure(lambda args, bound: tl.lab.run("cl", *args, check=False,
                                                           timeout=bound),
                            server_ip, seconds)
    finally:
        _stop(server, signal.SIGTERM)  # a server no client reached would wait forever


def _stop(proc: subprocess.Popen, sig: int) -> None:
    """``sig``, then SIGKILL if it has not exited within SERVER_STOP_S."""
    if proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(timeout=SERVER_STOP_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=SERVER_STOP_S)


def _tx_packets(tl: TunnelLab) -> int | None:
    """Packets the attacker's interface sent (what trafgen put on the wire)."""
    try:
        out = tl.lab.run("atk", "ip", "-j", "-s", "link", "show", "atk0", timeout=10).stdout
        return json.loads(out)[0]["stats64"]["tx"]["packets"]
    except (subprocess.SubprocessError, ValueError, LookupError):
        return None


@dataclass(frozen=True)
class Sample:
    """Counters at one instant of a run (None: could not be read)."""

    at: float
    flood_tx: int | None
    daemon_cpu_s: float | None


def sample(tl: TunnelLab) -> Sample:
    return Sample(time.monotonic(), _tx_packets(tl), _cpu_seconds(tl.gateway.pid))


def run_figures(goodput: dict, before: Sample, after: Sample, flood: bool) -> dict:
    """One run's figures: goodput (0 and why for a collapse), the flood rate
    reached (packets/s the attacker's interface sent over the run) and the
    daemon's CPU (seconds, and percent of one core over the run)."""
    elapsed = max(after.at - before.at, 1e-9)
    out = {"mbps": goodput["mbps"], "why": goodput["why"], "seconds": round(elapsed, 2),
           "flood_pps": None, "daemon_cpu_s": None, "daemon_cpu_pct": None}
    if flood and before.flood_tx is not None and after.flood_tx is not None:
        out["flood_pps"] = round((after.flood_tx - before.flood_tx) / elapsed)
    elif not flood:
        out["flood_pps"] = 0
    if before.daemon_cpu_s is not None and after.daemon_cpu_s is not None:
        cpu = after.daemon_cpu_s - before.daemon_cpu_s
        out["daemon_cpu_s"] = round(cpu, 2)
        out["daemon_cpu_pct"] = round(100 * cpu / elapsed, 1)
    elif after.daemon_cpu_s is None:
        out["daemon_cpu_why"] = "the gateway daemon had exited"
    return out


def _start_trafgen(tl: TunnelLab, tmp: Path) -> subprocess.Popen:
    sid, keys, s = tl.victim()
    cfg = tmp / "flood.trafgen"
    macs = tl.lab.mac("rt", ATTACKER_ROUTER_IF), tl.lab.mac("atk", "atk0")
    cfg.write_text(_trafgen_config(*macs, sid, keys, s["bound"]))
    return tl.lab.spawn("atk", "trafgen", "--dev", "atk0", "--conf", str(cfg), "--cpus", "1",
                        log=tmp / "trafgen.log")


def _flood_run(tl: TunnelLab, tmp: Path, seconds: float, flood: bool) -> dict:
    trafgen = _start_trafgen(tl, tmp) if flood else None
    try:
        if trafgen is not None:
            time.sleep(1.0)
        before = sample(tl)
        goodput = _iperf_in_lab(tl, GW_INNER, seconds)
        after = sample(tl)
        died = trafgen is not None and trafgen.poll() is not None  # before we stopped it
    finally:
        if trafgen is not None:
            _stop(trafgen, signal.SIGINT)  # trafgen stops cleanly on SIGINT only
    figures = run_figures(goodput, before, after, flood)
    if died:  # its last line says why (its first ones are warnings)
        lines = (tmp / "trafgen.log").read_text(errors="replace").strip().splitlines()
        figures["trafgen_why"] = f"trafgen exited {trafgen.returncode}: " + (
            lines[-1].strip()[:200] if lines else "no output")
    return figures


def _xdp_drops(tl: TunnelLab, before: dict | None) -> dict | None:
    """Drop counters the XDP gate added since ``before`` (None: unreadable)."""
    try:
        after = tl.cli_json("stats", "gw0")["gw0"]
    except (AssertionError, subprocess.SubprocessError, ValueError, KeyError):
        return None
    if before is None:
        return after
    return {k: after[k]["packets"] - before[k]["packets"] for k in after
            if k.startswith("drop_") and after[k]["packets"] != before.get(k, {}).get("packets")}


def _flood_mode(mode: str, seconds: float, progress: Callable[[str], None]) -> dict:
    """The runs of one lab: with the XDP gate, no flood then flood; without, flood."""
    runs: dict = {}
    with tempfile.TemporaryDirectory(prefix="jvpn-bench-") as d:
        tmp = Path(d)
        tl = TunnelLab(tmp, xdp=(mode == "xdp")).up()
        try:
            if mode == "xdp":
                progress("no flood")
                runs["none"] = _flood_run(tl, tmp, seconds, flood=False)
                before = _xdp_drops(tl, None)
            progress(f"flood, {mode} gate")
            runs[mode] = _flood_run(tl, tmp, seconds, flood=True)
            if mode == "xdp":
                runs["xdp_drops"] = _xdp_drops(tl, before) if before is not None else None
        finally:
            tl.down()
    return runs


def run_flood_bench(seconds: float = 5.0, progress: Callable[[str], None] = lambda _: None,
                    ) -> dict:
    """Legit goodput with no flood, then under a forged-packet flood (trafgen
    in the attacker's namespace, routed to the gateway like Internet traffic),
    with the XDP gate and with the same checks in the daemon (no XDP)."""
    runs = {}
    for mode in ("xdp", "userspace"):
        runs.update(_flood_mode(mode, seconds, progress))
    return flood_summary(runs, seconds)


def _ratio(a: float, b: float) -> float | None:
    return round(a / b, 2) if b else None


def flood_summary(runs: dict, seconds: float) -> dict:
    """The bench's JSON from its three runs (none, xdp, userspace): every
    figure present, a collapsed run's goodput 0 with its reason in ``why``."""
    x, u, n = runs["xdp"], runs["userspace"], runs["none"]
    return {"flood_pps": x["flood_pps"], "flood_pps_userspace_run": u["flood_pps"],
            "goodput_no_flood_mbps": n["mbps"], "goodput_flood_xdp_mbps": x["mbps"],
            "goodput_flood_userspace_mbps": u["mbps"],
            "why": {name: r["why"] for name, r in (("none", n), ("xdp", x), ("userspace", u))
                    if r["why"]},
            "daemon_cpu_xdp": x["daemon_cpu_pct"], "daemon_cpu_userspace": u["daemon_cpu_pct"],
            "daemon_cpu_no_flood": n["daemon_cpu_pct"],
            "runs": {"none": n, "xdp": x, "userspace": u},
            "xdp_drops": runs.get("xdp_drops"),
            "xdp_over_no_flood": _ratio(x["mbps"], n["mbps"]),
            "xdp_over_userspace": _ratio(x["mbps"], u["mbps"]),
            "seconds_each": seconds,
            "notes": "flood_pps: forged packets/s the attacker's interface sent during the "
                     "goodput run (trafgen, one core); daemon_cpu_*: the gateway daemon's CPU "
                     "in percent of one core over that run (runs.*.daemon_cpu_s: seconds); "
                     "goodput 0 with a why: the run collapsed (iperf3 could not connect or "
                     "finish)"}
