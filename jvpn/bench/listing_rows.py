"""The CLI's `sessions --json` text path in one process, on synthetic rows
shaped as the harness's (``reconcile_profile --cli``): the CPU a row of
each stage, and of the whole (issue 15). No root, no lab, no daemon: the
pages are JSON bytes as the operator socket sends them, the kernel's rows
tuples as cli/sessions.py makes them (their map reads and making are not
here: about 3-4 us a row, docs/benchmarks.md "The listing's floor").

    nice -n 15 .venv/bin/python -m jvpn.bench.listing_rows [ROWS] [ROUNDS]

A shared machine's load moves these figures by a third: compare two trees
by running each in turn, several rounds (the minimum and the median)."""

from __future__ import annotations

import itertools
import json
import os
import statistics
import sys
import time

from jvpn.gateway import snapshot
from jvpn.gcpause import paused_gc
from jvpn_cli import rowtext, views
from jvpn_cli.sessions import stream_json

NOW_MS = 1_764_000_000_000
IFACE = "veth0"


def kernel_rows(n: int) -> list[tuple]:
    """N kernel rows (views.KERNEL), by id, bound over IPv4, no runtime yet."""
    rows = []
    for i in range(n):
        addr = f"10.1.{i >> 8 & 255}.{i & 255}"
        rows.append((f"{(i * 7919 + 12345) & (1 << 64) - 1:016x}", "ESTABLISHED", "gw-1", 3,
                     17, f"{addr}:51820", addr, 51820, None, None, None))
    rows.sort(key=lambda r: r[0])
    return rows


def daemon_pages(kernel: list[tuple]) -> list[bytes]:
    """The daemon's replies for these sessions (snapshot.COLUMNS' lists), a
    page of views.SESSIONS_PAGE each, as the operator socket writes them."""
    rows = [[k[0], f"peer-{k[0][:6]}", "Zm9vYmFyYmF6cXV4cXV1eHF1dXhxdXV4cXV1eHF1dXg=",
             "100.64.0.1", ["100.64.0.1/32"], k[5], "ESTABLISHED", 3, "gw-1", True,
             NOW_MS - 1000, 0, NOW_MS - 1000, NOW_MS - 5000, 0, 0, "xdp", 0, 0, NOW_MS - 1000,
             1.0, False, True, False] for k in kernel]
    step, pages = views.SESSIONS_PAGE, []
    for start in range(0, len(rows), step):
        more = start + step < len(rows)
        page = {"node_id": "gw-1", "now_ms": NOW_MS, "gate": "xdp", "interface": IFACE,
                "columns": list(snapshot.COLUMNS), "rows": rows[start:start + step],
                "next": f"{start:016x}" if more else None}
        pages.append((json.dumps({"ok": True, "result": page}) + "\n").encode())
    return pages


def listing(kernel: list[tuple], pages: list[bytes], out) -> None:
    """The --json text of these rows to OUT, as cli/sessions.py writes it."""
    def checked():
        last = ""
        for raw in pages:
            rows = views._checked_rows(json.loads(raw)["result"], last)
            last = rows[-1][0] if rows else last
            yield rows
    joined = rowtext.RowText(NOW_MS).joined(kernel, itertools.chain.from_iterable(checked()))
    stream_json({IFACE: joined}, out)


def stages(kernel: list[tuple], pages: list[bytes]) -> dict[str, float]:
    """CPU seconds of each stage, one after the other (their sum is about
    the whole's)."""
    took, got = {}, {}

    def timed(name, fn):
        start = time.process_time()
        got[name] = fn()
        took[name] = time.process_time() - start

    timed("decode", lambda: [json.loads(raw)["result"] for raw in pages])
    timed("check", lambda: [views._checked_rows(p, "") for p in got["decode"]])
    flat = list(itertools.chain.from_iterable(got["check"]))
    timed("join", lambda: list(views.by_id(kernel, iter(flat))))
    pairs, text = got["join"], rowtext.RowText(NOW_MS)
    timed("text", lambda: [text.batch(pairs[i:i + rowtext.BATCH_ROWS])
                           for i in range(0, len(pairs), rowtext.BATCH_ROWS)])
    with open(os.devnull, "w") as out:
        timed("write", lambda: [out.write(t) for t in got["text"]])
        start = time.process_time()
        listing(kernel, pages, out)
        took["whole"] = time.process_time() - start
    return took


def main(argv: list[str]) -> None:
    n = int(argv[0]) if argv else 100_000
    rounds = int(argv[1]) if len(argv) > 1 else 5
    kernel = kernel_rows(n)
    pages = daemon_pages(kernel)
    runs: dict[str, list[float]] = {}
    with paused_gc():  # as the CLI lists (cli/sessions.py)
        for _ in range(rounds):
            for name, s in stages(kernel, pages).items():
                runs.setdefault(name, []).append(s / n * 1e6)
    for name, per_row in runs.items():
        print(f"{name:>6}: min {min(per_row):6.2f} us/row, median "
              f"{statistics.median(per_row):6.2f} ({', '.join(f'{x:.2f}' for x in per_row)})")


if __name__ == "__main__":
    main(sys.argv[1:])
