"""Progress of a slow command: a rich status line on stderr when stderr is a
terminal, nothing otherwise (a pipe, a log, a script: the output stays the
command's result only, parsable)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console


@contextmanager
def progress(console: Console, what: str) -> Iterator[Callable[[str], None]]:
    """Yields ``step(stage)``: shows "WHAT: STAGE..." until the block ends."""
    if not console.is_terminal:
        yield lambda _stage: None
        return
    with console.status(f"{what}...") as status:
        yield lambda stage: status.update(f"{what}: {stage}...")
