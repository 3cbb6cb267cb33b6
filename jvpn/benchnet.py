"""Benchmarks that need the lab (namespaces, real traffic between them only):

- ``tunnel``: TCP goodput (iperf3) between the same two namespaces through
  plain routing, through jvpn, and through wireguard-go, in one run;
- ``reattach``: address change to data flowing again, many trials.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from .lab import GW_INNER, GW_IP, TunnelLab, lab_policy

WG_SUBNET_GW, WG_SUBNET_CL, WG_PORT = "10.98.0.1", "10.98.0.2", 51820


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


def _wireguard_go(tl: TunnelLab, tmp: Path) -> None:
    """wireguard-go between the same namespaces, on its own subnet and port."""
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
               str(tmp / "wg-gw.key"), "peer", keys["cl"], "allowed-ips", f"{WG_SUBNET_CL}/32")
    tl.lab.run("cl", "wg", "set", "wgcl", "private-key", str(tmp / "wg-cl.key"), "peer",
               keys["gw"], "endpoint", f"{GW_IP}:{WG_PORT}", "allowed-ips", "10.98.0.0/24")
    for role, ip in (("gw", WG_SUBNET_GW), ("cl", WG_SUBNET_CL)):
        tl.lab.run(role, "ip", "addr", "add", f"{ip}/24", "dev", f"wg{role}")
        tl.lab.run(role, "ip", "link", "set", f"wg{role}", "mtu", "1420", "up")


def run_tunnel_bench(seconds: float = 5.0, rounds: int = 2,
                     progress: Callable[[str], None] = lambda _: None) -> dict:
    with tempfile.TemporaryDirectory(prefix="jvpn-bench-") as d:
        tmp = Path(d)
        tl = TunnelLab(tmp).up()
        try:
            _wireguard_go(tl, tmp)
            figures: dict[str, list[float]] = {"veth": [], "jvpn": [], "wireguard_go": []}
            for r in range(rounds):  # interleaved, so a noisy moment hits all three
                for name, ip in (("veth", GW_IP), ("jvpn", GW_INNER),
                                 ("wireguard_go", WG_SUBNET_GW)):
                    progress(f"round {r + 1}/{rounds}: {name}")
                    figures[name].append(_iperf(tl, ip, seconds))
            counters = tl.cli_json("stats", "gw0")["gw0"]
            status = tl.cli_json("status")
        finally:
            tl.down()
    med = {k: round(statistics.median(v), 1) for k, v in figures.items()}
    return {"jvpn_mbps": med["jvpn"], "wireguard_go_mbps": med["wireguard_go"],
            "veth_mbps": med["veth"],
            "jvpn_over_wireguard_go": round(med["jvpn"] / med["wireguard_go"], 2)
            if med["wireguard_go"] else None,
            "samples_mbps": figures, "seconds_each": seconds, "rounds": rounds,
            "xdp_mode": status[0].get("mode") if status else None,
            "xdp_counters": {k: v["packets"] for k, v in counters.items() if v["packets"]},
            "tool": "iperf3 TCP, client namespace -> gateway namespace, one stream"}


PROBER = r"""
import json, socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(0.001)
import os
dst = (sys.argv[1], int(sys.argv[2])); end = time.monotonic() + float(sys.argv[3])
seq = 0; out = open(sys.argv[4], "w"); stop = sys.argv[4] + ".stop"
while time.monotonic() < end and not os.path.exists(stop):
    seq += 1
    s.sendto(json.dumps([seq, time.monotonic()]).encode(), dst)
    try:
        while True:
            b = s.recv(100)
            n, sent = json.loads(b)
            out.write(f"{n} {sent} {time.monotonic()}\n")
    except (socket.timeout, BlockingIOError):
        pass
out.close()
"""
ECHO = r"""
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind((sys.argv[1], int(sys.argv[2])))
while True:
    b, a = s.recvfrom(100); s.sendto(b, a)
"""


BENCH_POLICY = lab_policy(max_switches_per_min=600)


def run_reattach_bench(trials: int = 20, progress: Callable[[str], None] = lambda _: None,
                       ) -> dict:
    """Each trial takes the client's active uplink down (wifi <-> lte) and
    measures from that instant to the first echo that went out after it and
    came back through the tunnel."""
    with tempfile.TemporaryDirectory(prefix="jvpn-bench-") as d:
        tmp = Path(d)
        # The lab's default policy allows 30 switches a minute: more trials than
        # that would (rightly) be stopped as a switch storm. Raise the bound.
        tl = TunnelLab(tmp, policy=BENCH_POLICY).up()
        try:
            tl.lab.spawn("gw", sys.executable, "-c", ECHO, GW_INNER, "7007")
            duration = 30 + trials * 5  # a bound only: stopped by a file after the trials
            log = tmp / "probe.txt"
            prober = tl.lab.spawn("cl", sys.executable, "-c", PROBER, GW_INNER, "7007",
                                  str(duration), str(log))
            time.sleep(2.0)
            downs = []
            for i in range(trials):
                progress(f"trial {i + 1}/{trials}")
                if i % 2 == 0:  # wifi -> lte: the uplink disappears
                    downs.append(time.monotonic())
                    tl.lab.link("cl", "wifi", "down")
                else:           # lte -> wifi: wifi comes back and is preferred again
                    tl.lab.link("cl", "wifi", "up")
                    time.sleep(0.3)
                    downs.append(time.monotonic())
                    tl.lab.run("cl", "ip", "route", "replace", "default", "via", "10.77.1.254",
                               "dev", "wifi", "metric", "10")
                time.sleep(1.2)
            time.sleep(1.0)
            Path(str(log) + ".stop").touch()
            prober.wait(timeout=30)
            samples = [tuple(map(float, line.split())) for line in log.read_text().splitlines()]
        finally:
            tl.down()
    rtts = [got - sent for _n, sent, got in samples if sent < downs[0]]
    per_trial = []
    for i, t0 in enumerate(downs):
        t1 = downs[i + 1] if i + 1 < len(downs) else float("inf")
        after = [got for _n, sent, got in samples if t0 <= sent < t1]
        per_trial.append(round((min(after) - t0) * 1000, 2) if after else None)
    gaps = sorted(g for g in per_trial if g is not None)
    rtt_ms = statistics.median(rtts) * 1000 if rtts else None
    return {"p50_ms": round(statistics.median(gaps), 2) if gaps else None,
            "p99_ms": round(gaps[min(len(gaps) - 1, int(len(gaps) * 0.99))], 2) if gaps else None,
            "rtt_ms": round(rtt_ms, 3) if rtt_ms else None, "trials": len(gaps),
            "trials_without_recovery": len(downs) - len(gaps),
            "per_trial_ms": per_trial,
            "max_ms": round(max(gaps), 2) if gaps else None,
            "policy": "max_switches_per_min 600, switch_cooldown_ms 0",
            "method": "UDP echo every ~1 ms through the tunnel; uplink taken down at t0; "
                      "time to the first echo sent after t0 that came back"}
