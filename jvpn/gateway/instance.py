"""One gateway per state directory and per UDP port.

Two gateways on one state directory would own the same sessions (two
writers of one sessions.db, two senders on one counter: nonce reuse); two
on one port (another TUN name, same config) would take each other's
sessions. Either is refused before anything is opened, with one line that
names the holder.

Each claim is an flock(2) on a lock file: ``<StateDir>/gateway.lock``, and
``<run dir>/udp-<port>.netns-<inode>.lock`` for the port (the run dir is
the caller's GatePaths.run_dir, /run/jvpn by default; the network
namespace is part of the name because a port is a port of one namespace:
gateways in two namespaces may both listen on 51900). flock, not a pid
file: the kernel drops the lock when the holder's last descriptor closes,
so a crash (even SIGKILL) never leaves a stale lock, and a recycled pid
cannot fake a live holder. The
file's content only names the holder (pid, config, start time) for the
error message. Lock files are created 0600 (jvpn.files): a user who could
open one could hold a shared lock on it and block every start. They are
never unlinked: unlinking a lock file lets a waiter lock the old inode
while a newcomer locks a new one.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from jvpn.errors import JvpnError
from jvpn.files import open_private, private_dir
from jvpn.gate.paths import DEFAULT_RUN_DIR

STATE_LOCK_NAME = "gateway.lock"
_MAX_HOLDER_BYTES = 4096


class InstanceTaken(JvpnError):
    """Another gateway holds the state directory or the port."""


@dataclass(frozen=True)
class Holder:
    pid: int
    config: str
    started: str  # UTC, ISO 8601

    def __str__(self) -> str:
        return f"pid {self.pid}, config {self.config}, started {self.started}"


def netns_id() -> int:
    """The inode of our network namespace: equal for processes that share it.

    The inode alone, not the cookie too (jvpn/gate/netns.py): a lock means
    something only while held, its holder lives in the namespace and keeps
    it alive, and live namespaces never share an inode, so a held lock never
    names another namespace. A file left by a gone namespace whose inode a
    new one got is merely reused (unheld: free); names with the cookie would
    pile up one file per namespace ever made instead.
    """
    return os.stat("/proc/self/ns/net").st_ino


def port_lock_path(run_dir: Path, port: int) -> Path:
    return Path(run_dir) / f"udp-{port}.netns-{netns_id()}.lock"


class InstanceLock:
    """Held from :meth:`acquire` until :meth:`release` or process exit."""

    def __init__(self, held: list[tuple[int, Path]]):
        self._held = held

    @property
    def paths(self) -> list[Path]:
        return [path for _fd, path in self._held]

    @classmethod
    def acquire(cls, *, state_dir: Path, port: int, config_path: str | Path,
                run_dir: Path | None = None, now: float | None = None) -> InstanceLock:
        """Claim ``state_dir`` and ``port``, or raise :class:`InstanceTaken`
        (or :class:`jvpn.files.UnsafeFile` for a directory others may write)."""
        if run_dir is None:
            # the gate's default (GatePaths); a caller with --run-dir passes its own
            run_dir = DEFAULT_RUN_DIR
        started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))
        holder = Holder(os.getpid(), str(Path(config_path).absolute()), started)
        state_lock = private_dir(Path(state_dir)) / STATE_LOCK_NAME
        port_lock = port_lock_path(private_dir(Path(run_dir)), port)
        lock = cls([])
        try:
            lock._take(state_lock, f"the state directory {state_dir}", holder)
            lock._take(port_lock, f"UDP port {port} in this network namespace", holder)
        except BaseException:
            lock.release()
            raise
        return lock

    def _take(self, path: Path, what: str, holder: Holder) -> None:
        fd = open_private(path, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            current = _read_holder(fd)
            os.close(fd)
            raise InstanceTaken(f"another gateway holds {what}: {current} "
                                f"(lock file {path})") from None
        except BaseException:
            os.close(fd)
            raise
        self._held.append((fd, path))
        _write_holder(fd, holder)

    def release(self) -> None:
        while self._held:
            fd, _path = self._held.pop()
            try:
                os.ftruncate(fd, 0)  # no stale holder for the next reader
            finally:
                os.close(fd)  # drops the flock

    def __enter__(self) -> InstanceLock:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _write_holder(fd: int, holder: Holder) -> None:
    # one write at offset 0, then cut: a reader never sees an empty file
    # unless the holder is just starting
    data = (json.dumps(asdict(holder)) + "\n").encode()
    os.pwrite(fd, data, 0)
    os.ftruncate(fd, len(data))


def _read_holder(fd: int) -> str:
    try:
        raw = json.loads(os.pread(fd, _MAX_HOLDER_BYTES, 0))
        return str(Holder(int(raw["pid"]), str(raw["config"]), str(raw["started"])))
    except (ValueError, KeyError, TypeError, OSError):
        return "holder unknown (it is starting, or wrote no name)"

