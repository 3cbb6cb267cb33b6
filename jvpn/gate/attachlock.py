"""One attach of an interface name at a time: ``<run dir>/<iface>.attach.lock``.

Two `jvpn-xdp attach eth0` at once (an operator and jvpn-gate@eth0, a double
start) would both pass the "already attached" check, then compile, load and
pin into the one pin directory of that name. ``attach`` holds an exclusive
flock(2) on this file from its check until its record is written; a second
attach waits for the first to finish, then checks again, and is refused
when the first succeeded (it never reaches its own compile or pins). The
name is per run dir, not per namespace, as the pins and records are
(records.py): an attach of that name in another namespace waits too.

flock, as jvpn/gateway/instance.py explains: the kernel drops the lock when
the holder's last descriptor closes, so a crashed attach never blocks the
next. The file is created 0600 (a user who could open it could hold the lock
and block every attach) and never unlinked (unlinking splits its waiters).
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from jvpn.files import open_private, private_dir
from jvpn.gate.paths import GatePaths


def lock_path(ifname: str, paths: GatePaths) -> Path:
    return paths.record(ifname, ".attach.lock")


@contextmanager
def exclusive(ifname: str, paths: GatePaths, on_wait: Callable[[], None]) -> Iterator[bool]:
    """Held while an attach of ``ifname`` runs. Yields whether another attach
    held it first (``on_wait`` is called before waiting for it)."""
    path = private_dir(paths.run_dir) / lock_path(ifname, paths).name
    fd = open_private(path, os.O_RDWR)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            waited = False
        except BlockingIOError:
            on_wait()
            fcntl.flock(fd, fcntl.LOCK_EX)  # the first attach finishes or dies: both end it
            waited = True
        yield waited
    finally:
        os.close(fd)  # drops the lock
