"""`jvpn-xdp health`: the running gateway daemon's health, through its
operator socket (jvpn/gateway/snapshot.py builds it)."""

from __future__ import annotations

import click

from jvpn_cli import views
from jvpn_cli.app import App

EXIT_UNHEALTHY = 1


@click.command(short_help="Show the gateway daemon's health.")
@click.option("--json", "as_json", is_flag=True, help="Print the daemon's answer as JSON.")
@click.option("--socket", "socket_path", metavar="PATH", default=None,
              help="The gateway's operator socket (default: <run dir>/gateway.sock).")
@click.pass_obj
@click.pass_context
def health(ctx: click.Context, app: App, as_json: bool, socket_path: str | None) -> None:
    """Ask the running gateway daemon how it is: its threads (alive, by
    name), the store (one cheap read, and how long it took), its lease in a
    cluster (node id, lease, fenced), whether it drains, the gate
    (still attached?), and the process through psutil (CPU% since the last
    look, resident memory, open descriptors, threads). Exits 1 when anything
    is wrong (for scripts and probes), after printing it. Needs root (the
    socket is root's).
    """
    app.require_root()
    h = app.ask_daemon("health", socket_path)
    if as_json:
        app.emit_json(h)
    else:
        for line in health_lines(h):
            app.say(line, markup=False)
    if not h["ok"]:
        ctx.exit(EXIT_UNHEALTHY)


def problems(h: dict) -> list[str]:
    out = [f"thread {name!r} is not running" for name, up in h["threads"].items() if not up]
    if not h["store"]["reachable"]:
        out.append(f"store unreachable: {h['store']['error']}")
    if h["gate_problem"]:
        out.append(f"gate: {h['gate_problem']}")
    if h["cluster"] and h["cluster"]["fenced"]:
        out.append("fenced: the lease is not certainly alive, no data passes")
    if h["fatal"]:
        out.append(f"stopping: {h['fatal']}")
    return out


def health_lines(h: dict) -> list[str]:
    wrong = problems(h)
    verdict = "healthy" if h["ok"] else "NOT healthy: " + "; ".join(wrong)
    p, store, c = h["process"], h["store"], h["cluster"]
    threads = " ".join(n + ("" if up else "(dead)") for n, up in h["threads"].items())
    lines = [f"gateway {h['node_id']}: {verdict}", f"threads   {threads}",
             "store     " + (f"reachable ({store['latency_ms']} ms)" if store["reachable"]
                            else f"UNREACHABLE: {store['error']}")]
    lines.append("cluster   " + ("single gateway (no lease)" if c is None else
                                 f"node {c['node_id']}, lease {c['lease']} "
                                 f"({'valid' if c['lease_valid'] else 'NOT valid'}), "
                                 f"{'FENCED' if c['fenced'] else 'not fenced'}"))
    lines.append("draining  " + ("yes: no new sessions (jvpn-xdp drain --off)"
                                 if h["draining"] else "no"))
    lines += [f"gate      {h['gate']}" + (f": {h['gate_problem']}" if h["gate_problem"] else ""),
              f"sessions  {h['sessions']}",
              f"process   pid {p['pid']}, CPU {p['cpu_percent']:.1f}%, "
              f"RSS {views.size(p['rss_bytes'])}, {p['open_fds']} fds, {p['threads']} threads"]
    return lines
