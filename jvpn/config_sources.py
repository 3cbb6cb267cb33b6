"""Where each configuration value came from: the file and line that set it,
or the default. ``gateway check`` prints it next to every value, and the
start path names it in errors that happen after the files loaded (an events
file that cannot be created, a store that cannot be reached), so that every
error an operator sees names the key and the file to fix.

Keys are the config files' own spellings (``EventsFile``, ``PathMTU``);
policy fields are ``section.name`` (``security.replay_window_size``), which
no config key spells, so one mapping holds both."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from jvpn.errors import JvpnError


@dataclass(frozen=True)
class Sources:
    """The config file a configuration was loaded from, and ``key ->
    "FILE:LINE"`` for every key some file set (absent keys: the default);
    a repeatable key (DNS, hooks) is there for its first line and as
    ``Key[n]`` for its n-th (1-based)."""

    path: Path | None = None
    lines: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    # the files that keys name (PeersFile, Policy, PrivateKeyFile, ClusterKeyFile), resolved
    files: Mapping[str, Path] = field(default_factory=lambda: MappingProxyType({}))

    def given(self, key: str) -> str | None:
        """``FILE:LINE`` of the line that set ``key``, or None (its default)."""
        return self.lines.get(key)

    def where(self, key: str) -> str:
        """``FILE:LINE: Key`` when a line set it, else ``FILE: Key (default)``:
        the head of an error about this key's value."""
        at = self.given(key)
        if at is not None:
            return f"{at}: {key}"
        return f"{self.path}: {key} (default)" if self.path else f"{key} (default)"


class StartError(JvpnError):
    """A start-time failure traced to one configuration key (one line)."""


@contextmanager
def naming(sources: Sources, key: str, value: object,
           kinds: tuple[type[Exception], ...] = (OSError, JvpnError)) -> Iterator[None]:
    """Turn an OS or operator error (of ``kinds``) raised while using
    ``key``'s ``value`` into one line that names the key and the file that
    set it (or that it is the default there)."""
    try:
        yield
    except kinds as e:
        if isinstance(e, OSError) and e.errno == errno.EPIPE:
            raise
        if sources.path is not None and str(e).startswith(f"{sources.path}:"):
            raise  # named already, by whoever raised it
        raise StartError(f"{sources.where(key)}: {value}: {describe(e, value)}") from None


def describe(e: Exception, value: object) -> str:
    """An error as the operator reads it: the OS's words, not an errno; the
    file it concerns when that is not ``value`` itself; a folder in the way
    of a file said so (mkdir's "File exists" would not)."""
    if isinstance(e, FileExistsError) and e.filename and not os.path.isdir(e.filename):
        return f"{e.filename} is not a directory"
    if isinstance(e, OSError) and e.strerror:
        other = e.filename is not None and str(e.filename) != str(value)
        return e.strerror + (f" ({e.filename})" if other else "")
    return str(e)

def keyed(sources: Sources, e: Exception) -> str:
    """``e``'s one line headed by the key it traces to (its ``key``
    attribute, if any) and the file and line that set that key (for the
    n-th of a repeated key, its ``index`` attribute: that line). A message
    that begins with the key's name already gets the place only."""
    key, message = getattr(e, "key", None), str(e)
    if not key:
        return message
    index = getattr(e, "index", None)
    at = (sources.given(f"{key}[{index}]") if index else None) or sources.given(key)
    if message.startswith(key):
        return f"{at or sources.path}: {message}"
    return f"{at}: {key}: {message}" if at else f"{sources.where(key)}: {message}"
