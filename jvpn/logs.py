"""The daemons' log lines: Python logging to stderr, one line per record,
in a form journald keeps.

Under systemd, stderr is a stream to the journal and systemd sets
``$JOURNAL_STREAM`` to that stream's ``DEVICE:INODE``. When stderr is that
very stream, each line starts with the syslog priority in angle brackets
(``<6>`` for info: what journald reads with ``SyslogLevelPrefix=yes``, its
default), so ``journalctl -p warning`` filters by level. Otherwise (a
terminal, a file, a pipe) a line is ``level: message``. A message that
holds a newline, a NUL or another control character (an exception's text,
a peer's string) is kept on its one line, the character escaped
(:func:`one_line`): one record is one line either way, and nothing a peer
sends can forge a second record.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping
from typing import TextIO

from jvpn.config import DEFAULT_LOG_LEVEL

LEVELS = ("debug", "info", "warning", "error")
ROOT = "jvpn"  # every product module logs under it (logging.getLogger(__name__))
# syslog priorities (RFC 5424) by Python level
_PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3,
             logging.CRITICAL: 2}


def priority(levelno: int) -> int:
    """The syslog priority of a Python level (a custom level: the next one up)."""
    for level in sorted(_PRIORITY, reverse=True):
        if levelno >= level:
            return _PRIORITY[level]
    return _PRIORITY[logging.DEBUG]


# Control characters as escapes: journald ends a line at NUL as at \n (the
# rest would be a new record, with a priority prefix of the sender's
# choosing), and a terminal obeys ESC and the C1 controls. Tab stays.
_ESCAPES = {c: f"\\x{c:02x}" for c in (*range(0x20), *range(0x7f, 0xa0)) if c != 0x09}
_ESCAPES.update({ord("\\"): "\\\\", ord("\n"): "\\n", ord("\r"): "\\r"})


def one_line(text: str) -> str:
    """``text`` as one line of printable text: a backslash doubled, \\n and
    \\r as those escapes, every other control character but tab (C0, DEL,
    C1) as \\xNN. What a peer or a file put in a message cannot end it."""
    return text.translate(_ESCAPES)


class LineFormatter(logging.Formatter):
    """``level: message``, or ``<N>message`` for the journal."""

    def __init__(self, journal: bool):
        super().__init__()
        self.journal = journal

    def format(self, record: logging.LogRecord) -> str:
        text = record.getMessage()
        if record.exc_info:
            text = f"{text}: {self.formatException(record.exc_info)}"
        text = one_line(text)
        if self.journal:
            return f"<{priority(record.levelno)}>{text}"
        return f"{record.levelname.lower()}: {text}"


class StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time of the record (a test
    runner swaps it), and never raises into the daemon: a closed or broken
    stderr loses the line, not the gateway."""

    def __init__(self):
        super().__init__(sys.stderr)

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 - logging's name
        pass


def journal_stream(stream: TextIO, env: Mapping[str, str]) -> bool:
    """Is ``stream`` the journal's (``$JOURNAL_STREAM`` = its ``dev:ino``)?"""
    want = env.get("JOURNAL_STREAM", "")
    try:
        dev, ino = (int(x) for x in want.split(":"))
        st = os.fstat(stream.fileno())
    except (ValueError, OSError, AttributeError):
        return False  # unset or malformed; or no descriptor (a test's StringIO)
    return (st.st_dev, st.st_ino) == (dev, ino)


def journal_prefix(levelno: int = logging.ERROR) -> str:
    """``<N>`` when stderr is the journal, else "": for the one line a
    command prints itself on the way out (``error: ...``)."""
    return f"<{priority(levelno)}>" if journal_stream(sys.stderr, os.environ) else ""


def setup(level: str = DEFAULT_LOG_LEVEL, env: Mapping[str, str] | None = None) -> logging.Logger:
    """Configure the ``jvpn`` logger once per process (again: replaced, not
    doubled): records at ``level`` and above go to stderr, one line each."""
    if level.lower() not in LEVELS:
        raise ValueError(f"log level {level!r}: one of {', '.join(LEVELS)}")
    env = os.environ if env is None else env
    logger = logging.getLogger(ROOT)
    for old in [h for h in logger.handlers if isinstance(h, StderrHandler)]:
        logger.removeHandler(old)
    handler = StderrHandler()
    handler.setFormatter(LineFormatter(journal_stream(sys.stderr, env)))
    logger.addHandler(handler)
    logger.setLevel(level.upper())
    logger.propagate = False  # one line per record, not one more from the root logger
    return logger
