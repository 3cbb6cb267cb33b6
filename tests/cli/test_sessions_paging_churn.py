"""Review k20r5 of 5e3b0c4..1027292 (cli/views.py ``_Followed``).

F3: resumes are bounded by the pages of one full listing of the largest
daemon (``max_resumes = most + 1``), but a resumed listing is a new
snapshot past the last id read, and sessions made meanwhile past it are
listed too (review k20r3 F2, the reason each resumed snapshot gets the
page bound afresh). A reader paused past TTL_S on every page of a daemon
near its capacity with churn (sessions ending behind the cursor, new ones
past it) needs more resumes than one full listing has pages: an honest
listing of a daemon that never held more than it may is refused. Scaled
(MAX 40, pages of 10: 4 resumes) with the real operator_pages.py.

F4: ``check`` bounds the pages of a snapshot, not their rows: a page with
a ``next`` and more rows than SESSIONS_PAGE (no honest daemon's: it
answers a ``next`` with exactly ``limit`` rows) is taken, so the bound
"more than a daemon holds" is no bound on rows (a page may be up to
MAX_REPLY_BYTES, 256 MiB, not ~4 MB)."""

from __future__ import annotations

import os
import types

import pytest
from click.testing import CliRunner
from test_sessions_paging_resumed import honest_pages, live

from jvpn.errors import JvpnError
from jvpn.gate import abi, loader
from jvpn.gateway import operator_pages
from jvpn.gateway.operator import Refused
from jvpn_cli import app as app_mod
from jvpn_cli import views
from jvpn_cli.main import cli

COLS = ["session_id", "state", "allowed_ips", "last_rx_ms"]
MAX, PAGE, CHURN = 40, 10, 3


@pytest.fixture
def root(monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(loader, "_bcc", lambda: object())
    monkeypatch.setattr(app_mod.App, "attachments", lambda self, iface: [])
    monkeypatch.setattr(abi, "MAX_SESSIONS_RANGE", (1, MAX))
    monkeypatch.setattr(views, "SESSIONS_PAGE", PAGE)


def _reply(ids, nxt):
    return {"now_ms": 5, "gate": "userspace", "interface": None, "columns": COLS,
            "rows": [[f"{i:016x}", "ACTIVE", [], 3] for i in ids], "next": nxt}


def test_a_paused_reader_of_an_honest_daemon_with_churn_is_listed(root, monkeypatch):
    now = [0.0]
    pages = honest_pages(monkeypatch, now)
    gw = types.SimpleNamespace(lives=[live(i) for i in range(MAX)])
    listed, asked = [], []

    def daemon(app, op, socket_path=None, **args):
        asked.append(args)
        if "cursor" in args and not args.get("close"):
            now[0] += operator_pages.TTL_S + 1  # the reader paused under `| less`
            # meanwhile CHURN sessions already listed ended, CHURN new ones past the cursor
            read = max(listed) if listed else -1
            gone = [x for x in gw.lives if x.record.session_id <= read][:CHURN]
            top = max(x.record.session_id for x in gw.lives)
            gw.lives = [x for x in gw.lives if x not in gone] + [
                live(top + 1 + k) for k in range(len(gone))]
            assert len(gw.lives) <= MAX  # the daemon never holds more than it may
        try:
            rows, nxt = pages.page(gw, args)
        except Refused as e:
            raise JvpnError(str(e)) from None
        listed.extend(rows)
        return _reply(rows, nxt)

    monkeypatch.setattr(app_mod.App, "ask_daemon", daemon)
    r = CliRunner().invoke(cli, ["sessions", "--json"])
    assert r.exit_code == 0, [x for x in r.output.splitlines() if "resumed" in x]
    assert r.output.count('"session_id"') == len(set(listed))


def test_a_page_with_more_rows_than_asked_and_a_next_is_refused(root, monkeypatch):
    """Four pages of 20 rows (80 rows, twice what a daemon holds) from one
    snapshot, each with a fresh cursor: no honest daemon's listing."""
    def daemon(app, op, socket_path=None, **args):
        if args.get("close"):
            return {}
        n = int(args["cursor"][1:]) + 1 if "cursor" in args else 0
        ids = range(n * 2 * PAGE, (n + 1) * 2 * PAGE)
        return _reply(ids, None if n == 3 else f"c{n}")

    monkeypatch.setattr(app_mod.App, "ask_daemon", daemon)
    r = CliRunner().invoke(cli, ["sessions", "--json"])
    assert r.exit_code == 1, f"{r.output.count('session_id')} rows listed from one snapshot"
    assert "Traceback" not in r.output

