"""What the operator socket (jvpn/gateway/operator.py) can ask the running
gateway: one small function per operation, by name.

A handler gets the request object (``{"op": NAME, ...}``), validates its
arguments itself (a refusal is ``operator.Refused``: one line back to the
operator, nothing changed), takes ``gw.control`` before it reads or changes
the session table, and returns JSON values.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from jvpn.gateway import control_ops, snapshot
from jvpn.gateway.operator import Handler, OperatorServer
from jvpn.gateway.operator_pages import SessionPages
from jvpn.gateway.tally import EventTally


def open_server(gw, path: Path | None) -> OperatorServer | None:
    """The gateway's operator socket (none without a path): bound at once,
    so that a second daemon on the same path is refused before anything is
    served; answered once the gateway runs (its "operator" thread)."""
    if path is None:
        return None
    server = OperatorServer(path, handlers(gw), report=gw.incidents.report)
    server.open()
    return server


def handlers(gw) -> dict[str, Handler]:
    # what only the event stream knows (handshakes, reattaches), for `figures`
    tally = EventTally(gw.timer_ms)
    gw.events.add_listener(tally)
    pages = SessionPages()
    ops: dict[str, Callable[[object, dict], object]] = {
        "ping": ping,
        "sessions": lambda gw, request: sessions(gw, request, pages),
        "health": health,
        "figures": lambda gw, request: figures(gw, tally),
        "terminate": control_ops.terminate,
        "rekey": control_ops.rekey,
        "drain": control_ops.drain,
        "reload": control_ops.reload,
    }
    return {name: (lambda request, fn=fn: fn(gw, request)) for name, fn in ops.items()}


def ping(gw, _request: dict) -> dict:
    """Who answers: enough for the CLI to say which daemon it talks to."""
    return {"pid": os.getpid(), "node_id": gw.events.node_id,
            "listen_port": gw.sock.getsockname()[1],
            "gate": "xdp" if gw.gate.checks_in_kernel else "userspace"}


def sessions(gw, request: dict, pages: SessionPages | None = None) -> dict:
    """The sessions with their peers' identities and traffic
    (jvpn/gateway/snapshot.py; it takes the control lock), and which gate
    the CLI merges them with. With ``limit`` or ``cursor``: one page, and
    the ``next`` cursor while more follow (jvpn/gateway/operator_pages.py);
    with ``"columns": true`` too, the page's rows as lists (``rows``) and
    their names once (``columns``) instead of ``sessions``."""
    out = {"node_id": gw.events.node_id, "now_ms": gw.clock_ms(),
           "gate": "xdp" if gw.gate.checks_in_kernel else "userspace",
           "interface": getattr(gw.gate, "ifname", None)}
    if pages is None or not {"limit", "cursor", "after"} & request.keys():
        return {**out, "sessions": snapshot.sessions(gw)}
    rows, cursor = pages.page(gw, request)
    if request.get("columns") is True:
        return {**out, "columns": list(snapshot.COLUMNS), "rows": rows, "next": cursor}
    return {**out, "sessions": rows, "next": cursor}


def health(gw, _request: dict) -> dict:
    """Threads, store, lease, gate, process (jvpn/gateway/snapshot.py)."""
    return snapshot.health(gw)


def figures(gw, tally: EventTally) -> dict:
    """What `jvpn-xdp top` shows besides the sessions: the gate's verdict
    counters (the kernel's or the userspace model's) and the event counts
    (the same as /metrics: jvpn/gateway/metrics.py); ``rekeys``: [result,
    reason code, count] rows (jvpn/gateway/tally.py)."""
    f = tally.figures()
    accepted = f["latency_buckets"][-1][1]
    return {"counters": gw.gate.read_counters(), "handshakes": f["handshakes"],
            "cookie_replies": f["cookie_replies"], "reattaches": f["reattaches"],
            "reattach_latency": {"count": accepted, "sum_s": round(f["latency_sum_s"], 6)},
            "rekeys": f["rekeys"], "key_compromises_suspected": f["key_compromises_suspected"]}
