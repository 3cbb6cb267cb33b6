"""Handoffs between the cluster lab's gateways, measured: how long the client
is without a working path when it moves to the other gateway, and whether
any packet of the session was accepted by both gateways.

Dual acceptance is measured the strict way. While the client moves, every
message it sends on its new uplink is also copied to the *old* owner from the
*old* bound transport (a mirror in the router namespace, frames injected in
front of that gateway): as if the old path still delivered everything. A tap
behind each gateway's XDP program (AF_PACKET sees only what XDP passed)
records the counters of the session's data messages. A counter found on both
gateways is a packet accepted by both: the old owner was still passing data
while the new one already was.

Used by `jvpn-xdp bench handoff` and tests/test_cluster_lab.py.
"""

from __future__ import annotations

import socket
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from jvpn.bench.net import (
    ECHO,
    gaps_after,
    percentiles,
    prober_pause_figures,
    read_pauses,
    read_probes,
    start_prober,
    stop_prober,
)
from jvpn.bench.stall_trace import (
    STALL_MS,
    Trial,
    pause_in_gap_ms,
    pause_marks,
    stalls,
    write_trace,
)
from jvpn.bench.wire_log import WireLog
from jvpn.gate import abi
from jvpn.lab import frames
from jvpn.lab.addresses import ECHO_PORT, PORT, SVC_IP, UPLINK_ROUTER_IF, VIP
from jvpn.lab.capture import Capture, udp_messages
from jvpn.lab.cluster import ClusterLab, site
from jvpn.lab.netns import socket_in
from jvpn.lab.wait import WaitTimeout, wait_until

PACKET_OUTGOING = 4  # AF_PACKET packet type of what the interface sent


class GatewayTap:
    """The counters of one session's data messages a gateway's XDP passed."""

    def __init__(self, cl: ClusterLab, name: str, sid: int):
        self.sid, self.counters = sid, set()
        self._cap = Capture(cl.lab.ns(site(name).role), self._frame, "gw0")

    def _frame(self, raw: bytes, meta) -> None:
        got = udp_messages(raw) if meta[2] != PACKET_OUTGOING else None
        for msg in got[1] if got else ():
            if (len(msg) >= abi.HDR_LEN and msg[0] in (abi.MSG_DATA, abi.MSG_KEEPALIVE)
                    and int.from_bytes(msg[8:16], "little") == self.sid):
                self.counters.add(int.from_bytes(msg[16:24], "little"))

    def stop(self) -> None:
        self._cap.stop()


class Mirror:
    """Copies what the client sends on ``uplink`` to gateway ``to`` as if it
    still came from ``spoof`` (the session's old bound transport)."""

    def __init__(self, cl: ClusterLab, uplink: str, to: str, spoof: tuple[str, int]):
        self.head = (cl.lab.mac(site(to).role, "gw0")
                     + cl.lab.mac("rt", site(to).router_if) + b"\x08\x00")
        self.spoof, self.copied = spoof, 0
        self.out = socket_in(cl.lab.ns("rt"), socket.AF_PACKET, socket.SOCK_RAW)
        self.out.bind((site(to).router_if, 0))
        self._cap = Capture(cl.lab.ns("rt"), self._frame, UPLINK_ROUTER_IF[uplink])

    def _frame(self, raw: bytes, meta) -> None:
        got = udp_messages(raw) if meta[2] != PACKET_OUTGOING else None
        for msg in got[1] if got else ():
            if msg and msg[0] in (abi.MSG_DATA, abi.MSG_KEEPALIVE):
                ip = frames.ipv4(self.spoof[0], VIP, 17, frames.udp(self.spoof[1], PORT, msg))
                try:
                    self.out.send(self.head + ip)
                    self.copied += 1
                except OSError:
                    pass

    def stop(self) -> None:
        self._cap.stop()
        self.out.close()


# ---------------------------------------------------------------- the benchmark

def _owner(cl: ClusterLab, sid: int):
    store = cl.store()
    try:
        got = store.get(sid)
        return got[0] if got else None
    finally:
        store.close()


def handoff_trials(cl: ClusterLab, sid: int, trials: int, settle_s: float = 1.2,
                   progress: Callable[[str], None] = lambda _: None) -> dict:
    """Move the client between the gateways ``trials`` times with the mirror
    and taps on; returns the moments of the moves, per-trial store times and
    the dual-accepted counters."""
    taps = {n: GatewayTap(cl, n, sid) for n in ("a", "b")}
    moves, to_owner_ms, copied = [], [], 0
    try:
        for i in range(trials):
            progress(f"handoff {i + 1}/{trials}")
            rec = _owner(cl, sid)
            old, uplink = site(rec.owner), "lte" if site(rec.owner).name == "a" else "wifi"
            mirror = Mirror(cl, uplink, old.name, (rec.binding.addr, rec.binding.port))
            new = "b" if old.name == "a" else "a"
            trial = Trial(i, f"handoff {old.name} -> {new} ({uplink})", time.monotonic())
            cl.use_uplink(uplink)
            trial.done()  # after: every probe sent from here takes the new path
            moves.append(trial)
            to_owner_ms.append(_wait_owner(cl, sid, f"gw-{new}", trial.t0))
            time.sleep(settle_s)
            mirror.stop()
            copied += mirror.copied
    finally:
        for t in taps.values():
            t.stop()
    both = taps["a"].counters & taps["b"].counters
    return {"moves": moves, "to_owner_ms": to_owner_ms, "dual_active_packets": len(both),
            "accepted": {n: len(t.counters) for n, t in taps.items()}, "mirrored": copied}


def _wait_owner(cl: ClusterLab, sid: int, node: str, t0: float, timeout_s: float = 5.0):
    """ms from ``t0`` until ``node`` owns the session, ATTACHED (None: not within timeout_s)."""
    def owned() -> bool:
        rec = _owner(cl, sid)
        return rec is not None and rec.owner == node and rec.state.name == "ATTACHED"

    try:
        wait_until(owned, f"{node} to own the session", t0 + timeout_s - time.monotonic(),
                   interval=0.005)
    except WaitTimeout:
        return None
    return round((time.monotonic() - t0) * 1000, 2)


def run_handoff_bench(trials: int = 20, progress: Callable[[str], None] = lambda _: None,
                      trace: Path | None = None) -> dict:
    """``trials`` handoffs (LTE lands on B), then ``trials`` reattaches on one
    gateway of the same cluster (LTE lands on A too): same client, same
    etcd, same moves; only the ownership move differs. Slow moves get
    their timelines (``stalls``, ``same_gateway_stalls``; ``trace``: every
    move's, and the raw logs: jvpn/bench/stall_trace.py)."""
    with tempfile.TemporaryDirectory(prefix="jvpn-bench-") as d:
        tmp = Path(d)
        cl = ClusterLab(tmp, gateway_extra="LeaseTTL = 2\n").up()
        try:
            cl.start_all()
            cl.lab.spawn("svc", sys.executable, "-c", ECHO, SVC_IP, str(ECHO_PORT))
            log = tmp / "probe.txt"
            bound_s = 60 + trials * 5  # a bound only: stopped by a file after the trials
            prober = start_prober(cl.lab, "cl", SVC_IP, bound_s, log)
            wires = ([WireLog(cl.lab.ns("rt"), UPLINK_ROUTER_IF[u]) for u in ("wifi", "lte")]
                     if trace is not None else [])
            [rec] = cl.store().list()
            result = handoff_trials(cl, rec.session_id, trials, progress=progress)
            cl.set_catchment("lte", "a")
            if _owner(cl, rec.session_id).owner != "gw-a":
                cl.use_uplink("wifi")
                time.sleep(1.0)
            local = _same_gateway_moves(cl, trials, progress)
            time.sleep(0.5)
            stop_prober(prober, log)
            samples, pauses = read_probes(log), read_pauses(log)
            timelines = _timelines(cl, tmp, result["moves"], local, samples, pauses, wires, trace)
        finally:
            cl.down()
    per_trial = [t.gap_ms for t in result["moves"]]
    per_local = [t.gap_ms for t in local]
    p50, p90, p99 = percentiles(per_trial, (0.5, 0.9, 0.99))
    local_p50, local_p90, local_p99 = percentiles(per_local, (0.5, 0.9, 0.99))
    a_to_b, b_to_a = per_trial[0::2], per_trial[1::2]  # the moves alternate, A -> B first
    return {"p50_ms": p50, "p99_ms": p99, "p90_ms": p90,
            "a_to_b_p50_max_ms": percentiles(a_to_b, (0.5, 1.0)),
            "b_to_a_p50_max_ms": percentiles(b_to_a, (0.5, 1.0)),
            "owner_moved_p50_max_ms": percentiles(result["to_owner_ms"], (0.5, 1.0)),
            "same_gateway_reattach_p90_ms": local_p90,
            "trials": sum(g is not None for g in per_trial),
            "dual_active_packets": result["dual_active_packets"],
            "trials_without_recovery": sum(g is None for g in per_trial),
            "same_gateway_reattach_p50_ms": local_p50,
            "same_gateway_reattach_p99_ms": local_p99,
            "p99_vs_same_gateway_reattach": round(p99 / local_p99, 2) if p99 and local_p99
            else None,
            "per_trial_ms": per_trial, "same_gateway_per_trial_ms": per_local,
            **timelines,
            "owner_moved_ms": result["to_owner_ms"],
            "accepted_per_gateway": result["accepted"],
            "mirrored_to_old_owner": result["mirrored"],
            "method": "client alternates Wi-Fi (gateway A) and LTE (gateway B) catchments; "
                      "UDP echo to the backend every ~1 ms through the tunnel; per move: ms "
                      "from the uplink change (done) to the first echo sent after it that "
                      "came back. Same-gateway baseline: the same moves with both uplinks "
                      "on A, same cluster and etcd. Dual-active: the client's packets on the "
                      "new path are mirrored to the old owner from the old transport; "
                      "counters passed by both gateways' XDP are counted"}


def _same_gateway_moves(cl: ClusterLab, trials: int,
                        progress: Callable[[str], None]) -> list[Trial]:
    moves = []
    for i in range(trials):
        progress(f"reattach on one gateway {i + 1}/{trials}")
        uplink = "lte" if i % 2 == 0 else "wifi"
        trial = Trial(trials + i, f"same gateway ({uplink})", time.monotonic())
        cl.use_uplink(uplink)
        trial.done()
        moves.append(trial)
        time.sleep(1.2)
    return moves


def _timelines(cl: ClusterLab, tmp: Path, moves: list[Trial], local: list[Trial], samples,
               pauses, wires: list[WireLog], trace: Path | None) -> dict:
    """Each move's gap (a handoff's ends at the first same-gateway move at
    the latest), and the slow ones' timelines: client, both gateways, the
    prober, the wire (with ``trace``)."""
    ends = gaps_after(samples, [t.t0 for t in moves + local])
    for t, gap in zip(moves + local, ends, strict=True):
        t.gap_ms = gap
        t.extra["prober_pause_ms"] = pause_in_gap_ms(t, pauses)
    marks = [(t, "wire", what) for w in wires for t, what in w.stop()] + pause_marks(pauses)
    sources = {"client": cl.client_event_list(), "gateway a": cl.gateway_events("a"),
               "gateway b": cl.gateway_events("b")}
    if trace is not None:
        raw = {n: tmp / n for n in ("probe.txt", "client.log", "gateway-a.log", "gateway-b.log")}
        raw.update({"client-events.jsonl": cl.client_events,
                    "gateway-a-events.jsonl": cl.events_file("a"),
                    "gateway-b-events.jsonl": cl.events_file("b")})
        write_trace(trace, moves + local, samples, sources, raw, marks)
    slow = stalls(moves, samples, sources, marks)
    slow_local = stalls(local, samples, sources, marks)
    return {"stall_threshold_ms": STALL_MS, "stall_count": len(slow),
            "same_gateway_stall_count": len(slow_local),
            **prober_pause_figures(moves + local, pauses),
            "stalls": slow, "same_gateway_stalls": slow_local}
