"""What `sessions`, `health` and `top` share: one gathering of the sessions
(the kernel's pinned maps merged with the running daemon's identities) and
the human forms of ids, sizes and ages that keep a table readable at 80
columns. Nothing here prints."""

from __future__ import annotations

import functools
import itertools
import operator
import queue
import threading
from dataclasses import dataclass
from typing import Any

from rich import box
from rich.table import Table

from jvpn.errors import JvpnError
from jvpn.gate import abi, records
from jvpn.operator import NoDaemon

NO_DAEMON = "no gateway daemon: kernel view only"
USERSPACE = "userspace"  # the key of the daemon's sessions when no XDP gate runs
# the narrow table's peer column (the whole Name: --wide, --json); 8, not 12
# since the key age column (issue 13) took its room at 80 columns
PEER_WIDTH = 8
FLEXIBLE = ("peer", "inner", "bound to")  # what a console under 80 columns cuts first
SHORT_ID = 8  # hex digits of a session id in the narrow table (the full one: --wide, --json)
# what a daemon row adds to the kernel's (None in a kernel-only row)
# rows of the daemon's per reply: some 4 MB of JSON, a fraction of a second
# of the daemon's time (issue 15: 50,000 took 4 to 7 s under load, near the
# CLI's 10 s timeout, jvpn/operator.py DEFAULT_TIMEOUT_S)
SESSIONS_PAGE = 10_000
PAGES_AHEAD = 1  # pages asked for ahead of the one being written (each ~4 MB decoded)
IDENTITY = ("peer", "public_key", "inner", "allowed_ips", "confirmed", "created_ms",
            "last_handshake_ms", "key_epoch", "keys_ms", "key_age_s", "rekey_requested",
            "key_confirmed", "key_overlap", "last_rx_ms", "last_rx_age_s", "tx_packets",
            "tx_bytes")

_NO_IDENTITY = dict.fromkeys(IDENTITY)  # a kernel-only row's identity: every field None
# a kernel row: a tuple of these (cli/sessions.py _kernel_rows), by id
KERNEL = ("session_id", "state", "owner", "version", "fence", "bound", "bind_addr", "bind_port",
          "rx_packets", "rx_bytes", "highest_counter")
# a daemon row: a tuple of these, whatever the order of its page's columns
# (the first two are needed; a field the daemon does not send is None)
DAEMON = ("session_id", "state", "owner", "version", "bound", "rx_packets", "rx_bytes",
          *IDENTITY)
_SESSION_ID = operator.itemgetter(0)


@dataclass
class Gathered:
    by_iface: dict[str, list[dict[str, Any]]]  # rows by id (stream(): iterables of them)
    daemon: dict | None  # the daemon's first `sessions` page (its header); None: no daemon


def gather(app, iface: str | None, socket_path: str | None, kernel_rows) -> Gathered:
    """:func:`stream`, every row in lists (a table, `top`)."""
    got = stream(app, iface, socket_path, kernel_rows)
    return Gathered({name: list(rows) for name, rows in got.by_iface.items()}, got.daemon)


def stream(app, iface: str | None, socket_path: str | None, kernel_rows,
           merge=None) -> Gathered:
    """The sessions of IFACE (default: every attached interface, or the
    daemon's userspace gate), merged by session id, each interface's rows
    an iterator: the daemon's pages are joined to the kernel's rows (both
    by id) as they come, a page asked for while the one before is used
    (:class:`DaemonPages`), no list of every daemon row (issue 15).
    ``kernel_rows(gm, owners)``: the kernel's rows of one interface, by id
    (cli/sessions.py). ``merge(now)``: what makes a row of a kernel row
    and a daemon row (either may be None), by default :func:`merged`'s
    dict; `sessions --json` writes text instead (cli/rowtext.py), and
    its ``joined`` and ``daemon_only``, when it has them, write a batch of
    rows a text (each interface's iterator then yields those texts)."""
    app.require_root()
    pages = DaemonPages(app, socket_path)
    try:
        daemon = pages.first()
    except NoDaemon:
        daemon = None
    now = daemon["now_ms"] if daemon is not None else None
    row = functools.partial(merged, now=now) if merge is None else merge(now)
    if daemon is not None and daemon["gate"] == USERSPACE and iface is None:
        alone = getattr(row, "daemon_only", None)  # rows written in batches (cli/rowtext.py)
        rows = alone(pages.rows()) if alone else (row(None, d) for d in pages.rows())
        return Gathered({USERSPACE: rows}, daemon)
    app.require_bcc()
    join = getattr(row, "joined", None) or functools.partial(_joined, row=row)
    out: dict[str, Any] = {}
    joined = False
    for att in app.attachments(iface):
        owners = records.Owners.load(att.ifname, app.paths)
        with app.open_maps(att) as gm:
            rows = kernel_rows(gm, owners)
        # the map's elements only: a session the daemon serves without one
        # (parked during a handover) is the daemon's business, not the gate's
        mine = daemon is not None and daemon.get("interface") == att.ifname
        # the rows chained in C (no generator frame a row); the listing is
        # closed when the chain is dropped (read to its end, or not)
        mine_rows = itertools.chain.from_iterable(pages.pages()) if mine else iter(())
        out[att.ifname] = join(rows, mine_rows)
        joined = joined or mine
    if not joined:  # nothing reads the daemon's pages: its listing dropped now (review k18r3 #2)
        pages.close()
    return Gathered(out, daemon)


def _joined(kernel: list[tuple], daemon_rows, row):
    """Each kernel row (by id) merged with the daemon's row of its id, if
    any (:func:`by_id`)."""
    return itertools.starmap(row, by_id(kernel, daemon_rows))


def by_id(kernel: list[tuple], daemon_rows):
    """(kernel row, the daemon's row of its id or None), by id: a merge of
    two lists sorted by id (the daemon's pages are by id,
    jvpn/gateway/operator_pages.py), one daemon row at a time; the rest of
    the daemon's rows read to their end (sessions without an element)."""
    ahead = next(daemon_rows, None)  # DaemonPages.rows checks them ascending
    for mine in kernel:
        sid = mine[0]
        while ahead is not None and ahead[0] < sid:
            ahead = next(daemon_rows, None)
        if ahead is not None and ahead[0] == sid:
            yield mine, ahead
            ahead = next(daemon_rows, None)
        else:
            yield mine, None
    for _rest in daemon_rows:  # the rest of the listing
        pass


def _in_order(last: str, sid: str) -> str:
    """The join needs the daemon's ids ascending; say so if they are not."""
    if sid <= last:
        raise JvpnError(f"the gateway daemon listed session {sid} after {last}: "
                        "not in order of id (a daemon older than this CLI?)")
    return sid


class DaemonPages:
    """The daemon's sessions, SESSIONS_PAGE at a time from one snapshot
    (jvpn/gateway/operator_pages.py): no reply larger than a page, no
    request per session (issue 15); each page's rows as lists, their
    column names once. The first page is asked at once; once its rows are
    read, a thread asks for each next page as soon as the one before is in,
    so the daemon makes page N+1 while this process merges and writes page
    N (two processes, two cores); at most PAGES_AHEAD pages wait. A page
    refused because the listing expired (a reader paused longer than the
    daemon keeps it: `| less`) is asked again as a new listing past the
    last id read. :meth:`close` drops a listing not read to its end, at the
    daemon too. A daemon without pages answers the first request whole (no
    ``next``)."""

    def __init__(self, app, socket_path: str | None):
        self._ask = functools.partial(app.ask_daemon, "sessions", socket_path,
                                      limit=SESSIONS_PAGE, kernel_rx=False, columns=True)
        self._pages: queue.Queue = queue.Queue(maxsize=PAGES_AHEAD)
        self._first: dict | None = None
        self._closed = threading.Event()
        self._cursor: str | None = None  # the listing's next page at the daemon, if any
        self._handoff = threading.Lock()  # _closed and _cursor change together

    def first(self) -> dict:
        """The first page's answer (its header: node_id, now_ms, gate, interface)."""
        if self._first is None:
            self._first = self._ask()
            self._cursor = self._first.get("next")
        return self._first

    def rows(self):
        """Every row of the listing (tuples of DAEMON), by id, a page at a
        time (once); ids checked ascending as they are read (each page's
        before its first row: :meth:`pages`). Closed, it closes the listing."""
        pages = self.pages()
        try:
            for rows in pages:
                yield from rows
        finally:
            pages.close()

    def pages(self):
        """The listing's rows a page at a time (lists, once), each page
        checked whole: ids ascending and after the page before's."""
        page, last = self.first(), ""
        followed = _Followed()
        if page.get("next") is not None:
            threading.Thread(target=self._fetch, args=(page,), name="sessions-pages",
                             daemon=True).start()
        try:
            while True:
                rows = _checked_rows(page, last)
                followed.check(page.get("next"), rows)
                yield rows
                last = rows[-1][0] if rows else last
                if page.get("next") is None:
                    return
                page = self._next()
        finally:
            self.close()

    def close(self) -> None:
        """Stop asking; a listing not read to its end is dropped at the daemon
        (a cursor the thread gets after this, it drops itself: review k18r5 F2)."""
        with self._handoff:
            self._closed.set()
            cursor, self._cursor = self._cursor, None
        self._drop(cursor)

    def _drop(self, cursor: str | None) -> None:
        if cursor is not None:
            try:
                self._ask(cursor=cursor, close=True)
            except JvpnError:  # it expires there anyway (TTL_S)
                pass

    def _got(self, page: dict) -> bool:
        """The thread's page is in: its cursor kept, or dropped if closed meanwhile."""
        with self._handoff:
            if not self._closed.is_set():
                self._cursor = page.get("next")
                return True
        self._drop(page.get("next"))
        return False

    def _fetch(self, page: dict) -> None:
        try:
            while (cursor := page.get("next")) is not None and not self._closed.is_set():
                page = self._page_after(cursor, page)
                if not self._got(page):
                    return
                self._put((page, None))
        except BaseException as e:  # noqa: BLE001 - raised again in the reading thread
            self._put((None, e))

    def _page_after(self, cursor: str, before: dict) -> dict:
        try:
            return self._ask(cursor=cursor)
        except NoDaemon:
            raise
        except JvpnError as expired:
            last = _last_id(before)
            if self._closed.is_set() or last is None or "expired" not in str(expired):
                raise
            page = self._ask(after=last)  # a new listing past the last id read
            first = _first_id(page)
            if first is not None and first <= last:  # a daemon that cannot resume
                raise expired from None
            return page

    def _put(self, item) -> None:
        while not self._closed.is_set():  # a reader that stopped reading frees the thread
            try:
                self._pages.put(item, timeout=0.5)
                return
            except queue.Full:
                continue

    def _next(self) -> dict:
        page, failed = self._pages.get()
        if failed is not None:
            raise failed
        return page


class _Followed:
    """What a listing followed: a daemon's paging must make progress
    (review k19r2: empty pages with a ``next`` forever made the CLI loop).
    An honest daemon (jvpn/gateway/operator_pages.py) answers a ``next``
    only with a full page (``SESSIONS_PAGE`` rows, the limit asked) of
    fresh rows, under a fresh random cursor of 16 hex digits, and holds at
    most abi.MAX_SESSIONS_RANGE[1] sessions. A listing resumed after the
    daemon's expired (a reader paused under `| less`) lists a new snapshot
    past the last id read: sessions that ended among the rows read and new
    ones past them (reviews k20r3 F2, k20r4 F1, k20r5 F3). So the bound is
    twice what a daemon holds, however many resumes: its sessions, and as
    many coming and going meanwhile, in rows and in the full pages they
    make; ids ascend throughout, and a page with a ``next`` has at least
    one row and at most the limit (review k20r5 F4). Anything else is
    refused in one line: ambiguity is failure."""

    MAX_CURSOR = 64  # characters: a cursor is kept, and a long one is no daemon's

    def __init__(self):
        held = abi.MAX_SESSIONS_RANGE[1]
        self.max_rows, self.max_pages = 2 * held, 2 * -(-held // SESSIONS_PAGE)
        self.rows = 0
        self.cursors: set[str] = set()

    def check(self, cursor, rows: list) -> None:
        """Before a page's rows are used, its ``next`` (None: the last page)."""
        self.rows += len(rows)
        # past the pages bound, only an empty last page (its daemon's
        # sessions a multiple of the page: the honest largest listing) ends it
        if self.rows > self.max_rows or (len(self.cursors) >= self.max_pages
                                         and (cursor is not None or rows)):
            raise JvpnError(f"the gateway daemon's sessions listing goes on past "
                            f"{self.max_rows} rows or {self.max_pages} pages of "
                            f"{SESSIONS_PAGE}, twice what a daemon holds "
                            f"({abi.MAX_SESSIONS_RANGE[1]} sessions): not listed")
        if cursor is None:
            return
        if type(cursor) is not str or len(cursor) > self.MAX_CURSOR:
            what = (f"of type {type(cursor).__name__}" if type(cursor) is not str
                    else f"of {len(cursor)} characters")
            raise JvpnError(f"the gateway daemon's sessions page is malformed "
                            f"(a next cursor {what})")
        if len(rows) > SESSIONS_PAGE:
            raise JvpnError(f"the gateway daemon's sessions page is malformed ({len(rows)} "
                            f"rows and a next cursor, {SESSIONS_PAGE} asked)")
        if not rows or cursor in self.cursors:
            raise JvpnError("the gateway daemon's sessions listing makes no progress ("
                            + ("a page without rows" if not rows else "a cursor it sent before")
                            + " and a next cursor): not listed")
        self.cursors.add(cursor)


def _checked_rows(page: dict, last: str) -> list[tuple]:
    """A page's rows, refused in one line if malformed or not after ``last``
    and ascending (the join by id would lose identities silently)."""
    try:
        rows = _page_rows(page)
    except (KeyError, TypeError, ValueError, IndexError,
            AttributeError) as e:  # one line, not a traceback
        raise JvpnError(f"the gateway daemon's sessions page is malformed "
                        f"({type(e).__name__}: {e})") from None
    ids = [last, *map(_SESSION_ID, rows)]
    for before, sid in itertools.pairwise(ids):
        if sid <= before:
            _in_order(before, sid)
    return rows


def _page_ids(page: dict) -> list:
    columns = page.get("columns")
    if columns is None:
        return [d.get("session_id") for d in page.get("sessions") or ()]
    at = columns.index("session_id") if "session_id" in columns else None
    return [] if at is None else [r[at] for r in page.get("rows") or ()]


def _last_id(page: dict) -> str | None:
    ids = _page_ids(page)
    return ids[-1] if ids and isinstance(ids[-1], str) else None


def _first_id(page: dict) -> str | None:
    ids = _page_ids(page)
    return ids[0] if ids and isinstance(ids[0], str) else None


def _page_rows(page: dict) -> list[tuple]:
    """A page's rows as tuples of DAEMON (a daemon before columns sends dicts)."""
    columns = page.get("columns")
    if columns is None:
        rows = [(d["session_id"], d["state"], *map(d.get, DAEMON[2:])) for d in page["sessions"]]
    else:
        rows = _picked(columns, page["rows"])
    if not {str}.issuperset(map(type, map(_SESSION_ID, rows))):
        raise TypeError("a session id that is not a string")
    return rows


def _picked(columns: list, rows: list) -> list[tuple]:
    """Rows of COLUMNS as tuples of DAEMON: one itemgetter a page (C-level)."""
    width = len(columns)
    if not {width}.issuperset(map(len, rows)):
        raise ValueError(f"a row of other than its {width} columns")
    index = {name: i for i, name in enumerate(columns)}
    pick = [index["session_id"], index["state"], *(index.get(k, width) for k in DAEMON[2:])]
    if width in pick:  # a field this daemon does not send: None
        for r in rows:
            r.append(None)
    return list(map(operator.itemgetter(*pick), rows))


def kernel_of_daemon(daemon: tuple) -> tuple:
    """The kernel's fields of a session only the daemon has (the userspace gate)."""
    sid, state, owner, version, bound, rx_packets, rx_bytes = daemon[:7]
    return (sid, state, owner, version, None, bound, None, None, rx_packets, rx_bytes, None)


def merged(kernel: tuple | None, daemon: tuple | None, now: int | None = None) -> dict[str, Any]:
    """The kernel's fields as the map holds them, the daemon's identity and
    what it sent; received traffic is the kernel's when it has the row.
    ``now``: the daemon's clock, for the age of its last receive."""
    row = dict(zip(KERNEL, kernel if kernel is not None else kernel_of_daemon(daemon),
                   strict=True))
    if daemon is None:
        row.update(_NO_IDENTITY)
        return row
    row.update(zip(IDENTITY, daemon[7:], strict=True))  # C-level: a million rows
    row["daemon_state"] = daemon[1]
    last_rx = row["last_rx_ms"]
    if now is not None and last_rx is not None:
        row["last_rx_age_s"] = round(max(0, now - last_rx) / 1000, 3)
    return row


# ------------------------------------------------------------------ human forms
def short_id(hex_id: str, wide: bool) -> str:
    return hex_id if wide else hex_id[:SHORT_ID] + "…"


def size(n: int | None) -> str:
    """1023 -> "1023B", 1536 -> "1.5K", 3 << 20 -> "3.0M" (powers of 1024)."""
    if n is None:
        return "-"
    value, unit = float(n), "B"
    for unit in ("B", "K", "M", "G", "T"):  # noqa: B007 - the last unit is kept
        if value < 1024 or unit == "T":
            break
        value /= 1024
    return f"{int(value)}B" if unit == "B" else f"{value:.1f}{unit}"


def count(n: int | None) -> str:
    if n is None:
        return "-"
    for div, unit in ((1_000_000_000, "G"), (1_000_000, "M"), (1_000, "k")):
        if n >= div * 10:
            return f"{n // div}{unit}"
    return str(n)


def age(seconds: float | None) -> str:
    """45 -> "45s", 150 -> "2m", 7200 -> "2h", 200000 -> "2d"."""
    if seconds is None:
        return "-"
    s = int(seconds)
    for div, unit in ((86_400, "d"), (3_600, "h"), (60, "m")):
        if s >= div:
            return f"{s // div}{unit}"
    return f"{s}s"


def sessions_table(title: str, rows: list[dict], *, wide: bool, daemon: bool) -> Table:
    """The narrow table fits 80 columns with IPv4 bindings: short ids, sizes
    and ages, one space between columns; only the peer's name (at most
    PEER_WIDTH), the inner address and the binding may be cut (…) in a
    narrower console. --wide has every field, ids and keys whole."""
    table = Table(title=title, box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False,
                  padding=0, title_justify="left")  # the box puts one space between
    cols = _wide_columns(daemon) if wide else _narrow_columns(daemon)
    cells = [[cell(r) for _n, _j, cell in cols] for r in rows]
    for i, (name, justify, _cell) in enumerate(cols):
        need = max([len(name), *(len(c[i]) for c in cells)])
        flexible = not wide and name in FLEXIBLE
        table.add_column(name, justify=justify, no_wrap=True,
                         overflow="ellipsis" if flexible else "fold",
                         min_width=None if flexible else need,
                         max_width=PEER_WIDTH if name == "peer" and not wide else None)
    for c in cells:
        table.add_row(*c)
    return table


def _narrow_columns(daemon: bool) -> list:
    cols = [("session", "left", lambda r: short_id(r["session_id"], False))]
    if daemon:
        cols += [("peer", "left", lambda r: _text(r["peer"])),
                 ("inner", "left", lambda r: _text(r["inner"]))]
    cols += [("state", "left", lambda r: r["state"])]
    if not daemon:  # the version is in --wide when identities take the room
        cols += [("ver", "right", lambda r: "-" if r["version"] is None else str(r["version"]))]
    cols += [("bound to", "left", lambda r: r["bound"]),
             ("rx", "right", lambda r: size(r["rx_bytes"]))]
    if daemon:  # "key": the current keys' age (their epoch: --wide)
        cols += [("tx", "right", lambda r: size(r["tx_bytes"])),
                 ("key", "right", lambda r: age(r.get("key_age_s"))),
                 ("idle", "right", lambda r: age(r.get("last_rx_age_s")))]
    else:
        cols += [("rx pkts", "right", lambda r: count(r["rx_packets"])),
                 ("owner", "left", lambda r: _text(r["owner"]))]
    return cols


def _wide_columns(daemon: bool) -> list:
    cols = [("session id", "left", lambda r: r["session_id"])]
    if daemon:
        cols += [("peer", "left", lambda r: _text(r["peer"])),
                 ("public key", "left", lambda r: _text(r["public_key"])),
                 ("allowed ips", "left", lambda r: ", ".join(r["allowed_ips"] or []) or "-")]
    cols += [("state", "left", lambda r: r["state"]),
             ("owner", "left", lambda r: _text(r["owner"])),
             ("version", "right", lambda r: "-" if r["version"] is None else str(r["version"])),
             ("fence", "right", lambda r: _text(r["fence"])),
             ("bound to", "left", lambda r: r["bound"]),
             ("rx pkts", "right", lambda r: _text(r["rx_packets"])),
             ("rx bytes", "right", lambda r: _text(r["rx_bytes"])),
             ("highest counter", "right", lambda r: _text(r["highest_counter"]))]
    if daemon:
        cols += [("tx pkts", "right", lambda r: _text(r["tx_packets"])),
                 ("tx bytes", "right", lambda r: _text(r["tx_bytes"])),
                 ("key epoch", "right", key_epoch_cell),
                 ("key age", "right", lambda r: age(r.get("key_age_s"))),
                 ("idle", "right", lambda r: age(r.get("last_rx_age_s")))]
    return cols


def key_epoch_cell(r: dict) -> str:
    """The epoch, marked while the previous one is still live: "7*" the
    committed epoch 7 is unconfirmed (the gateway still seals under 6),
    "7+" confirmed, 6 still accepted (the overlap); "7" alone."""
    if r.get("key_epoch") is None:
        return "-"
    if r.get("key_confirmed") is False:
        return f"{r['key_epoch']}*"
    return f"{r['key_epoch']}+" if r.get("key_overlap") else str(r["key_epoch"])


def _text(value) -> str:
    return "-" if value is None else str(value)
