"""`sessions --json` against a daemon that answers garbage (review k19r2
F2): the daemon socket is trusted only as far as the CLI's checks go, and
each of these is one error line (exit 1), never a traceback. They failed
before (a traceback), on main at 1a4a93f and on 8605d77 alike."""

from __future__ import annotations

import os

import pytest
from click.testing import CliRunner

from jvpn.errors import JvpnError
from jvpn.gate import loader
from jvpn_cli import app as app_mod
from jvpn_cli.main import cli

COLS = ["session_id", "state", "allowed_ips", "last_rx_ms"]


def _page(now=5, rows=(("a", "ACTIVE", [], 3),), nxt=None, **over):
    return {"now_ms": now, "gate": "userspace", "interface": None, "columns": COLS,
            "rows": [list(r) for r in rows], "next": nxt, **over}


GARBAGE = {
    "a result that is not an object": ["x"],
    "no now_ms": {k: v for k, v in _page().items() if k != "now_ms"},
    "now_ms a string": _page(now="soon"),
    "last_rx_ms a string": _page(rows=[("a", "ACTIVE", [], "soon")]),
    "last_rx_ms too large for a float": _page(rows=[("a", "ACTIVE", [], -10**400)]),
}


@pytest.fixture
def root(monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(loader, "_bcc", lambda: object())
    monkeypatch.setattr(app_mod.App, "attachments", lambda self, iface: [])


def _one_line(r):
    assert isinstance(r.exception, SystemExit), f"a traceback: {r.exception!r}"
    assert r.exit_code == 1 and "error:" in r.output


@pytest.mark.parametrize("name", list(GARBAGE))
def test_a_garbage_first_page_is_one_error_line(root, monkeypatch, name):
    monkeypatch.setattr(app_mod.App, "ask_daemon",
                        lambda self, op, socket_path=None, **a: GARBAGE[name])
    _one_line(CliRunner().invoke(cli, ["sessions", "--json"]))


@pytest.mark.parametrize("rows", [[17], [{"session_id": "b"}]])
def test_a_garbage_page_resumed_after_expiry_is_one_error_line(root, monkeypatch, rows):
    """The second page's cursor expired; the listing asked again past the
    last id read answers rows that are not lists: _first_id reads them
    before any check (views.DaemonPages._page_after)."""
    def ask(self, op, socket_path=None, **args):
        if args.get("close"):
            return {}
        if args.get("cursor") == "c1":
            raise JvpnError("the listing expired")
        if args.get("after") is not None:
            return {**_page(), "rows": rows}
        return _page(nxt="c1")
    monkeypatch.setattr(app_mod.App, "ask_daemon", ask)
    _one_line(CliRunner().invoke(cli, ["sessions", "--json"]))
