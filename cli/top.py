"""`jvpn-xdp top`: a live view of the running gateway, refreshed every
second: its health, the sessions (cli/views.py, as `sessions` shows them),
the event counts and the gate's verdicts with their rates. The figures are
the ones /metrics serves (docs/metrics.md). q or Ctrl-C ends it."""

from __future__ import annotations

import contextlib
import os
import select
import sys
import termios
import time
import tty

import click
from rich import box
from rich.console import Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from jvpn.gateway.snapshot import states
from jvpn.operator import NoDaemon
from jvpn_cli import views
from jvpn_cli.app import App
from jvpn_cli.health import problems
from jvpn_cli.sessions import _kernel_rows

QUIT_KEYS = ("q", "Q")


@click.command(short_help="A live view of the gateway (q quits).")
@click.argument("iface", required=False)
@click.option("--once", is_flag=True, help="Print one frame and exit (scripts, tests).")
@click.option("--interval", type=click.FloatRange(0.2, 60), default=1.0, show_default=True,
              help="Seconds between frames.")
@click.option("--socket", "socket_path", metavar="PATH", default=None,
              help="The gateway's operator socket (default: <run dir>/gateway.sock).")
@click.pass_obj
def top(app: App, iface: str | None, once: bool, interval: float,
        socket_path: str | None) -> None:
    """A live view of the gateway on IFACE (default: every attached
    interface): the daemon's health (threads, store, CPU, RSS, descriptors),
    sessions by state, handshakes, cookie replies and reattaches (accepted
    ones with their mean latency), rekeys by result (rotated, denied with
    the reason, expired), the sessions with their peers, traffic and key age,
    and the gate's verdict counters with their rate per second. Without a
    daemon, the kernel's view alone. q or Ctrl-C ends it; --once prints one
    frame. Needs root (and bcc for the maps).
    """
    prev = take(app, iface, socket_path)
    if once:
        app.say(frame(prev, None))
        return
    try:
        with _keys() as key, Live(frame(prev, None), console=app.console,
                                  auto_refresh=False) as live:
            while key(interval) not in QUIT_KEYS:
                cur = take(app, iface, socket_path)
                live.update(frame(cur, prev), refresh=True)
                prev = cur
    except KeyboardInterrupt:
        pass  # Ctrl-C is how a live view ends: no "interrupted", exit 0


def take(app: App, iface: str | None, socket_path: str | None) -> dict:
    """One sample: the sessions, and from the daemon its health and figures
    (or the kernel's counters alone when no daemon answers)."""
    got = views.gather(app, iface, socket_path, _kernel_rows)  # ages included
    sample = {"at": time.monotonic(), "sessions": got.by_iface, "health": None, "figures": None}
    if got.daemon is not None:
        try:
            sample["health"] = app.ask_daemon("health", socket_path)
            sample["figures"] = app.ask_daemon("figures", socket_path)
        except NoDaemon:
            pass  # it stopped between two questions: the next frame says so
    if sample["figures"] is None:
        sample["counters"] = _kernel_counters(app, got.by_iface)
    else:
        sample["counters"] = sample["figures"]["counters"]
    return sample


def _kernel_counters(app: App, by_iface: dict) -> dict[str, dict[str, int]]:
    total: dict[str, dict[str, int]] = {}
    for att in app.attachments(None) if by_iface else []:
        if att.ifname not in by_iface:
            continue
        with app.open_maps(att) as gm:
            for name, v in gm.read_counters().items():
                t = total.setdefault(name, {"packets": 0, "bytes": 0})
                t["packets"] += v["packets"]
                t["bytes"] += v["bytes"]
    return total


def frame(cur: dict, prev: dict | None) -> Group:
    rows = [r for rs in cur["sessions"].values() for r in rs]
    lines = [_health_line(cur["health"]), _sessions_line(cur, rows, prev)]
    if cur["figures"] is not None:
        lines += _event_lines(cur["figures"])
    parts: list = [Text(line) for line in lines]  # long ones wrap, never cut
    for ifname, rs in cur["sessions"].items():
        parts.append(views.sessions_table(f"sessions on {ifname}", rs, wide=False,
                                          daemon=cur["health"] is not None) if rs
                     else Text(f"{ifname}: no sessions"))
    parts.append(_verdicts(cur, prev))
    return Group(*parts)


def _health_line(h: dict | None) -> str:
    if h is None:
        return f"jvpn top · {views.NO_DAEMON}"
    p = h["process"]
    verdict = "healthy" if h["ok"] else "NOT healthy: " + "; ".join(problems(h))
    if h["draining"]:
        verdict += " · DRAINING"
    return (f"jvpn top · {h['node_id']} · {verdict} · CPU {p['cpu_percent']:.1f}% · "
            f"RSS {views.size(p['rss_bytes'])} · {p['open_fds']} fds")


def _sessions_line(cur: dict, rows: list[dict], prev: dict | None) -> str:
    by_state = ", ".join(f"{s} {n}" for s, n in states(rows).items() if n) or "none"
    line = f"sessions {len(rows)}: {by_state}"
    if prev is not None:
        span = max(cur["at"] - prev["at"], 1e-3)
        rx, tx = (max(_sum(cur, k) - _sum(prev, k), 0) / span for k in ("rx_bytes", "tx_bytes"))
        line += f" · rx {views.size(rx)}/s · tx {views.size(tx)}/s"
    return line


def _sum(sample: dict, key: str) -> int:
    return sum(r.get(key) or 0 for rs in sample["sessions"].values() for r in rs)


def _event_lines(f: dict) -> list[str]:
    def listed(d: dict) -> str:
        return ", ".join(f"{k} {v}" for k, v in sorted(d.items())) or "none"

    lat = f["reattach_latency"]
    mean = f" (mean {lat['sum_s'] / lat['count'] * 1000:.0f} ms)" if lat["count"] else ""
    return [f"handshakes: {listed(f['handshakes'])} · cookie replies {f['cookie_replies']}",
            f"reattaches: {listed(f['reattaches'])}{mean}", _rekey_line(f)]


def _rekey_line(f: dict) -> str:
    """Key lifecycle events by result (and reason code, when it says more)."""
    rows = f.get("rekeys") or []  # absent from a daemon before issue 13
    shown = ", ".join(f"{result} {n}" if reason in _PLAIN else f"{result} {reason} {n}"
                      for result, reason, n in rows) or "none"
    suspected = f.get("key_compromises_suspected") or 0
    return f"rekeys: {shown}" + (f" · KEY COMPROMISE SUSPECTED {suspected}" if suspected else "")


_PLAIN = ("KEY_ROTATED", "KEY_EXPIRED")  # the reasons their result already says


def _verdicts(cur: dict, prev: dict | None) -> Table | Text:
    shown = {k: v for k, v in cur["counters"].items() if v["packets"]}
    if not shown:
        return Text("gate verdicts: all zero")
    table = Table(title="gate verdicts", title_justify="left", box=box.SIMPLE_HEAD,
                  show_edge=False, pad_edge=False, padding=0)
    for name in ("counter", "packets", "/s", "bytes"):
        table.add_column(name, justify="left" if name == "counter" else "right", no_wrap=True)
    span = max(cur["at"] - prev["at"], 1e-3) if prev is not None else None
    for name, v in shown.items():
        before = prev["counters"].get(name, {"packets": 0}) if prev is not None else None
        rate = "-" if before is None else f"{(v['packets'] - before['packets']) / span:.0f}"
        table.add_row(name, views.count(v["packets"]), rate, views.size(v["bytes"]),
                      style="red" if name.startswith("drop_") else None)
    return table


@contextlib.contextmanager
def _keys():
    """``key(timeout_s)``: a key pressed within the timeout, or None. The
    terminal is in cbreak mode meanwhile (no Enter needed) and restored."""
    if not sys.stdin.isatty():
        yield lambda t: time.sleep(t)
        return
    fd = sys.stdin.fileno()
    old = termios.tcgetattr(fd)
    tty.setcbreak(fd)
    try:
        yield lambda t: (os.read(fd, 1).decode(errors="replace")
                         if select.select([fd], [], [], t)[0] else None)
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, old)
