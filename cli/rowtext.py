"""`sessions --json`'s rows as text straight from the kernel's tuple and the
daemon's row (issue 15): one template a kind of row (the keys written once)
and one call of json's C encoder for the row's values, no dict between.
The text is json.dumps(row, indent=2)'s, indented as a row of the listing
(tests/cli/test_rowtext.py compares them): a row this cannot write so (a
value of a type the daemon should not send, a list in a field that has
none) is written by the generic path (cli/views.py ``merged``, then
cli/sessions.py ``indented``), the same text by definition."""

from __future__ import annotations

import json
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


def _allowed(value) -> str | None:
    """A list of flat values as json.dumps with an indent writes it in a row."""
    if value is None:
        return "null"
    if type(value) is not list or not _FLAT.issuperset(map(type, value)):
        return None
    if not value:
        return "[]"
    return "[\n        " + "".join(_LIST(value, 0))[1:-1] + "\n      ]"


class RowText:
    """A row's text for `sessions --json`: ``row(kernel, daemon)`` as
    views.stream calls its merge (either may be None; ``now``: the
    daemon's clock), the text of cli/sessions.py ``indented(merged)``
    indented as a row of the listing."""

    def __init__(self, now):
        self.now = now

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

    def _generic(self, kernel: tuple | None, daemon: tuple | None) -> str:
        from jvpn_cli.sessions import indented  # noqa: PLC0415 - sessions imports this module

        return indented(views.merged(kernel, daemon, self.now)).replace("\n", ROW_INDENT)
