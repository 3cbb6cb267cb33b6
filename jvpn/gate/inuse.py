"""Whether a running gateway uses a gate: ``<run dir>/<iface>.inuse.lock``.

A gateway with an XdpInterface holds a shared flock(2) on it from the
moment it opens the gate until it closes it (jvpn/gate/kernel.py); `detach`
takes an exclusive one, without waiting, and refuses when it cannot (unless
--force). flock, as jvpn/gateway/instance.py explains: the kernel drops the
lock when the holder's last descriptor closes, so a crashed gateway never
blocks a detach, and a recycled pid cannot fake one. The content names the
holder for the error message only. Shared, not exclusive, because a gate
may serve more than one gateway (one per port it owns). Detach holds its
exclusive lock until it is done: a gateway starting meanwhile is refused
instead of writing into maps that are about to go. The file is created 0600
(a user who could open it could block every detach) and never unlinked
(instance.py: unlinking a lock file splits its waiters).
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from contextlib import contextmanager
from pathlib import Path

from jvpn.errors import JvpnError
from jvpn.files import open_private, private_dir
from jvpn.gate.paths import GatePaths

_MAX_HOLDER_BYTES = 4096


class GateInUse(JvpnError):
    """A gateway uses the gate that is to be detached."""


def lock_path(ifname: str, paths: GatePaths) -> Path:
    return paths.record(ifname, ".inuse.lock")


def _open(ifname: str, paths: GatePaths) -> tuple[int, Path]:
    path = private_dir(paths.run_dir) / lock_path(ifname, paths).name
    return open_private(path, os.O_RDWR), path


class GateUse:
    """The running gateway's hold on its gate: from :meth:`hold` until
    :meth:`release` or process exit."""

    def __init__(self, fd: int):
        self._fd = fd

    @classmethod
    def hold(cls, ifname: str, paths: GatePaths) -> GateUse:
        fd, path = _open(ifname, paths)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise JvpnError(f"the gate on {ifname} is being detached (lock file {path}): "
                            "attach it again, then start the gateway") from None
        except BaseException:
            os.close(fd)
            raise
        started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        data = (json.dumps({"pid": os.getpid(), "started": started}) + "\n").encode()
        os.pwrite(fd, data, 0)  # one write at 0, then cut: never an empty file while held
        os.ftruncate(fd, len(data))
        return cls(fd)

    def release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)  # drops the flock; the content is read only while held
            self._fd = -1


@contextmanager
def exclusive(ifname: str, paths: GatePaths, force: bool = False):
    """Held while detach runs; yields None, or with ``force`` the holder
    of a gateway that uses the gate (it notices the detach and stops);
    GateInUse when one does and not ``force``."""
    fd, path = _open(ifname, paths)
    try:
        holder = None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            if not force:
                raise GateInUse(f"a gateway uses the gate on {ifname} ({holder}; lock "
                                f"file {path}): stop it first, or pass --force (the gateway "
                                "then stops: nothing may pass unchecked)") from None
        yield holder
    finally:
        os.close(fd)


def _holder(fd: int) -> str:
    try:
        raw = json.loads(os.pread(fd, _MAX_HOLDER_BYTES, 0))
        return f"pid {int(raw['pid'])}, started {raw['started']}"
    except (ValueError, KeyError, TypeError, OSError):
        return "holder unknown"
