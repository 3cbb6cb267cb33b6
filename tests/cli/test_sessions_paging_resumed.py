"""Review k20r4 of 5ce29c0 (cli/views.py ``_Followed.MAX_RESUMES``): a
listing may resume at most 64 times, but an honest daemon's listing of
1M sessions is 100 pages of views.SESSIONS_PAGE (10,000), and a reader
under ``| less`` pauses past the daemon's TTL_S (60 s) on nearly every
page: the CLI writes 10,000 rows (hundreds of screens) and then blocks on
the pipe until the reader has scrolled through them, so each cursor it asks
for next has expired and the listing resumes (``after``). The 65th resume
is refused ("resumed more than 64 times: not listed") after 65 pages were
printed: an honest listing of a daemon that never held more than it may
is refused. (A reader that pauses on every page of a daemon at
abi.MAX_SESSIONS_RANGE[1] needs 419 resumes.)

Scaled down here only in the page size (pages of 10, 1,000 sessions: the
same 100 pages and 99 resumes) with the real jvpn/gateway/operator_pages.py
as the daemon; its clock moves past TTL_S before every page after the
first (the reader's pause)."""

from __future__ import annotations

import os
import types

import pytest
from click.testing import CliRunner

from jvpn.errors import JvpnError
from jvpn.gate import loader
from jvpn.gateway import operator_pages
from jvpn.gateway.operator import Refused
from jvpn_cli import app as app_mod
from jvpn_cli import views
from jvpn_cli.main import cli

COLS = ["session_id", "state", "allowed_ips", "last_rx_ms"]
SESSIONS, PAGE = 1_000, 10  # 1M sessions in pages of 10,000: 100 pages


@pytest.fixture
def root(monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(loader, "_bcc", lambda: object())
    monkeypatch.setattr(app_mod.App, "attachments", lambda self, iface: [])


def live(session_id: int):
    """A served session as the daemon's listing reads it (its id alone)."""
    return types.SimpleNamespace(record=types.SimpleNamespace(session_id=session_id))


def honest_pages(monkeypatch, now: list) -> operator_pages.SessionPages:
    """jvpn/gateway/operator_pages.py's SessionPages, as the daemon runs
    it, over a gateway whose ``lives`` the test holds (a row: its id), on
    the clock ``now[0]``."""
    monkeypatch.setattr(operator_pages.snapshot, "references",
                        lambda gw: (list(gw.lives), {}))
    monkeypatch.setattr(operator_pages.snapshot, "session_values",
                        lambda gw, refs, kernel_rx: [x.record.session_id for x in refs[0]])
    return operator_pages.SessionPages(clock=lambda: now[0])


def test_a_reader_paused_on_every_page_of_an_honest_daemon_is_listed(root, monkeypatch):
    monkeypatch.setattr(views, "SESSIONS_PAGE", PAGE)
    now = [0.0]
    pages = honest_pages(monkeypatch, now)
    gw = types.SimpleNamespace(lives=[live(i) for i in range(SESSIONS)])
    asked = []

    def daemon(app, op, socket_path=None, **args):
        asked.append(args)
        if "cursor" in args and not args.get("close"):
            now[0] += operator_pages.TTL_S + 1  # the reader paused under `| less`
        try:
            rows, nxt = pages.page(gw, args)
        except Refused as e:
            raise JvpnError(str(e)) from None
        return {"now_ms": 5, "gate": "userspace", "interface": None, "columns": COLS,
                "rows": [[f"{i:016x}", "ACTIVE", [], 3] for i in rows], "next": nxt}

    monkeypatch.setattr(app_mod.App, "ask_daemon", daemon)
    r = CliRunner().invoke(cli, ["sessions", "--json"])
    resumes = sum(1 for a in asked if "after" in a)
    assert resumes > 64  # the scenario: one resume a page, more than ef0500f's bound
    assert r.exit_code == 0, [x for x in r.output.splitlines() if "error" in x]
    assert r.output.count('"session_id"') == SESSIONS
