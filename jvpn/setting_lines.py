"""Where a config file sets a key, for errors found after loading (a port
taken, a busy TUN): ``FILE:LINE: Key``, or ``FILE: Key (default VALUE)``
when the file leaves it to its default."""

from __future__ import annotations

import re
from pathlib import Path


def key_line(config_path: str | Path, key: str) -> int | None:
    """The line that sets ``key`` in the config file (keys are case-insensitive)."""
    pattern = re.compile(rf"\s*{re.escape(key)}\s*=", re.IGNORECASE)
    try:
        lines = Path(config_path).read_text().splitlines()
    except OSError:
        return None
    for n, line in enumerate(lines, 1):
        if pattern.match(line):
            return n
    return None


def where(config_path: str | Path, key: str, value: object) -> str:
    line = key_line(config_path, key)
    if line is None:
        return f"{config_path}: {key} (default {value})"
    return f"{config_path}:{line}: {key}"
