"""`sessions` against a daemon whose paging makes no progress (review k19r2,
"not done" in stop 24's note): anything on the operator socket path that
answers pages with no rows and a ``next`` cursor forever, or a cursor the
CLI already followed, or more pages than a daemon can hold, made the CLI
loop (or page) without end. Each is one error line now (exit 1, no
traceback). The fake daemons below end their listing after ``GIVE_UP``
pages so that the code before the fix ends too (exit 0: the test fails
instead of hanging)."""

from __future__ import annotations

import itertools
import os

import pytest
from click.testing import CliRunner

from jvpn.gate import abi, loader
from jvpn_cli import app as app_mod
from jvpn_cli import views
from jvpn_cli.main import cli

COLS = ["session_id", "state", "allowed_ips", "last_rx_ms"]
GIVE_UP = 300  # pages a fake daemon answers before it ends its listing


def _page(rows=(), nxt=None):
    return {"now_ms": 5, "gate": "userspace", "interface": None, "columns": COLS,
            "rows": [[f"{i:016x}", "ACTIVE", [], 3] for i in rows], "next": nxt}


class Paging:
    """A daemon answering ``page(n)`` as its n-th page (n from 0) until
    GIVE_UP, then a last page (no ``next``); it counts what it was asked."""

    def __init__(self, page):
        self.page, self.asked = page, 0

    def __call__(self, app, op, socket_path=None, **args):
        if args.get("close"):
            return {}
        n, self.asked = self.asked, self.asked + 1
        return self.page(n) if n < GIVE_UP else _page([10**9 + n])


@pytest.fixture
def root(monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(loader, "_bcc", lambda: object())
    monkeypatch.setattr(app_mod.App, "attachments", lambda self, iface: [])


def _listed(monkeypatch, page, *args):
    daemon = Paging(page)
    monkeypatch.setattr(app_mod.App, "ask_daemon", daemon)
    return CliRunner().invoke(cli, ["sessions", *args]), daemon


def _one_line(r, says: str):
    assert r.exit_code == 1, r.output[-300:]
    assert isinstance(r.exception, SystemExit), f"a traceback: {r.exception!r}"
    errors = [line for line in r.output.splitlines() if "error:" in line]
    assert len(errors) == 1 and says in errors[0], r.output[-300:]


@pytest.mark.parametrize("args", [["--json"], []])
def test_empty_pages_with_a_cursor_forever_are_one_error_line(root, monkeypatch, args):
    r, daemon = _listed(monkeypatch, lambda n: _page([], nxt=f"c{n}"), *args)
    _one_line(r, "no progress")
    assert daemon.asked < GIVE_UP


def test_an_empty_page_after_rows_is_refused_too(root, monkeypatch):
    r, _ = _listed(monkeypatch, lambda n: _page([n] if n < 3 else [], nxt=f"c{n}"), "--json")
    _one_line(r, "no progress")


def test_a_cursor_already_followed_is_refused(root, monkeypatch):
    """Rows that go on ascending, under one cursor again and again: an
    honest daemon's cursors are fresh random tokens, never one twice."""
    r, daemon = _listed(monkeypatch, lambda n: _page([n], nxt="c"), "--json")
    _one_line(r, "no progress")
    assert daemon.asked < GIVE_UP


def test_pages_beyond_what_a_daemon_holds_are_refused(root, monkeypatch):
    """A row a page, fresh cursors, ids ascending: progress, but more pages
    than any daemon sends. A daemon holds at most abi.MAX_SESSIONS_RANGE[1]
    sessions and answers full pages (SESSIONS_PAGE rows) but the last: 8
    pages here, 16 with as many sessions coming and going during a resumed
    listing (review k20r5 F3); a 17th with a ``next`` is refused (without
    the bound: 300 pages, or forever). The bound counts pages with a
    ``next`` (4645436): a 17th that ends the listing is its last page
    (tests/cli/test_sessions_paging_final_page.py)."""
    monkeypatch.setattr(views, "SESSIONS_PAGE", abi.MAX_SESSIONS_RANGE[1] // 8)
    r, _ = _listed(monkeypatch, lambda n: _page([n], nxt=None if n == 17 else f"c{n}"),
                   "--json")
    _one_line(r, "pages")


def test_one_row_pages_without_end_stop_at_the_bound(root, monkeypatch):
    monkeypatch.setattr(views, "SESSIONS_PAGE", abi.MAX_SESSIONS_RANGE[1] // 8)
    r, daemon = _listed(monkeypatch, lambda n: _page([n], nxt=f"c{n}"), "--json")
    _one_line(r, "pages")
    assert daemon.asked <= 16 + 2  # the pages it could send, and what the thread asked ahead


def test_as_many_pages_as_a_daemon_can_send_are_listed(root, monkeypatch):
    """The bound is not below what an honest daemon may send: 8 pages of
    MAX_SESSIONS_RANGE[1] // 8, the last without ``next``."""
    monkeypatch.setattr(views, "SESSIONS_PAGE", abi.MAX_SESSIONS_RANGE[1] // 8)
    r, daemon = _listed(monkeypatch, lambda n: _page([n], nxt=None if n == 7 else f"c{n}"),
                        "--json")
    assert r.exit_code == 0, r.output[-300:]
    assert daemon.asked == 8
    assert [f"{i:016x}" for i in range(8)] == [
        line.split('"')[3] for line in r.output.splitlines() if '"session_id"' in line]


def test_honest_pages_of_rows_end_as_before(root, monkeypatch):
    ids = itertools.count()
    r, _ = _listed(monkeypatch, lambda n: _page([next(ids), next(ids)],
                                                nxt=None if n == 4 else f"c{n}"), "--json")
    assert r.exit_code == 0, r.output[-300:]
    assert r.output.count('"session_id"') == 10
