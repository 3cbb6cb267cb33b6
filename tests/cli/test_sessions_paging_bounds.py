"""Review k20r3 of e2e7848 (both fixed) (cli/views.py ``_Followed``): the CLI's refusal of
daemon paging that makes no progress.

1. It keeps every cursor it followed, whole, for the listing's life: a
   hostile answer on the operator socket path (what e2e7848 defends
   against) sends cursors as long as a reply may be (jvpn/operator.py
   MAX_REPLY_BYTES, 256 MiB), one row a page, up to the bound's 419 pages:
   the CLI holds them all (about 100 GiB) before it refuses anything. An
   honest daemon's cursor is 16 hex digits (operator_pages.py ``_keep``).
   Before e2e7848 a cursor was dropped once followed.

2. The bound ("more pages than a daemon of abi.MAX_SESSIONS_RANGE[1]
   sessions sends") counts the rows of a whole listing, but a listing
   resumed after its snapshot expired (``after``: a reader paused under
   ``| less``) reads a SECOND snapshot past the last id: sessions that
   ended among those already read and new ones past them are both listed.
   A daemon that never held more than MAX sessions at once is refused.
   Scaled down here (MAX 40, pages of 10) with the real
   jvpn/gateway/operator_pages.py as the daemon; at the real scale it
   needs a daemon near 4.19M sessions (low severity).
"""

from __future__ import annotations

import os
import tracemalloc
import types

import pytest
from click.testing import CliRunner

from jvpn.errors import JvpnError
from jvpn.gate import abi, loader
from jvpn.gateway import operator_pages
from jvpn.gateway.operator import Refused
from jvpn_cli import app as app_mod
from jvpn_cli import views
from jvpn_cli.main import cli

COLS = ["session_id", "state", "allowed_ips", "last_rx_ms"]


@pytest.fixture
def root(monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(loader, "_bcc", lambda: object())
    monkeypatch.setattr(app_mod.App, "attachments", lambda self, iface: [])


def _page(rows=(), nxt=None):
    return {"now_ms": 5, "gate": "userspace", "interface": None, "columns": COLS,
            "rows": [[f"{i:016x}", "ACTIVE", [], 3] for i in rows], "next": nxt}


def test_followed_cursors_are_not_kept_whole(root, monkeypatch):
    """60 pages of one row each, every cursor 1 MiB and fresh (the fake
    daemon keeps none): the CLI's peak memory must not grow with the
    cursors it followed (a page or two in flight: a few MiB). On main it
    holds all 60 (60 MiB); with 256 MiB cursors and 419 pages, ~100 GiB."""
    pages, big = 60, 1 << 20

    def daemon(app, op, socket_path=None, **args):
        if args.get("close"):
            return {}
        n = int(args["cursor"][1:args["cursor"].index("x")]) + 1 if "cursor" in args else 0
        return _page([n], nxt=None if n == pages - 1 else f"c{n}" + "x" * big)

    monkeypatch.setattr(app_mod.App, "ask_daemon", daemon)
    tracemalloc.start()
    try:
        r = CliRunner().invoke(cli, ["sessions", "--json"])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert r.exit_code in (0, 1), r.output[-300:]  # listed, or refused in one line
    assert peak < 16 * big, f"the CLI held {peak >> 20} MiB for {pages} pages' cursors"


class _Daemon:
    """jvpn/gateway/operator_pages.py's SessionPages over a table of ids
    that the test changes between requests; its own clock (TTL_S)."""

    def __init__(self, ids):
        self.ids, self.now = sorted(ids), 0.0
        self.pages = operator_pages.SessionPages(clock=lambda: self.now)
        self.most_held = len(self.ids)

    def gateway(self):
        lives = [types.SimpleNamespace(record=types.SimpleNamespace(session_id=i))
                 for i in self.ids]
        return types.SimpleNamespace(lives=lives)

    def hold(self, ids):
        self.ids = sorted(ids)
        self.most_held = max(self.most_held, len(self.ids))

    def ask(self, app, op, socket_path=None, **args):
        try:
            rows, nxt = self.pages.page(self.gateway(), args)
        except Refused as e:
            raise JvpnError(str(e)) from None
        return _page(rows, nxt)


def test_a_resumed_listing_of_an_honest_daemon_is_listed(root, monkeypatch):
    """MAX 40 sessions, pages of 10: the bound lets 4 pages through. The
    daemon holds 40 sessions (ids 0..39); the reader reads page 1, pauses
    past TTL_S (the snapshot expires); meanwhile sessions 0..9 ended and 10
    new ones (ids 100..109) started: 40 again. The resumed listing (after
    id 9) has 40 rows, 4 pages: 5 pages in all, never more than 40
    sessions held. An honest listing, refused on main as 'more than a
    daemon holds'."""
    monkeypatch.setattr(abi, "MAX_SESSIONS_RANGE", (1, 40))
    monkeypatch.setattr(views, "SESSIONS_PAGE", 10)
    daemon = _Daemon(range(40))
    monkeypatch.setattr(operator_pages.snapshot, "references",
                        lambda gw: (list(gw.lives), {}))
    monkeypatch.setattr(operator_pages.snapshot, "session_values",
                        lambda gw, refs, kernel_rx: [live.record.session_id
                                                     for live in refs[0]])
    asked = []

    def ask(app, op, socket_path=None, **args):
        asked.append(args)
        if len(asked) == 2:  # the second page: the reader paused past TTL_S meanwhile
            daemon.now += operator_pages.TTL_S + 1
            daemon.hold([*range(10, 40), *range(100, 110)])
        return daemon.ask(app, op, socket_path, **args)

    monkeypatch.setattr(app_mod.App, "ask_daemon", ask)
    r = CliRunner().invoke(cli, ["sessions", "--json"])
    assert any("after" in a for a in asked), f"the listing was not resumed: {asked}"
    assert daemon.most_held <= abi.MAX_SESSIONS_RANGE[1]
    assert r.exit_code == 0, r.output[-400:]
    assert r.output.count('"session_id"') == 50


def test_a_daemon_that_expires_every_page_is_refused_at_the_bound(root, monkeypatch):
    """Resumes are bounded by what they list: a daemon answering 'expired'
    to every cursor and one new row to every ``after`` is refused in one
    line at twice the pages a daemon holds (scaled: MAX 40, pages of 10: 8
    pages), however many resumes that takes."""
    monkeypatch.setattr(abi, "MAX_SESSIONS_RANGE", (1, 40))
    monkeypatch.setattr(views, "SESSIONS_PAGE", 10)
    most = views._Followed().max_pages
    assert most == 8
    asked = []

    def daemon(app, op, socket_path=None, **args):
        asked.append(args)
        if args.get("close"):
            return {}
        if "cursor" in args:
            raise JvpnError("sessions: that listing is over or expired: list again")
        n = int(args["after"], 16) + 1 if "after" in args else 0
        return _page([n], nxt=f"c{n}")

    monkeypatch.setattr(app_mod.App, "ask_daemon", daemon)
    r = CliRunner().invoke(cli, ["sessions", "--json"])
    assert r.exit_code == 1 and "twice what a daemon holds" in r.output, r.output[-300:]
    assert "Traceback" not in r.output
    resumes = sum(1 for a in asked if "after" in a)
    # the fetching thread runs up to PAGES_AHEAD pages ahead of the check
    assert most - 1 <= resumes <= most + 1 + views.PAGES_AHEAD
