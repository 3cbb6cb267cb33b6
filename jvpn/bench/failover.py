"""`jvpn-xdp bench failover` (issue 14): how long the tunnel is without a
working path when the client's active uplink fails, how many packets that
costs, and whether the client keeps still on a path that is only a little
lossy.

In the roaming lab (jvpn/lab/tunnel.py), with the 1 ms UDP echo of
jvpn/bench/net.py running through the tunnel (PROBER, ECHO, and the same
analysis: :func:`gaps_after`, :func:`percentiles`), each case impairs the
active uplink, read from the gateway (the session's binding), never assumed:

- **blackhole**: the router drops everything on that uplink's port
  (jvpn/lab/impair.py, nftables: no link or route event); ms from the rule
  being in to the first echo sent after it that came back;
- **linkdown**: the uplink's link goes down (today's case, as `bench
  reattach`), same figure;
- **planned move**: after a linkdown, the uplink comes back with its
  preferred route while the other works; echoes that never came back in
  the window around the move (goal: none);
- **lossy**: 30 % random drop each way on the active uplink, the other
  clean: ms to the gateway's TransportSwitch, then the switches in the
  next ``watch_s`` (goal: none, no flapping);
- **5 % loss**: 5 % random drop each way for ``loss_s``: switches per
  minute (goal: at most one).

Both ends run the default policy (every field at jvpn/policy.py's default;
the client with its default KeepaliveInterval). Its bounds allow
``max_switches_per_min`` switches a minute, ``switch_cooldown_ms`` apart:
the trials are paced (:class:`SwitchPacer`) rather than the policy changed,
and a 30 % trial waits until the clean uplink is off probation (the client
may not move back to a path it left VOLATILE for 60 s; :func:`probation_wait_s`).
After a trial the uplink the client is on is made the preferred one (route
metrics), so the next trial fails the other one: trials alternate uplinks
without a switch back. Every wait is bounded: a failover not done within
``RECOVERY_BOUND_S`` is counted as without recovery, never waited for.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from jvpn.bench.net import (
    ECHO,
    gaps_after,
    percentiles,
    read_probes,
    start_prober,
    stop_prober,
)
from jvpn.client_path_health import PROBATION_MS
from jvpn.codes import EventType, Reason
from jvpn.config import DEFAULT_KEEPALIVE_MS
from jvpn.lab.addresses import ECHO_PORT, GW_INNER, UPLINK_IP, UPLINK_METRIC, UPLINK_ROUTER_IP
from jvpn.lab.impair import Impairments, nft_in
from jvpn.lab.tunnel import TunnelLab
from jvpn.lab.wait import WaitTimeout, wait_until
from jvpn.policy import SPEC

RECOVERY_BOUND_S = 5.0  # a blackhole / link-down failover not done by then: no recovery
MOVE_BOUND_S = 10.0  # 30 % loss: no move by then (five default loss windows): no move
PLANNED_BOUND_S = 10.0  # a planned move not made by then (probes need a few seconds)
FLOW_BOUND_S = 20.0  # data must flow again before the next trial
SETTLE_S = 0.5  # after a recovery, before the impairment is lifted
AFTER_MOVE_S = 1.0  # a planned move's window goes on this long after the switch
LOST_LEAD_S = 0.5  # echoes are counted lost from this long before t0 (in flight at t0)
PACING_WINDOW_MS = 62_000  # the bound's minute, with a margin for the two ends' clocks
COOLDOWN_MARGIN_MS = 500
LOSSY_PERCENT, LIGHT_LOSS_PERCENT = 30, 5
SELECTION_SECTIONS = ("volatility", "switching", "transport")
PREFERRED, SECOND = sorted(UPLINK_METRIC.values())
PARKED = SECOND + 10  # a route's metric while the two swap places


# ---------------------------------------------------------------- policy

def default_selection_policy() -> dict[str, object]:
    """Every transport-selection field (issue 14) at its default."""
    return {f.key: f.default for f in SPEC if f.section in SELECTION_SECTIONS}


def policy_file(fields: dict[str, object]) -> str:
    """A policy file setting ``fields`` ("section.name" -> value)."""
    lines = ["version = 1"]
    for section in SELECTION_SECTIONS:
        lines.append(f"[{section}]")
        for key, value in fields.items():
            if key.startswith(f"{section}."):
                text = str(value).lower() if isinstance(value, bool) else repr(value)
                lines.append(f"{key.split('.', 1)[1]} = {text}")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- pacing

class SwitchPacer:
    """How long to wait before a trial so that the switches it may cause
    stay within the policy's bounds as both ends judge them: at least
    ``cooldown_ms`` after the last switch, and at most ``max_per_min`` - 1
    in any minute (the client keeps the last one for a dead path).
    ``sources()`` gives the switches that happened (wall ms), one list per
    witness (the gateway's TransportSwitch, the client's PathSelected): a
    trial that caused none costs no wait."""

    def __init__(self, max_per_min: int, cooldown_ms: int,
                 sources: Callable[[], list[list[float]]],
                 clock_ms: Callable[[], float] = lambda: time.time() * 1000):
        self.allowed = max(1, max_per_min - 1)
        self.cooldown_ms, self.sources, self.clock_ms = cooldown_ms, sources, clock_ms

    def delay_s(self, need: int = 1) -> float:
        now = self.clock_ms()
        need = min(need, self.allowed)
        start = now
        for times in self.sources():
            times = sorted(times)
            if times:
                start = max(start, times[-1] + self.cooldown_ms + COOLDOWN_MARGIN_MS)
            recent = [t for t in times if t > now - PACING_WINDOW_MS]
            excess = len(recent) + need - self.allowed
            if excess > 0:  # wait until that many have left the minute
                start = max(start, recent[excess - 1] + PACING_WINDOW_MS)
        return max(0.0, (start - now) / 1000)


# ---------------------------------------------------------------- figures

def probation_wait_s(left_ms: list[float], now_ms: float) -> float:
    """How long until an uplink the client left VOLATILE at ``left_ms``
    (wall ms) is off probation: until then the client may not move back to
    it unless its active path is dead (docs/protocol.md "Choosing a path"),
    so a 30 % trial would find no eligible candidate and stay, by the spec."""
    if not left_ms:
        return 0.0
    return max(0.0, (max(left_ms) + PROBATION_MS + COOLDOWN_MARGIN_MS - now_ms) / 1000)


def left_volatile(events: list[dict], uplink: str) -> list[float]:
    """[when the client last left ``uplink`` for another uplink] if that
    starts a probation: not a planned move (the client leaves a path that
    works without one), and the uplink not dropped from the candidates
    since (a link down: it comes back with a fresh history). Else []."""
    last: list[float] = []
    for e in events:
        kind = e.get("event_type")
        if kind == EventType.PATH_SELECTED and e.get("interface") == uplink \
                and e.get("candidate_interface") not in (None, uplink):
            last = [] if e.get("reason_code") == Reason.PLANNED_MOVE else [e["ts_ms"]]
        elif kind == EventType.PATH_CANDIDATE and e.get("interface") == uplink \
                and e.get("reason_code") == "removed":
            last = []
    return last


def lost_echoes(samples: list[tuple[float, float, float]], a: float, b: float) -> int | None:
    """Echoes sent in [a, b) that never came back: the sequence numbers
    missing between the first and the last that did (a send the kernel
    refused, no route for a moment, counts as lost: it never came back).
    None when none came back in the window."""
    seqs = {int(n) for n, sent, _got in samples if a <= sent < b}
    return max(seqs) - min(seqs) + 1 - len(seqs) if seqs else None


@dataclass
class Trial:
    """One impairment: its uplink, when it was in (t0) and when the trial
    ended (monotonic s), and for moves the switch seen by the gateway."""
    uplink: str | None
    t0: float
    end: float
    move_ms: float | None = None
    extra: dict = field(default_factory=dict)


def failover_figures(name: str, samples: list, trials: list[Trial]) -> dict:
    """``name``_p50_ms / _p99_ms (recovery), lost echoes per failover, per trial."""
    per = gaps_after(samples, [t for tr in trials for t in (tr.t0, tr.end)])[::2]
    lost = [lost_echoes(samples, tr.t0 - LOST_LEAD_S, min(tr.end, tr.t0 + g / 1000 + SETTLE_S))
            if g is not None else None for tr, g in zip(trials, per, strict=True)]
    p50, p99 = percentiles(per)
    l50, l99 = percentiles(lost)
    return {f"{name}_p50_ms": p50, f"{name}_p99_ms": p99,
            f"{name}_max_ms": max((g for g in per if g is not None), default=None),
            f"lost_packets_{name}_p50": l50, f"lost_packets_{name}_p99": l99,
            f"{name}_per_trial_ms": per, f"{name}_lost_per_trial": lost,
            f"{name}_uplinks": [tr.uplink for tr in trials],
            f"{name}_trials_without_recovery": sum(g is None for g in per)}


def planned_figures(samples: list, trials: list[Trial]) -> dict:
    lost = [lost_echoes(samples, tr.t0 - LOST_LEAD_S, tr.end) for tr in trials]
    counted = [n for n in lost if n is not None]
    return {"lost_packets_planned_move": max(counted, default=None),
            "lost_packets_planned_move_total": sum(counted) if counted else None,
            "lost_packets_planned_move_per_trial": lost,
            "planned_move_per_trial_ms": [tr.move_ms for tr in trials],
            "planned_moves_without_switch": sum(tr.move_ms is None for tr in trials)}


def switches_after(times: list[float], move_ms: float, watch_ms: float) -> int:
    """The switches in the ``watch_ms`` after the move stamped ``move_ms``
    (wall ms, as the event says it), the move itself not among them: the
    watch starts at the move's own stamp, never at a figure rounded from
    it (a move_ms rounded down to 0.1 ms put the window's start a few
    hundredths of a ms before the move, and the move counted as a flap)."""
    return sum(move_ms < t <= move_ms + watch_ms for t in times)


def lossy_figures(trials: list[Trial]) -> dict:
    moves = [tr.move_ms for tr in trials]
    after = [tr.extra["switches_after"] for tr in trials]
    p50, p99 = percentiles(moves)
    return {"lossy_move_p50_ms": p50, "lossy_move_p99_ms": p99,
            "lossy_move_per_trial_ms": moves, "lossy_uplinks": [tr.uplink for tr in trials],
            "lossy_trials_without_move": sum(m is None for m in moves),
            "switches_after_move_30pct": max((a for a in after if a is not None), default=None),
            "switches_after_move_30pct_per_trial": after}


# ---------------------------------------------------------------- the lab, driven

def _other(uplink: str) -> str:
    return "lte" if uplink == "wifi" else "wifi"


class FailoverLab:
    """The tunnel lab, its impairments, the echo's log and the pacer: what
    the cases read and change between their trials."""

    def __init__(self, tl: TunnelLab, imp: Impairments, log: Path, policy: dict,
                 progress: Callable[[str], None]):
        self.tl, self.imp, self.log, self.progress = tl, imp, log, progress
        self.pacer = SwitchPacer(policy["switching.max_switches_per_min"],
                                 policy["switching.switch_cooldown_ms"],
                                 lambda: [self.switches(), self.client_selections()])
        self.paced_s, self.started_without_flow = 0.0, 0
        self.unknown_active: list = []  # reads of the binding that named no uplink

    # ------------------------------------------------------------ observations
    def switches(self, after_ms: float = 0, before_ms: float = float("inf")) -> list[float]:
        """The gateway's committed switches (TransportSwitch), wall ms."""
        return [e["ts_ms"] for e in self.tl.gateway_events()
                if e.get("event_type") == EventType.TRANSPORT_SWITCH
                and after_ms < e["ts_ms"] <= before_ms]

    def client_selections(self, after_ms: float = 0, before_ms: float = float("inf")) -> list:
        """The client's PathSelected events (none before issue 14's client), wall ms."""
        return [e["ts_ms"] for e in self.tl.client_event_list()
                if e.get("event_type") == EventType.PATH_SELECTED
                and after_ms < e.get("ts_ms", 0) <= before_ms]

    def left_volatile(self, uplink: str) -> list[float]:
        """When the client last left ``uplink`` VOLATILE (wall ms; [] if it
        did not, or the probation is over by the client's own account)."""
        return left_volatile(self.tl.client_event_list(), uplink)

    def await_probation(self, uplink: str) -> None:
        """Wait (bounded by the probation) until ``uplink`` may be moved to."""
        delay = probation_wait_s(self.left_volatile(uplink), time.time() * 1000)
        if delay > 0:
            self.progress(f"{delay:.1f} s for {uplink}'s probation")
            time.sleep(delay)
            self.paced_s += delay

    def active_uplink(self) -> str | None:
        """The uplink the gateway's binding points at (None: unbound, unknown)."""
        out = self.tl.jvpn_in("gw", self.tl.env, "sessions", "gw0", "--json", timeout=30)
        try:
            rows = json.loads(out.stdout).get("gw0", []) if out.returncode == 0 else []
        except ValueError:
            rows = []
        by_ip = {ip: name for name, ip in UPLINK_IP.items()}
        found = [by_ip[r["bind_addr"]] for r in rows if r.get("bind_addr") in by_ip]
        if not found:  # said in the JSON: what the gateway showed instead
            self.unknown_active.append([(r.get("state"), r.get("bound")) for r in rows]
                                       or out.stderr.strip()[-200:])
        return found[-1] if found else None

    def last_echo_sent(self) -> float:
        """When the latest echo that came back was sent (monotonic s; 0: none yet)."""
        with open(self.log, "rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - 8192))
            lines = f.read().decode(errors="replace").splitlines()[1:]
        sent = [float(p[1]) for p in (ln.split() for ln in lines) if len(p) == 3]
        return max(sent, default=0.0)

    def await_echo_after(self, t: float, bound_s: float) -> bool:
        """True once an echo sent at or after ``t`` came back, False after ``bound_s``."""
        try:
            wait_until(lambda: self.last_echo_sent() >= t, "an echo", bound_s, interval=0.01)
        except WaitTimeout:
            return False
        return True

    def await_switch(self, after_wall: float, bound_s: float) -> float | None:
        """ms from ``after_wall`` (time.time()) to the gateway's first switch after it."""
        first = self.first_switch(after_wall, bound_s)
        return None if first is None else round(first - after_wall * 1000, 1)

    def first_switch(self, after_wall: float, bound_s: float) -> float | None:
        """The gateway's first switch after ``after_wall`` (time.time()), as
        its event stamps it (wall ms), or None within ``bound_s``."""
        got: list[float] = []

        def switched() -> bool:
            got[:] = self.switches(after_wall * 1000)
            return bool(got)

        try:
            wait_until(switched, "a switch", bound_s, interval=0.05)
        except WaitTimeout:
            return None
        return min(got)

    # ------------------------------------------------------------ changes
    def ready(self, what: str, need: int) -> None:
        """Before a trial: the switch bounds leave room for ``need`` more
        switches, and data flows (bounded; a trial that starts without
        flow is counted, and will likely show no recovery)."""
        delay = self.pacer.delay_s(need)
        if delay > 0:
            self.progress(f"{what}: {delay:.1f} s for the policy's switch bounds")
            time.sleep(delay)
            self.paced_s += delay
        self.progress(what)
        if not self.await_echo_after(time.monotonic(), FLOW_BOUND_S):
            self.started_without_flow += 1

    def _metric(self, uplink: str) -> int | None:
        out = self.tl.lab.run("cl", "ip", "-j", "route", "show", "default", "dev", uplink,
                              check=False)
        routes = json.loads(out.stdout or "[]") if out.returncode == 0 else []
        return routes[0].get("metric", 0) if routes else None

    def _set_metric(self, uplink: str, metric: int) -> None:
        current = self._metric(uplink)
        if current is None or current == metric:
            return
        via = ("default", "via", UPLINK_ROUTER_IP[uplink], "dev", uplink)
        self.tl.lab.run("cl", "ip", "route", "add", *via, "metric", str(metric))
        self.tl.lab.run("cl", "ip", "route", "del", *via, "metric", str(current))

    def prefer(self, uplink: str | None) -> None:
        """``uplink`` carries the OS's default route, the other one second
        (no moment where the other is preferred; a no-op when so already)."""
        if uplink is None:
            return
        other = _other(uplink)
        if self._metric(uplink) == PREFERRED and self._metric(other) in (SECOND, None):
            return
        self._set_metric(other, PARKED)
        self._set_metric(uplink, PREFERRED)
        self._set_metric(other, SECOND)

    def restore_link(self, uplink: str) -> None:
        """``uplink``'s link up again and its route the preferred one (as
        `bench reattach` brings wifi back)."""
        self.tl.lab.link("cl", uplink, "up")
        time.sleep(0.3)
        self.tl.lab.run("cl", "ip", "route", "replace", "default", "via",
                        UPLINK_ROUTER_IP[uplink], "dev", uplink, "metric", str(PREFERRED))


# ---------------------------------------------------------------- the cases

def _await_recovery(fl: FailoverLab, t0: float) -> float:
    """Wait for the failover (bounded), then a moment on the new path; the trial's end."""
    if fl.await_echo_after(t0, RECOVERY_BOUND_S):
        time.sleep(SETTLE_S)
    return time.monotonic()


def blackhole_trials(fl: FailoverLab, n: int) -> list[Trial]:
    out = []
    for i in range(n):
        fl.ready(f"blackhole {i + 1}/{n}", need=1)
        uplink = fl.active_uplink()
        if uplink is None:
            out.append(Trial(None, time.monotonic(), time.monotonic()))
            continue
        fl.imp.blackhole(uplink)
        t0 = time.monotonic()  # the rule is in: nothing sent after this gets through
        end = _await_recovery(fl, t0)
        now_on = fl.active_uplink()  # before the lift: the client's choice, not the pull back
        fl.imp.clear(uplink)
        fl.prefer(now_on)
        out.append(Trial(uplink, t0, end))
    return out


def linkdown_and_planned_trials(fl: FailoverLab, n: int) -> tuple[list[Trial], list[Trial]]:
    """Each round: the active uplink's link goes down (a linkdown trial),
    then comes back preferred while the other works (a planned move)."""
    downs, planned = [], []
    for i in range(n):
        fl.ready(f"link down {i + 1}/{n}", need=1)
        uplink = fl.active_uplink()
        if uplink is None:
            now = time.monotonic()
            downs.append(Trial(None, now, now))
            planned.append(Trial(None, now, now))
            continue
        fl.prefer(uplink)
        fl.tl.lab.link("cl", uplink, "down")
        t0 = time.monotonic()  # after the change: probes sent before it left on the old path
        downs.append(Trial(uplink, t0, _await_recovery(fl, t0)))
        fl.ready(f"planned move {i + 1}/{n}", need=1)
        planned.append(_planned_move(fl, uplink))
    return downs, planned


def _planned_move(fl: FailoverLab, uplink: str) -> Trial:
    t_before = time.monotonic()
    fl.restore_link(uplink)
    t0, t0_wall = time.monotonic(), time.time()
    move_ms = fl.await_switch(t0_wall, PLANNED_BOUND_S)
    if move_ms is not None:
        time.sleep(max(0.0, t0 + move_ms / 1000 + AFTER_MOVE_S - time.monotonic()))
    # the window opens before the link came up: the move's whole effect is in it
    return Trial(uplink, t_before, time.monotonic(), move_ms)


def lossy_trials(fl: FailoverLab, n: int, watch_s: float) -> list[Trial]:
    out = []
    for i in range(n):
        fl.ready(f"30% loss {i + 1}/{n}", need=2)
        uplink = fl.active_uplink()
        fl.prefer(uplink)
        if uplink is not None:  # the clean uplink must be one the client may move to
            fl.await_probation(_other(uplink))
        if uplink is None:
            out.append(Trial(None, time.monotonic(), time.monotonic(),
                             extra={"switches_after": None}))
            continue
        fl.imp.set(uplink, LOSSY_PERCENT)
        t0, t0_wall = time.monotonic(), time.time()
        moved = fl.first_switch(t0_wall, MOVE_BOUND_S)
        move_ms = None if moved is None else round(moved - t0_wall * 1000, 1)
        watch_from_ms = moved if moved is not None else (t0_wall + MOVE_BOUND_S) * 1000
        time.sleep(max(0.0, (watch_from_ms / 1000 + watch_s) - time.time()))
        after = switches_after(fl.switches(), watch_from_ms, watch_s * 1000)
        now_on = fl.active_uplink()
        fl.imp.clear(uplink)
        fl.prefer(now_on)
        out.append(Trial(uplink, t0, time.monotonic(), move_ms, {"switches_after": after}))
    return out


def light_loss_run(fl: FailoverLab, seconds: float) -> dict:
    fl.ready(f"5% loss, {seconds:g} s", need=2)
    uplink = fl.active_uplink()
    fl.prefer(uplink)
    if uplink is None:
        return {"switches_per_min_5pct_loss": None, "switches_5pct_loss": None}
    fl.imp.set(uplink, LIGHT_LOSS_PERCENT)
    t0_wall = time.time()
    time.sleep(seconds)
    t1_wall = time.time()
    fl.imp.clear(uplink)
    n = len(fl.switches(t0_wall * 1000, t1_wall * 1000))
    chosen = len(fl.client_selections(t0_wall * 1000, t1_wall * 1000))
    return {"switches_per_min_5pct_loss": round(n * 60 / (t1_wall - t0_wall), 2),
            "switches_5pct_loss": n, "path_selected_5pct_loss": chosen,
            "loss_5pct_uplink": uplink}


# ---------------------------------------------------------------- the run

METHOD = {
    "stream": "UDP echo every ~1 ms from the client through the tunnel to the gateway "
              "(bench reattach's prober)",
    "blackhole": "the active uplink (the gateway's binding) silently dropped both ways in the "
                 "router namespace (nftables, forward hook; no link or route event); t0 = the "
                 "rule in; time to the first echo sent after t0 that came back; lost = echoes "
                 f"sent from t0 - {LOST_LEAD_S} s that never came back; no echo within "
                 f"{RECOVERY_BOUND_S} s: no recovery",
    "linkdown": "the active uplink's link down (ip link set down); t0 after the change; same "
                "figures",
    "planned_move": "after each link-down trial, that uplink up again with its preferred route "
                    "while the other works; lost = echoes sent from just before the link came "
                    f"up to {AFTER_MOVE_S} s after the gateway's TransportSwitch (or "
                    f"{PLANNED_BOUND_S} s) that never came back",
    "lossy": f"{LOSSY_PERCENT}% random drop each way on the active uplink (nft numgen), the "
             "other clean; ms to the gateway's TransportSwitch (none within "
             f"{MOVE_BOUND_S} s: no move); then the switches in the watch period after the "
             "move's own event stamp (the move not among them); each trial starts once the "
             "clean uplink is off probation (60.5 s after the client last left it VOLATILE)",
    "loss_5pct": f"{LIGHT_LOSS_PERCENT}% random drop each way on the active (preferred) "
                 "uplink for loss_seconds; the gateway's TransportSwitch events per minute",
    "spacing": "the default switch bounds are kept: before each trial the run waits until the "
               "switches already made (gateway TransportSwitch, client PathSelected) leave "
               "room: at least switch_cooldown_ms + 0.5 s after the last, at most "
               "max_switches_per_min - 1 in any 62 s (about 9 s per switch when every trial "
               "switches); after a trial the uplink the client is on becomes the preferred "
               "route, so trials alternate uplinks with no switch back",
}


def _rtt_ms(samples: list, before: float) -> float | None:
    rtts = [got - sent for _n, sent, got in samples if sent < before]
    return round(statistics.median(rtts) * 1000, 3) if rtts else None


def _run_cases(fl: FailoverLab, trials: int, lossy_n: int, watch_s: float,
               loss_s: float) -> dict:
    """Every case in turn; the trials, and the 5 % run's figures."""
    blackholes = blackhole_trials(fl, trials)
    downs, planned = linkdown_and_planned_trials(fl, trials)
    lossy = lossy_trials(fl, lossy_n, watch_s)
    light = light_loss_run(fl, loss_s)
    return {"blackhole": blackholes, "linkdown": downs, "planned": planned, "lossy": lossy,
            "light": light}


def run_failover_bench(trials: int = 20, lossy_trials_n: int = 3, watch_s: float = 20.0,
                       loss_s: float = 60.0,
                       progress: Callable[[str], None] = lambda _: None) -> dict:
    policy = default_selection_policy()
    with tempfile.TemporaryDirectory(prefix="jvpn-bench-") as d:
        tmp = Path(d)
        tl = TunnelLab(tmp, policy=policy_file(policy),
                       keepalive_s=DEFAULT_KEEPALIVE_MS / 1000).up()
        try:
            with Impairments(nft_in(tl.lab)) as imp:
                tl.lab.spawn("gw", sys.executable, "-c", ECHO, GW_INNER, str(ECHO_PORT))
                log = tmp / "probe.txt"  # the prober runs until stopped; a bound only:
                bound = 300 + trials * 120 + lossy_trials_n * (watch_s + 120) + loss_s
                prober = start_prober(tl.lab, "cl", GW_INNER, bound, log)
                time.sleep(0.5)  # a few round trips before the first trial: the RTT baseline
                fl = FailoverLab(tl, imp, log, policy, progress)
                cases = _run_cases(fl, trials, lossy_trials_n, watch_s, loss_s)
                stop_prober(prober, log, timeout_s=30)
                samples = read_probes(log)
                switches = len(fl.switches())
        finally:
            tl.down()
    first = cases["blackhole"][0].t0 if cases["blackhole"] else float("inf")
    return {**failover_figures("blackhole", samples, cases["blackhole"]),
            **failover_figures("linkdown", samples, cases["linkdown"]),
            **planned_figures(samples, cases["planned"]),
            **lossy_figures(cases["lossy"]), **cases["light"],
            "trials": trials, "lossy_trials": lossy_trials_n, "watch_seconds": watch_s,
            "loss_seconds": loss_s, "rtt_ms": _rtt_ms(samples, first),
            "switches_total": switches, "paced_seconds": round(fl.paced_s, 1),
            "trials_started_without_flow": fl.started_without_flow,
            "active_uplink_unknown": fl.unknown_active,
            "policy": {"default": True, **policy,
                       "keepalive_interval_s": DEFAULT_KEEPALIVE_MS / 1000},
            "method": METHOD}
