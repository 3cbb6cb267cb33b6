"""Review k20r6 F1 at the CLI: `jvpn-xdp sessions` against an operator
socket whose reply is nested deeper than the stack (jvpn/operator.py
``_read_reply``: ``json.loads`` raises RecursionError, which no layer turns
into one line: cli/main.py JvpnGroup takes JvpnError and OSError)."""

from __future__ import annotations

import os
import types

from click.testing import CliRunner

from jvpn import operator as operator_mod
from jvpn.gate import loader
from jvpn_cli import app as app_mod
from jvpn_cli.main import cli

DEEP = b'{"ok": true, "result": ' + b"[" * 100_000 + b"]" * 100_000 + b"}\n"


class _Sock:
    def __init__(self):
        self.chunks = iter([DEEP, b""])

    def __enter__(self):
        return self

    def __exit__(self, *_exc):
        return False

    def settimeout(self, _t):
        pass

    def connect(self, _path):
        pass

    def sendall(self, _data):
        pass

    def recv(self, _n):
        return next(self.chunks)


def test_a_deep_reply_to_sessions_is_one_error_line(monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(loader, "_bcc", lambda: object())
    monkeypatch.setattr(app_mod.App, "attachments", lambda self, iface: [])
    monkeypatch.setattr(operator_mod, "socket", types.SimpleNamespace(
        AF_UNIX=1, SOCK_STREAM=1, SOCK_CLOEXEC=0, socket=lambda *_a: _Sock()))
    r = CliRunner().invoke(cli, ["sessions", "--json"])
    assert r.exit_code == 1 and not isinstance(r.exception, RecursionError), \
        f"{type(r.exception).__name__}: {r.output[-200:]}"
