"""bcc's C side writes to file descriptor 2 (e.g. "bpf: Attaching prog to lo:
Operation not supported") and its Python side raises bare Exceptions that
show interface names as bytes reprs ("device b'lo'"). An operator gets one
clean line instead: the C text is captured and folded into the message."""

from __future__ import annotations

import os
import re
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

_BYTES_REPR = re.compile(r"""\bb(['"])(.*?)\1""")


@contextmanager
def captured_stderr() -> Iterator[list[str]]:
    """Redirect fd 2 for the block; the list holds its non-empty lines after."""
    lines: list[str] = []
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield lines
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            text = tmp.read().decode(errors="replace")
            lines.extend(ln.strip() for ln in text.splitlines() if ln.strip())


def clean(text: str) -> str:
    """``device b'lo'`` -> ``device lo``; one line."""
    return " ".join(_BYTES_REPR.sub(r"\2", text).split())


def one_line(error: BaseException, captured: list[str]) -> str:
    """The exception's text, cleaned, with the captured lines that add to it
    (bcc prints the errno it raises too: that one is left out)."""
    text = clean(str(error)) or type(error).__name__
    tail = text.rsplit(": ", 1)[-1]
    extra = [clean(ln) for ln in captured if not clean(ln).endswith(tail)]
    return "; ".join([text, *extra])
