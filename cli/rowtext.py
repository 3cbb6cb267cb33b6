"""`sessions --json`'s rows as text straight from the kernel's tuple and the
daemon's row (issue 15): one template a kind of row (the keys written once)
and one call of json's C encoder for the row's values, no dict between.
The text is json.dumps(row, indent=2)'s, indented as a row of the listing
(tests/cli/test_rowtext.py compares them): a row this cannot write so (a
value of a type the daemon should not send, a list in a field that has
none) is written by the generic path (cli/views.py ``merged``, then
cli/sessions.py ``indented``), the same text by definition. A batch of
rows alike (the usual one) is written a column at a time (``_by_columns``:
one C-level map a column, one join), the same text (issue 15, k21ls)."""

from __future__ import annotations

import functools
import itertools
import json
from collections.abc import Iterable, Iterator
from json.encoder import encode_basestring_ascii

from jvpn_cli import views

ROW_INDENT = "\n    "  # a row of the listing: depth 2 of {"IFACE": [row, ...]}
_FLAT = frozenset({str, int, float, bool, type(None)})


def _refuse(value):
    raise TypeError(f"not a flat value: {type(value).__name__}")


# json.dumps' own choices (ensure_ascii, allow_nan, a float's repr): the
# values of a row, "\n" between them. With ensure_ascii no encoded value
# holds a newline (a string's are escaped), so "\n" splits them exactly.
_VALUES = json.encoder.c_make_encoder(None, _refuse, encode_basestring_ascii, None,
                                      ": ", "\n", False, False, True)
_LIST_SEP = ",\n        "  # the items of a list inside a row of the listing
_LIST = json.encoder.c_make_encoder(None, _refuse, encode_basestring_ascii, None,
                                    ": ", _LIST_SEP, False, False, True)


def _template(keys: tuple[str, ...], fixed: dict[str, str] | None = None) -> str:
    """The row's text with %s for each value (FIXED: keys whose text is known)."""
    fixed = fixed or {}
    lines = [encode_basestring_ascii(k).replace("%", "%%") + ": "
             + (fixed[k] if k in fixed else "%s") for k in keys]
    return "{\n      " + ",\n      ".join(lines) + ROW_INDENT + "}"


MERGED = views.KERNEL + views.IDENTITY + ("daemon_state",)
_FULL = _template(MERGED)
_KERNEL_ONLY = _template(views.KERNEL + views.IDENTITY, dict.fromkeys(views.IDENTITY, "null"))
_ALLOWED = len(views.KERNEL) + views.IDENTITY.index("allowed_ips")
_LAST_RX = len(views.KERNEL) + views.IDENTITY.index("last_rx_ms")
_AGE = len(views.KERNEL) + views.IDENTITY.index("last_rx_age_s")
_SPLICED = len(views.DAEMON) - len(views.IDENTITY)  # where the identity starts in a daemon row
# the same fields' places in a daemon row (views.DAEMON)
_D_ALLOWED = _SPLICED + views.IDENTITY.index("allowed_ips")
_D_LAST_RX = _SPLICED + views.IDENTITY.index("last_rx_ms")
_D_AGE = _SPLICED + views.IDENTITY.index("last_rx_age_s")
BATCH_ROWS = 256  # rows a text (RowText.batch): a few hundred KB
_ROW_SEP = "," + ROW_INDENT  # between the rows of the listing
MAX_LISTED_IPS = 64  # templates kept by number of allowed IPs (more: made each time)
_MERGED_TEMPLATES: dict[int | None, str] = {}


def _merged_template(n: int | None) -> str:
    """A merged row's template with N allowed IPs laid among its values (None: null)."""
    got = _MERGED_TEMPLATES.get(n)
    if got is None:
        if n is None:
            listed = "null"
        else:
            listed = "[\n        " + ",\n        ".join(["%s"] * n) + "\n      ]" if n else "[]"
        got = _template(MERGED, {"allowed_ips": listed})
        if len(_MERGED_TEMPLATES) < MAX_LISTED_IPS:
            _MERGED_TEMPLATES[n] = got
    return got


def _batches(rows) -> Iterator[list]:
    """BATCH_ROWS rows a list (itertools.batched, before Python 3.12)."""
    it = iter(rows)
    while chunk := list(itertools.islice(it, BATCH_ROWS)):
        yield chunk


def _allowed(value) -> str | None:
    """A list of flat values as json.dumps with an indent writes it in a row."""
    if value is None:
        return "null"
    if type(value) is not list or not _FLAT.issuperset(map(type, value)):
        return None
    if not value:
        return "[]"
    return "[\n        " + "".join(_LIST(value, 0))[1:-1] + "\n      ]"


_BOOL_TEXT = {True: "true", False: "false"}.__getitem__
# a column of one exact type: its values' texts by a C-level map, as json.dumps writes them
_TEXTS_OF = {str: functools.partial(map, encode_basestring_ascii),
             int: functools.partial(map, int.__repr__), bool: functools.partial(map, _BOOL_TEXT)}
_MERGED_PIECES: dict[int, tuple[str, ...]] = {}


def _column_texts(column: tuple) -> Iterable[str] | None:
    """The texts of a column's values (json.dumps'), or None if any is not flat."""
    types = set(map(type, column))
    if not _FLAT.issuperset(types):
        return None
    if len(types) == 1:
        one = types.pop()
        if one is type(None):
            return itertools.repeat("null", len(column))
        if one in _TEXTS_OF:
            return _TEXTS_OF[one](column)
    return "".join(_VALUES(list(column), 0))[1:-1].split("\n")  # mixed, or floats


def _merged_pieces(n: int) -> tuple[str, ...]:
    """The literal text around the values of a merged row with N allowed IPs."""
    got = _MERGED_PIECES.get(n)
    if got is None:
        protected = _merged_template(n).replace("%%", "\x01")  # no encoded key holds \x01
        got = tuple(p.replace("\x01", "%") for p in protected.split("%s"))
        if len(_MERGED_PIECES) < MAX_LISTED_IPS:
            _MERGED_PIECES[n] = got
    return got


def _uniform_columns(pairs: list[tuple], now: int) -> list | None:
    """The columns of a batch of merged rows with the same number of allowed
    IPs and int last receives, in the row's order (the age computed), or None."""
    if not pairs:
        return None
    kernels, daemons = zip(*pairs, strict=True)
    if None in kernels or None in daemons:
        return None
    columns = list(zip(*daemons, strict=True))
    allowed, last_rx = columns[_D_ALLOWED], columns[_D_LAST_RX]
    if not {list}.issuperset(map(type, allowed)) or not {int}.issuperset(map(type, last_rx)):
        return None
    if len(set(map(len, allowed))) != 1:
        return None
    return [*zip(*kernels, strict=True), *columns[_SPLICED:_D_ALLOWED],
            *zip(*allowed, strict=True), *columns[_D_ALLOWED + 1:_D_AGE],
            [round(max(0, now - x) / 1000, 3) for x in last_rx], *columns[_D_AGE + 1:],
            columns[1]]


def _by_columns(pairs: list[tuple], now: int) -> str | None:
    """The text of a batch of merged rows alike (:func:`_uniform_columns`)
    a column at a time: each column's texts by one C-level map (or one
    encoder call), interleaved with the literal text around them in one
    join: no list of every value, no split, no template parsed (issue 15).
    None: not such a batch, or a value not flat (the caller's path then)."""
    columns = _uniform_columns(pairs, now)
    if columns is None:
        return None
    pieces = _merged_pieces(len(pairs[0][1][_D_ALLOWED]))
    rows = len(pairs)
    laid = [itertools.chain((pieces[0],), itertools.repeat(pieces[-1] + _ROW_SEP + pieces[0],
                                                           rows - 1))]
    for at, column in enumerate(columns):
        texts = _column_texts(column)
        if texts is None:
            return None
        if at:
            laid.append(itertools.repeat(pieces[at], rows))
        laid.append(texts)
    return "".join(itertools.chain.from_iterable(zip(*laid, strict=True))) + pieces[-1]


class RowText:
    """A row's text for `sessions --json`: ``row(kernel, daemon)`` as
    views.stream calls its merge (either may be None; ``now``: the
    daemon's clock), the text of cli/sessions.py ``indented(merged)``
    indented as a row of the listing."""

    def __init__(self, now):
        self.now = now
        # the batches' own age sum for an int clock (or none); any other: row by row
        self._fast = now is None or type(now) is int

    def __call__(self, kernel: tuple | None, daemon: tuple | None) -> str:
        if daemon is None:
            if _FLAT.issuperset(map(type, kernel)):
                return _KERNEL_ONLY % tuple("".join(_VALUES(kernel, 0))[1:-1].split("\n"))
            return self._generic(kernel, daemon)
        if kernel is None:
            kernel = views.kernel_of_daemon(daemon)
        values = [*kernel, *daemon[_SPLICED:], daemon[1]]
        last_rx, now = values[_LAST_RX], self.now
        if now is not None and last_rx is not None:  # views.merged's age, the same sum
            try:
                values[_AGE] = round(max(0, now - last_rx) / 1000, 3)
            except (TypeError, ValueError, OverflowError):  # an odd last receive: as before
                return self._generic(kernel, daemon)
        allowed = _allowed(values[_ALLOWED])
        values[_ALLOWED] = None
        if allowed is None or not _FLAT.issuperset(map(type, values)):
            return self._generic(kernel, daemon)
        parts = "".join(_VALUES(values, 0))[1:-1].split("\n")
        parts[_ALLOWED] = allowed
        return _FULL % tuple(parts)

    def joined(self, kernel: list[tuple], daemon_rows) -> Iterator[str]:
        """views.by_id's merge (each kernel row, by id, with the daemon's
        row of its id, if any; the rest of the daemon's rows read to their
        end), written BATCH_ROWS rows a text (``,\\n    `` between rows):
        one encoder call and one format a batch, not a row (issue 15)."""
        for pairs in _batches(views.by_id(kernel, daemon_rows)):
            yield self.batch(pairs)

    def daemon_only(self, daemon_rows) -> Iterator[str]:
        """The daemon's rows alone (the userspace gate), BATCH_ROWS a text."""
        for rows in _batches(daemon_rows):
            yield self.batch([(None, d) for d in rows])

    def batch(self, pairs: list[tuple]) -> str:
        """The text of these rows, ``,\\n    `` between them: each row's values
        laid in one list for one encoder call, its template (by kind and
        number of allowed IPs) in another, then one format. A row this does
        not lay out (an odd last receive or allowed IPs) is written by
        ``self(kernel, daemon)`` and placed as text; a batch with any value
        not flat is written row by row (the same text, by definition).
        Rows alike are written a column at a time (:func:`_by_columns`)."""
        if not self._fast:
            return _ROW_SEP.join([self(k, d) for k, d in pairs])
        if self.now is not None and (text := _by_columns(pairs, self.now)) is not None:
            return text
        flat: list = []
        templates: list[str] = []
        put, lay, now = templates.append, flat.extend, self.now
        for kernel, daemon in pairs:
            if daemon is None:
                lay(kernel)
                put(_KERNEL_ONLY)
                continue
            allowed, last_rx = daemon[_D_ALLOWED], daemon[_D_LAST_RX]
            if (type(allowed) is not list and allowed is not None) or \
                    (last_rx is not None and type(last_rx) is not int):
                put(self(kernel, daemon).replace("%", "%%"))
                continue
            lay(kernel if kernel is not None else views.kernel_of_daemon(daemon))
            lay(daemon[_SPLICED:_D_ALLOWED])
            if allowed is None:
                put(_merged_template(None))
            else:
                lay(allowed)
                put(_merged_template(len(allowed)))
            lay(daemon[_D_ALLOWED + 1:_D_AGE])
            flat.append(daemon[_D_AGE] if now is None or last_rx is None
                        else round(max(0, now - last_rx) / 1000, 3))
            lay(daemon[_D_AGE + 1:])
            flat.append(daemon[1])
        if not _FLAT.issuperset(map(type, flat)):
            return _ROW_SEP.join([self(k, d) for k, d in pairs])
        values = "".join(_VALUES(flat, 0))[1:-1].split("\n") if flat else ()
        return _ROW_SEP.join(templates) % tuple(values)

    def _generic(self, kernel: tuple | None, daemon: tuple | None) -> str:
        from jvpn_cli.sessions import indented  # noqa: PLC0415 - sessions imports this module

        return indented(views.merged(kernel, daemon, self.now)).replace("\n", ROW_INDENT)
