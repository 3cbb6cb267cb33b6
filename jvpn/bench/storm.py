"""The VOLATILE storm (issue 15, docs/benchmarks.md "Silent clients make a
storm"): N synthetic sessions (jvpn/bench/scale_store.py) whose clients
are all silent, on a gateway with the default heartbeat_volatile_ms (2 s):
all of them go VOLATILE together, then DEGRADED. Measured during it:
`jvpn-xdp sessions --json` (its seconds, and whether it answered), then a
SIGTERM sent while the storm still runs (seconds until the daemon exited).

    sudo python -m jvpn.bench.storm --sessions 20000 [--json]

The transportless TTL is an hour here, so the storm is the timers'
transitions (VOLATILE, then DEGRADED), not the sessions' ends."""

from __future__ import annotations

import argparse
import json
import sys
import time

from jvpn.bench.scale_lab import ScaleLab, start_timeout_s
from jvpn.lab.running import lab_policy

CHANGED = "SessionStateChange"


def run_storm(sessions: int, polls: int = 3, progress=lambda _p: None) -> dict:
    lab = ScaleLab(sessions, progress)
    try:
        lab.up()
        (lab.tmp / "policy.toml").write_text(lab_policy(transport_lost_ttl_ms=3_600_000))
        lab.fill_store()
        daemon = lab.start("state")
        started = time.monotonic()
        progress(f"{sessions}: waiting for the storm")
        while not daemon.event(CHANGED) and time.monotonic() - started < 60:
            time.sleep(0.05)
        storm_s = round(time.monotonic() - started, 2)
        answers = [_sessions_json(lab) for _ in range(polls)]
        changed = len(daemon.events_of(CHANGED))
        stop_s, clean = lab.stop(timeout_s=120)
        return {**_went_volatile(daemon),"sessions": sessions, "storm_began_after_start_s": storm_s,
                "sessions_json": answers, "state_changes_at_sigterm": changed,
                "sigterm_exit_s": stop_s if clean else None,
                "sigterm": "exited" if clean else f"SIGKILL after {stop_s} s"}
    finally:
        lab.down()


def _went_volatile(daemon) -> dict:
    """How many sessions went VOLATILE before the stop, and over how long
    (the events' own times: first to last)."""
    times = [e["ts_ms"] for e in daemon.events_of(CHANGED) if e.get("new_state") == "VOLATILE"]
    return {"went_volatile": len(times),
            "volatile_storm_s": round((max(times) - min(times)) / 1000, 2) if times else None}


def _sessions_json(lab: ScaleLab) -> dict:
    t0 = time.monotonic()
    timeout = start_timeout_s(lab.sessions)
    try:
        out = lab.jvpn("sessions", "--json", timeout=timeout)
        # without the daemon's answer the CLI lists the maps alone, and says so
        ok = out.returncode == 0 and "no gateway daemon" not in out.stderr
        listed = _rows(out.stdout) if ok else (out.stderr.strip().splitlines() or ["?"])[-1]
    except Exception as e:  # noqa: BLE001 - a timeout or a bad answer is the figure
        ok, listed = False, type(e).__name__
    changed = len(lab.daemon.events_of(CHANGED)) if lab.daemon else None
    return {"seconds": round(time.monotonic() - t0, 2), "answered": ok, "listed": listed,
            "state_changes_after": changed, "timeout_s": timeout}


def _rows(text: str) -> int | str:
    try:
        got = json.loads(text)
    except ValueError:
        return "unparsed"
    if isinstance(got, dict):  # by interface
        return sum(len(rows) for rows in got.values() if isinstance(rows, list))
    return len(got)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m jvpn.bench.storm")
    ap.add_argument("--sessions", type=int, default=20_000)
    ap.add_argument("--polls", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    result = run_storm(a.sessions, a.polls, progress=lambda p: print(p, file=sys.stderr))
    print(json.dumps(result, indent=None if a.json else 2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
