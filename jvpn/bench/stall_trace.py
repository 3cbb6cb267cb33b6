"""The timeline of a slow trial (issue 15, docs/benchmarks.md "The reattach
stall"): what the probe, the client, the gateway(s) and the XDP gate did
around one move, in one clock, so that a stall names its own cause.

The clock is CLOCK_MONOTONIC (``time.monotonic``): the bench and the prober
read it directly (namespaces share it). The client's and the gateway's
events carry wall-clock milliseconds (jvpn/events.py); each trial records
the offset between the two clocks at its move, and every event is placed
on the trial's monotonic axis with it. Times in a timeline are ms from the
trial's t0 (the uplink change done), negative before it.

Used by `bench reattach` and `bench handoff` (``stalls`` in their JSON,
``--trace DIR`` for every trial's timeline and the raw logs).
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

STALL_MS = 50.0  # a trial slower than this gets its timeline in the JSON
BEFORE_MS = 100.0  # the timeline starts this long before the change began
AFTER_MS = 100.0  # ... and ends this long after data came back
XDP_DROP = "XdpSecurityDrop"  # sampled per packet: a run of them is one timeline entry
EVENT_NOISE = frozenset({"node_id", "policy_version", "session_id", "ts_ms", "event_type",
                         "reason_code"})


def wall_offset_s() -> float:
    """time.time() - time.monotonic(), the smallest of a few reads (the one
    least disturbed by a preemption between the two calls)."""
    best = None
    for _ in range(5):
        a = time.monotonic()
        w = time.time()
        b = time.monotonic()
        if best is None or b - a < best[0]:
            best = (b - a, w - (a + b) / 2)
    return best[1]


@dataclass
class Trial:
    """One move: ``started`` when the bench began the change, ``t0`` when it
    was done (both monotonic s), the wall offset then, and the XDP counters
    around it (None when the gate cannot be read)."""

    index: int
    kind: str
    started: float
    t0: float = 0.0
    offset_s: float = 0.0
    counters_before: dict | None = None
    counters_after: dict | None = None
    gap_ms: float | None = None
    extra: dict = field(default_factory=dict)

    def done(self) -> None:
        self.t0, self.offset_s = time.monotonic(), wall_offset_s()

    def rel_ms(self, mono_s: float) -> float:
        return round((mono_s - self.t0) * 1000, 2)

    def event_rel_ms(self, wall_ms: float) -> float:
        return self.rel_ms(wall_ms / 1000 - self.offset_s)


def pause_marks(pauses: list[tuple[float, float]]) -> list[tuple[float, str, str]]:
    """The prober's own pauses (jvpn/bench/net.py PROBER) as timeline marks."""
    return [(a, "prober", f"sent nothing for {round((b - a) * 1000, 1)} ms (its own pause)")
            for a, b in pauses]


def pause_in_gap_ms(trial: Trial, pauses: list[tuple[float, float]]) -> float:
    """How much of the trial's gap (t0 to the echo that ended it) the prober
    itself spent not sending: that part is the measurement's, not the tunnel's."""
    end = trial.t0 + (trial.gap_ms if trial.gap_ms is not None else 1000) / 1000
    return round(sum(max(0.0, min(b, end) - max(a, trial.t0)) for a, b in pauses) * 1000, 2)


def counter_delta(before: dict | None, after: dict | None) -> dict[str, int] | None:
    """Packets per XDP counter that moved between two reads (name -> packets)."""
    if before is None or after is None:
        return None
    return {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)}


def probe_entries(trial: Trial, samples: list, lo_s: float, hi_s: float) -> list[dict]:
    """The echoes around the move: the last one that came back before it,
    each run of lost probes (a gap in the sequence), and the first echo sent
    after t0 that came back (the one the bench measures)."""
    inside = [s for s in samples if lo_s <= s[1] <= hi_s]
    out: list[dict] = []
    before = [s for s in inside if s[1] < trial.started]
    if before:
        n, sent, got = before[-1]
        out.append(_probe(trial, "probe", "last echo before the change", n, sent, got))
    first_after = next((s for s in inside if s[1] >= trial.t0), None)
    prev = None
    for s in inside:
        if prev is not None and s[0] - prev[0] > 1:
            out.append({"t_ms": trial.rel_ms(prev[1]), "who": "probe",
                        "what": f"{int(s[0] - prev[0] - 1)} probes lost (seq {int(prev[0]) + 1}"
                                f"..{int(s[0]) - 1}, sent between +{trial.rel_ms(prev[1])} and "
                                f"+{trial.rel_ms(s[1])} ms)"})
        if s is first_after:
            out.append(_probe(trial, "probe", "first echo sent after t0 that came back", *s))
        elif s[1] >= trial.started and (s[2] - s[1]) * 1000 > 5:
            out.append(_probe(trial, "probe", "slow echo", *s))
        prev = s
    return out


def _probe(trial: Trial, who: str, what: str, n: float, sent: float, got: float) -> dict:
    return {"t_ms": trial.rel_ms(sent), "who": who, "what": what, "seq": int(n),
            "sent_ms": trial.rel_ms(sent), "back_ms": trial.rel_ms(got),
            "rtt_ms": round((got - sent) * 1000, 2)}


def event_entries(trial: Trial, who: str, events: list[dict], lo_s: float,
                  hi_s: float) -> list[dict]:
    """The events ``who`` wrote between lo_s and hi_s (monotonic s); a run
    of the gate's sampled drops of one reason is one entry (first, count)."""
    out: list[dict] = []
    for ev in events:
        t = ev.get("ts_ms")
        if not isinstance(t, (int, float)):
            continue
        if not lo_s <= t / 1000 - trial.offset_s <= hi_s:
            continue
        what = f"{ev.get('event_type')} {ev.get('reason_code')}"
        last = out[-1] if out else None
        if ev.get("event_type") == XDP_DROP and last is not None and last["what"] == what:
            last["count"] += 1
            last["until_ms"] = trial.event_rel_ms(t)
            continue
        fields = {k: v for k, v in ev.items() if k not in EVENT_NOISE and v is not None}
        if ev.get("event_type") == XDP_DROP:
            fields = {"count": 1, "transport_id": ev.get("transport_id")}
        out.append({"t_ms": trial.event_rel_ms(t), "who": who, "what": what, **fields})
    return out


def mark_entries(trial: Trial, marks: list[tuple[float, str, str]], lo_s: float,
                 hi_s: float) -> list[dict]:
    """Observations already on the monotonic axis: (s, who, what)."""
    return [{"t_ms": trial.rel_ms(t), "who": who, "what": what}
            for t, who, what in marks if lo_s <= t <= hi_s]


def timeline(trial: Trial, samples: list, sources: dict[str, list[dict]],
             marks: list[tuple[float, str, str]] = ()) -> list[dict]:
    """Everything seen from BEFORE_MS before the change began to AFTER_MS
    after data came back (or 1 s after t0 if it never did), in time order.
    ``sources``: who -> that process's events; ``marks``: (monotonic s,
    who, what), the wire's (jvpn/bench/wire_log.py)."""
    lo = trial.started - BEFORE_MS / 1000
    hi = trial.t0 + ((trial.gap_ms if trial.gap_ms is not None else 1000) + AFTER_MS) / 1000
    out = [{"t_ms": trial.rel_ms(trial.started), "who": "bench", "what": f"{trial.kind}: begins"},
           {"t_ms": 0.0, "who": "bench", "what": f"{trial.kind}: done (t0)"}]
    out += probe_entries(trial, samples, lo, hi)
    for who, events in sources.items():
        out += event_entries(trial, who, events, lo, hi)
    out += mark_entries(trial, list(marks), lo, hi)
    return sorted(out, key=lambda e: e["t_ms"])


def trial_record(trial: Trial, samples: list, sources: dict[str, list[dict]],
                 marks: list[tuple[float, str, str]] = ()) -> dict:
    return {"trial": trial.index, "kind": trial.kind, "gap_ms": trial.gap_ms,
            "change_took_ms": round((trial.t0 - trial.started) * 1000, 2),
            "xdp": counter_delta(trial.counters_before, trial.counters_after),
            **trial.extra, "timeline": timeline(trial, samples, sources, marks)}


def is_stall(gap_ms: float | None, threshold_ms: float = STALL_MS) -> bool:
    """A trial above the threshold, or one whose data never came back."""
    return gap_ms is None or gap_ms > threshold_ms


def stalls(trials: list[Trial], samples: list, sources: dict[str, list[dict]],
           marks: list[tuple[float, str, str]] = (), threshold_ms: float = STALL_MS) -> list[dict]:
    """The timeline of each trial above ``threshold_ms`` (or without recovery)."""
    return [trial_record(t, samples, sources, marks) for t in trials
            if is_stall(t.gap_ms, threshold_ms)]


def render(record: dict) -> str:
    """One trial's timeline as text (a stall's, in the --trace directory)."""
    lines = [f"trial {record['trial']} ({record['kind']}): {record['gap_ms']} ms; "
             f"XDP {record['xdp']}"]
    for e in record["timeline"]:
        rest = {k: v for k, v in e.items() if k not in ("t_ms", "who", "what")}
        more = " " + json.dumps(rest, sort_keys=True) if rest else ""
        lines.append(f"  {e['t_ms']:+9.2f} ms  {e['who']:<10} {e['what']}{more}")
    return "\n".join(lines) + "\n"


def write_trace(out: Path, trials: list[Trial], samples: list,
                sources: dict[str, list[dict]], raw: dict[str, Path],
                marks: list[tuple[float, str, str]] = (),
                threshold_ms: float = STALL_MS) -> None:
    """``--trace DIR``: every trial's record (trials.jsonl), the stalled
    ones as text (stalls.txt) and the raw logs the timelines came from."""
    out.mkdir(parents=True, exist_ok=True)
    records = [trial_record(t, samples, sources, marks) for t in trials]
    with open(out / "trials.jsonl", "w") as f:
        for r in records:
            f.write(json.dumps(r, sort_keys=True) + "\n")
    (out / "stalls.txt").write_text("".join(render(r) for r in records
                                            if is_stall(r["gap_ms"], threshold_ms)))
    for name, path in raw.items():
        if path.exists():
            shutil.copyfile(path, out / name)


def gate_counters(read: Callable[[], dict] | None) -> dict | None:
    """The gate's counters as name -> packets, or None (no gate, or unreadable)."""
    if read is None:
        return None
    try:
        return {k: v["packets"] for k, v in read().items()}
    except Exception:  # noqa: BLE001 - a diagnostic never fails the bench
        return None
