"""The cyclic garbage collector paused while a bulk of long-lived objects is
made (issue 15): a restart's reconcile (a few objects per session, all
kept) and a listing of every session (two dicts a row, none in a cycle).
Each collection would walk the growing heap again and again for nothing;
reference counting still frees everything that is not in a cycle."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def paused_gc() -> Iterator[None]:
    """Off inside, back as it was after (whatever the block raised)."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()
