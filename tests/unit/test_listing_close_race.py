"""Review k18r5 F2 (cli/views.py DaemonPages.close vs the prefetch thread):
close() takes ``self._cursor`` and drops that listing at the daemon, but the
prefetch thread may be inside an ask at that moment: the daemon has already
popped the old cursor and made the next one, which the thread stores in
``self._cursor`` *after* close() ran. Its _put then returns (closed), and
nothing drops the new cursor: the daemon keeps the listing (one of MAX_OPEN
slots, the snapshot's references) until TTL_S, the very leak close=true was
added for (review k18r3 #2)."""

from __future__ import annotations

import threading
import time

from test_listing_resume import CliApp, _page_threads, daemon  # noqa: F401 - fixture

from jvpn import operator as client
from jvpn_cli import views


def test_close_while_the_prefetch_thread_asks_leaves_no_daemon_cursor(daemon):  # noqa: F811
    asked, release = threading.Event(), threading.Event()

    class SlowPathApp(CliApp):
        def ask_daemon(self, op, socket_path=None, **args):
            got = client.call(self.path, op, timeout_s=5, **args)
            if "cursor" in args and not args.get("close") \
                    and threading.current_thread().name == "sessions-pages":
                asked.set()  # the daemon answered: its next cursor exists there
                release.wait(5)  # ... and the answer is still on its way to us
            return got

    before = len(_page_threads())
    pages = views.DaemonPages(SlowPathApp(daemon.server.path), None)
    rows = pages.rows()
    next(rows)  # the first page's row read: the prefetch thread asks for the second
    assert asked.wait(5)
    rows.close()  # the reader stops (top's frame ends, a pipe closed, an error)
    release.set()
    deadline = time.monotonic() + 3
    while len(_page_threads()) > before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(_page_threads()) == before
    assert daemon.pages._open == {}, (
        f"{len(daemon.pages._open)} listing(s) left open in the daemon after close()")


def test_a_reader_that_stops_early_leaves_no_cursor_nor_thread(daemon):  # noqa: F811
    """The same without any injected delay: a reader that stops after two
    rows (`--json | head`, an error while writing, a malformed page) finds
    the prefetch thread mid-ask nearly always (it asks back to back until
    PAGES_AHEAD wait), so close() drops a cursor already spent and the
    daemon keeps the one the thread got. Also the only test that fails
    without close() in rows()' finally (none of the change's does)."""
    before = len(_page_threads())
    pages = views.DaemonPages(CliApp(daemon.server.path), None)
    rows = pages.rows()
    next(rows), next(rows)
    rows.close()
    deadline = time.monotonic() + 3
    while len(_page_threads()) > before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(_page_threads()) == before
    assert daemon.pages._open == {}
