"""How fast the events file and the userspace gate grow under a flood of
garbage handshake initiations from spoofed sources (issue 10 item 4).

Not a test: a measurement for docs/benchmarks.md. EventLog is driven directly
with a fake clock (no sockets, no daemon), the way the daemon's `_handshake`
calls it for an initiation whose mac1 does not verify: before, one
``emit()`` per packet; after, ``emit_unauthenticated()``.

    .venv/bin/python scripts/events_growth.py [--rate 2000] [--seconds 60]
"""

from __future__ import annotations

import argparse
import tempfile
import tracemalloc
from pathlib import Path

from jvpn import wire
from jvpn.events import EventLog
from jvpn.gate import abi
from jvpn.gate.config import GateConfig
from jvpn.gate.userspace import UserspaceGate
from jvpn.session import Transport


def spoofed(i: int) -> Transport:
    return Transport(f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}", 1024 + i % 60000)


def events_bytes(rate: int, seconds: int, aggregated: bool) -> int:
    now = [1_700_000_000_000.0]
    with tempfile.TemporaryDirectory() as d:
        log = EventLog("gw-a", Path(d) / "events.jsonl", clock_ms=lambda: int(now[0]))
        for i in range(rate * seconds):
            now[0] += 1000 / rate
            if aggregated:
                log.emit_unauthenticated("HandshakeRejected", "HANDSHAKE_FAIL", spoofed(i),
                                         detail="bad_mac1")
            else:
                log.emit("HandshakeRejected", "HANDSHAKE_FAIL", transport=spoofed(i),
                         detail="bad_mac1")
        log.close()
        return sum(p.stat().st_size for p in Path(d).iterdir())


def gate_bytes(sources: int, **bounds) -> tuple[int, int]:
    """Heap the userspace gate holds after one initiation from each of
    ``sources`` spoofed addresses (tracemalloc), and its table size."""
    now = [10**12]
    gate = UserspaceGate(GateConfig(global_control_pps=0), clock_ns=lambda: now[0], **bounds)
    msg = wire.message(wire.Header(type=abi.MSG_HANDSHAKE_INIT, session_id=0, counter=0), None,
                       b"\0" * 64)
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    for i in range(sources):
        now[0] += 500_000
        gate.admit(msg, (spoofed(i).addr, 4000))
    used = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    return used, len(gate.model.sources)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rate", type=int, default=2000, help="garbage initiations per second")
    ap.add_argument("--seconds", type=int, default=60, help="simulated seconds")
    ap.add_argument("--sources", type=int, default=200_000, help="spoofed sources for the gate")
    a = ap.parse_args()
    for name, agg in (("one line per packet (before)", False), ("aggregated (after)", True)):
        n = events_bytes(a.rate, a.seconds, agg)
        per_s = n / a.seconds
        print(f"events file, {name}: {n} B in {a.seconds} s = {per_s:,.0f} B/s "
              f"= {per_s * 86400 / 1e9:.3f} GB/day")
    for name, bounds in (("unbounded (before)", {"max_sources": 1 << 62}),
                         ("LRU of 65536 (after)", {})):
        used, kept = gate_bytes(a.sources, **bounds)
        print(f"userspace gate, {a.sources} spoofed sources, {name}: {kept} entries, "
              f"{used / 1e6:.1f} MB ({used / max(kept, 1):.0f} B/entry)")


if __name__ == "__main__":
    main()
