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

from jvpn.gateway import control_ops
from jvpn.gateway.operator import Handler, OperatorServer


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
    ops: dict[str, Callable[[object, dict], object]] = {
        "ping": ping,
        "terminate": control_ops.terminate,
        "drain": control_ops.drain,
        "reload": control_ops.reload,
    }
    return {name: (lambda request, fn=fn: fn(gw, request)) for name, fn in ops.items()}


def ping(gw, _request: dict) -> dict:
    """Who answers: enough for the CLI to say which daemon it talks to."""
    return {"pid": os.getpid(), "node_id": gw.events.node_id,
            "listen_port": gw.sock.getsockname()[1],
            "gate": "xdp" if gw.gate.checks_in_kernel else "userspace"}
