"""Issue 15: the operator socket's ``sessions`` answer in pages of one
snapshot (jvpn/gateway/operator_pages.py): every session once, by id, the
same rows as the whole answer; a listing's cursor ends or expires."""

from __future__ import annotations

import pytest

from jvpn.bench.session_memory import NOW_MS, install
from jvpn.gateway import operations
from jvpn.gateway.operator import Refused
from jvpn.gateway.operator_pages import TTL_S, SessionPages
from kits.daemon_kit import Clock, make_gateway


@pytest.fixture
def gw(tmp_path):
    gw = make_gateway(tmp_path, clock=Clock(NOW_MS))
    install(gw.table, 7)
    return gw


def listing(gw, pages, limit: int) -> tuple[list[dict], int]:
    rows, asked, cursor = [], 0, None
    while True:
        request = {"limit": limit} if cursor is None else {"limit": limit, "cursor": cursor}
        got = operations.sessions(gw, request, pages)
        rows += got["sessions"]
        asked += 1
        assert len(got["sessions"]) <= limit
        cursor = got["next"]
        if cursor is None:
            return rows, asked


def test_pages_hold_every_session_once_as_the_whole_answer(gw):
    whole = operations.sessions(gw, {})["sessions"]
    rows, asked = listing(gw, SessionPages(), 3)
    assert asked == 3 and rows == whole
    assert [r["session_id"] for r in rows] == sorted(f"{s:016x}" for s in gw.table.sessions)


def test_a_listing_is_one_snapshot_whatever_changes_between_pages(gw):
    pages = SessionPages()
    first = operations.sessions(gw, {"limit": 4}, pages)
    install(gw.table, 2, start=100)  # new sessions after the first page: not in this listing
    rest = operations.sessions(gw, {"limit": 4, "cursor": first["next"]}, pages)
    assert len(first["sessions"]) + len(rest["sessions"]) == 7 and rest["next"] is None


def test_a_cursor_is_used_once_and_expires(gw):
    now = [0.0]
    pages = SessionPages(clock=lambda: now[0])
    first = operations.sessions(gw, {"limit": 2}, pages)
    second = operations.sessions(gw, {"limit": 2, "cursor": first["next"]}, pages)
    with pytest.raises(Refused, match="over or expired"):
        operations.sessions(gw, {"limit": 2, "cursor": first["next"]}, pages)
    now[0] += TTL_S + 1
    with pytest.raises(Refused, match="over or expired"):
        operations.sessions(gw, {"limit": 2, "cursor": second["next"]}, pages)
    with pytest.raises(Refused, match="limit"):
        operations.sessions(gw, {"limit": 0}, pages)


def test_a_page_is_made_with_the_collector_paused_and_it_resumes(gw, monkeypatch):
    """A page is 10,000 rows, none in a cycle: collections while it is made
    walked every object made since the restart's freeze for nothing (issue
    15: a fifth of the pages' time at 1M while the first ticks ran)."""
    import gc

    from jvpn.gateway import operator_pages

    seen, made = [], operator_pages.snapshot.sessions

    def rows(*args, **kwargs):
        seen.append(gc.isenabled())
        return made(*args, **kwargs)

    monkeypatch.setattr(operator_pages.snapshot, "sessions", rows)
    assert gc.isenabled()
    whole = operations.sessions(gw, {})["sessions"]
    got, asked = listing(gw, SessionPages(), 3)
    assert got == whole and asked == 3
    assert seen == [True] + [False] * 3 and gc.isenabled()


def test_pages_of_columns_are_the_rows_as_lists_with_their_names_once(gw):
    """Issue 15: ``columns: true``, the same rows, their names once."""
    whole = operations.sessions(gw, {})["sessions"]
    pages, got, cursor = SessionPages(), [], None
    while True:
        more = {} if cursor is None else {"cursor": cursor}
        page = operations.sessions(gw, {"limit": 3, "columns": True, **more}, pages)
        assert "sessions" not in page and page["columns"] == list(whole[0])
        got += [dict(zip(page["columns"], row, strict=True)) for row in page["rows"]]
        cursor = page["next"]
        if cursor is None:
            break
    assert got == whole
