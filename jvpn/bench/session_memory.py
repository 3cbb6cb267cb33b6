"""The daemon's memory per idle session (issue 15): N synthetic sessions
installed into the session table, as a restart's reconcile installs them,
in a fresh subprocess so that nothing else moves its RSS.

    python -m jvpn.bench.session_memory --sessions 20000 [--trace 2000] [--json]

``bytes_per_session`` is the RSS growth (psutil) divided by N: what the
table keeps per session (its Live, record, key ring, channel, ceiling, its
entries in ``sessions`` / ``by_inner`` / ``downstream``), OpenSSL's contexts
included (tracemalloc does not see them: they are not Python's allocations).
The gate is a stub that keeps nothing (the XDP gate keeps its elements in
the kernel) and the store one that answers without holding anything (the
store's records are the store's). ``--trace M`` adds tracemalloc's top
allocation sites per session, from a second run of M sessions.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import tracemalloc

from jvpn.events import EventLog
from jvpn.gateway.ownership import LocalOwnership
from jvpn.gateway.table import SessionTable
from jvpn.keys import KeyRing, SessionKeys
from jvpn.session import SessionRecord, State, Transport

NOW_MS = 1_700_000_000_000


class NoGate:
    """As the daemon sees the XDP gate: it checks in the kernel and keeps
    nothing in the daemon's memory."""

    checks_in_kernel = True

    def put(self, *_a, **_k) -> None:
        pass

    def standby(self, *_a, **_k) -> None:
        pass

    def remove(self, _sid: int) -> None:
        pass

    def counter_top(self, _sid: int) -> int:
        return 0

    def ids(self) -> set[int]:
        return set()


class NoStore:
    """Answers the table's per-session writes and keeps nothing."""

    def raise_replay_ceiling(self, _sid: int, _c: int) -> None:
        pass

    def set_floor(self, _sid: int, _floor: int) -> None:
        pass

    def get_floor(self, _sid: int) -> int:
        return 1

    def get_replay_ceiling(self, _sid: int) -> tuple[int, bool]:
        return 0, True


def idle_table() -> SessionTable:
    return SessionTable(store=NoStore(), gate=NoGate(), events=EventLog("mem-bench"),
                        ownership=LocalOwnership("gw-mem"), clock_ms=lambda: NOW_MS,
                        send=lambda _m, _t: None)


def synthetic(i: int) -> tuple[SessionRecord, KeyRing, bytes]:
    """Session ``i``: ATTACHED, its own keys, binding and inner address."""
    sid = (0x5E55 << 48) | (i + 1)
    raw = os.urandom(128)
    keys = SessionKeys(sid, raw[:32], raw[32:64], raw[64:80], raw[80:96], raw[96:])
    inner = (0x0A000000 + 2 + i).to_bytes(4, "big")  # 10.0.0.2 on: one per session
    addr = f"10.{inner[1]}.{inner[2]}.{inner[3]}"
    rec = SessionRecord(session_id=sid, state=State.ATTACHED, version=3, created_ms=NOW_MS,
                        last_change_ms=NOW_MS, binding=Transport(f"198.18.{i >> 8 & 255}.{i & 255}",
                                                                 40000 + (i >> 16)),
                        inner_addr=addr, handshake_ns=NOW_MS * 1_000_000 + i)
    return rec, KeyRing(keys), inner


def install(table: SessionTable, n: int, start: int = 0) -> None:
    """Sessions ``start`` to ``start + n`` as a restart's reconcile installs them."""
    for i in range(start, start + n):
        rec, ring, inner = synthetic(i)
        table.install(rec, ring, inner, first_counter=1, stored_ceiling=(0, True),
                      gate_window=True)


def _rss() -> int:
    import psutil  # noqa: PLC0415

    gc.collect()
    return psutil.Process().memory_info().rss


def rss_per_session(n: int) -> dict:
    table = idle_table()
    install(table, 64)  # warm: code objects, caches, interned strings
    before = _rss()
    install(table, n, start=64)
    after = _rss()
    assert len(table.sessions) == n + 64
    return {"sessions": n, "rss_before": before, "rss_after": after,
            "bytes_per_session": round((after - before) / n, 1)}


def traced_per_session(n: int, top: int = 15) -> dict:
    """tracemalloc's view (Python allocations only) of ``n`` installs."""
    table = idle_table()
    install(table, 64)
    gc.collect()
    tracemalloc.start(1)
    snap0 = tracemalloc.take_snapshot()
    install(table, n, start=64)
    gc.collect()
    snap1 = tracemalloc.take_snapshot()
    tracemalloc.stop()
    stats = snap1.compare_to(snap0, "lineno")
    total = sum(s.size_diff for s in stats)
    sites = [{"site": f"{s.traceback[0].filename.rsplit('/jvpn/', 1)[-1]}:"
                      f"{s.traceback[0].lineno}",
              "bytes_per_session": round(s.size_diff / n, 1),
              "blocks_per_session": round(s.count_diff / n, 2)}
             for s in stats[:top] if s.size_diff > 0]
    return {"sessions": n, "python_bytes_per_session": round(total / n, 1), "sites": sites}


def measure(n: int, trace: int = 0, timeout_s: float = 600) -> dict:
    """The figures from a fresh interpreter (this process's RSS is not clean)."""
    cmd = [sys.executable, "-m", "jvpn.bench.session_memory", "--sessions", str(n), "--json"]
    if trace:
        cmd += ["--trace", str(trace)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=timeout_s)
    return json.loads(out.stdout)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sessions", type=int, default=20000)
    p.add_argument("--trace", type=int, default=0, help="tracemalloc run of this many")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    result = rss_per_session(args.sessions)
    if args.trace:
        result["trace"] = traced_per_session(args.trace)
    if args.json:
        print(json.dumps(result))
        return
    print(f"{result['bytes_per_session']:.0f} bytes RSS per idle session "
          f"({args.sessions} sessions)")
    for s in result.get("trace", {}).get("sites", []):
        print(f"  {s['bytes_per_session']:8.1f} B  {s['blocks_per_session']:5.2f} blocks  "
              f"{s['site']}")


if __name__ == "__main__":
    main()
