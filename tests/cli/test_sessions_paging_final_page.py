"""Review k21r4 of 4645436 (cli/views.py ``_Followed.check``: past the
page bound's pages with a ``next``, a last page without one is taken only
if empty, b65aabe). A hostile daemon cannot use that last page to list more than the
bound's rows, nor to be asked anything after it (scaled: MAX 40, pages
of 10, the fixtures of test_sessions_paging_churn.py)."""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from test_sessions_paging_churn import MAX, PAGE, _reply, root  # noqa: F401 - root: fixture

from jvpn_cli import app as app_mod
from jvpn_cli import views
from jvpn_cli.main import cli

pytestmark = pytest.mark.usefixtures("root")


def _daemon(asked: list, most: int, last_rows: range, last_next=None, per_page=PAGE):
    def daemon(app, op, socket_path=None, **args):
        if args.get("close"):
            return {}
        n = int(args["cursor"][1:]) + 1 if "cursor" in args else 0
        asked.append(n)
        if n == most:
            return _reply(last_rows, last_next)
        return _reply(range(n * PAGE, n * PAGE + per_page), f"c{n}")
    return daemon


def test_a_last_page_past_the_page_bound_is_still_held_to_the_row_bound(monkeypatch):
    """The page bound's full pages with a ``next`` (the row bound's rows),
    then a last page without one carrying one row more: refused, not listed."""
    most, asked = views._Followed().max_pages, []
    monkeypatch.setattr(app_mod.App, "ask_daemon",
                        _daemon(asked, most, range(most * PAGE, most * PAGE + 1)))
    r = CliRunner().invoke(cli, ["sessions", "--json"])
    assert r.exit_code == 1 and "goes on past" in r.output, r.output[-300:]
    assert "Traceback" not in r.output and asked == list(range(most + 1))


def test_a_page_with_a_next_past_the_page_bound_is_refused_though_rows_are_few(monkeypatch):
    """Pages of one row each with a ``next`` (far under the row bound): the
    page bound's pages, then one more with a ``next``: refused, and not more
    than the pages asked ahead are asked past it."""
    most, asked = views._Followed().max_pages, []
    monkeypatch.setattr(app_mod.App, "ask_daemon",
                        _daemon(asked, most, range(most * PAGE, most * PAGE + 1),
                                last_next=f"c{most}", per_page=1))
    r = CliRunner().invoke(cli, ["sessions", "--json"])
    assert r.exit_code == 1 and "goes on past" in r.output, r.output[-300:]
    assert "Traceback" not in r.output
    assert max(asked) <= most + views.PAGES_AHEAD + 1 and most * PAGE == 2 * MAX


def test_a_last_page_of_rows_past_the_page_bound_is_refused(monkeypatch):
    """The same pages of one row, and a last page past the page bound,
    without a ``next`` but with rows: no honest daemon's (its pages with a
    ``next`` are full, so its last page past the bound is empty): refused,
    nothing asked after."""
    most, asked = views._Followed().max_pages, []
    monkeypatch.setattr(app_mod.App, "ask_daemon",
                        _daemon(asked, most, range(most * PAGE, most * PAGE + 3), per_page=1))
    r = CliRunner().invoke(cli, ["sessions", "--json"])
    assert r.exit_code == 1 and "goes on past" in r.output, r.output[-300:]
    assert "Traceback" not in r.output and asked == list(range(most + 1))


def test_the_largest_listing_ending_with_an_empty_page_is_listed(monkeypatch):
    """Review k20r6 (nit): the page bound counted the last page too. A
    listing of exactly the bound's rows (twice what a daemon holds, as many
    full pages with a ``next`` as the bound allows) that an honest daemon
    ends with an empty page without a ``next`` (its sessions a multiple of
    the page) was refused on that last page."""
    most, asked = views._Followed().max_pages, []
    monkeypatch.setattr(app_mod.App, "ask_daemon", _daemon(asked, most, range(0)))
    r = CliRunner().invoke(cli, ["sessions", "--json"])
    assert r.exit_code == 0, r.output[-300:]
    assert r.output.count('"session_id"') == most * PAGE == 2 * MAX
    assert asked == list(range(most + 1))
