"""Which network namespace a gate record belongs to.

Interface names and ifindexes are per network namespace, but the pin root
(bpffs, shared by every process in the mount namespace) and the run dir are
not: a record says in which namespace its interface lives, and the commands
act only on records of their own namespace (docs/xdp.md, "Run records").

A namespace is known by the inode of its ``/proc/PID/ns/net`` (stable while
the namespace lives, and unique among live ones; psutil has no namespace
API), by its cookie, and, where one exists, by its name under /run/netns
(``ip netns add NAME``). The inode alone is not enough: the kernel gives a
new namespace the inode of one that died (within seconds, on a quiet host),
so a record of a gone namespace would read as one of the new one's. The
cookie (SO_NETNS_COOKIE, Linux >= 5.14) is a 64-bit number the kernel never
gives twice while it runs. Two identities are the same namespace when the
inodes are equal and, where both have a cookie, the cookies are too; a
record or kernel without a cookie (0) is compared by inode, as before.
Reading the cookie of a namespace other than ours means entering it
(setns, in a thread of its own): root only; without it, the inode decides.
"""

from __future__ import annotations

import ctypes
import os
import socket
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import psutil

NETNS_NAMES = Path("/run/netns")  # where `ip netns add` bind-mounts named namespaces
INIT_NAME = "init"  # the host's namespace (that of pid 1)
SO_NETNS_COOKIE = getattr(socket, "SO_NETNS_COOKIE", 71)  # Python < 3.13 lacks the name
CLONE_NEWNET = 0x40000000


def inode_of(path: str | Path) -> int | None:
    try:
        return os.stat(path).st_ino
    except OSError:
        return None


def current_inode() -> int:
    """The inode of this thread's network namespace (a lab thread may be in
    another than the process's: the cookie is read from this thread too)."""
    return os.stat("/proc/thread-self/ns/net").st_ino


def current_cookie() -> int:
    """The cookie of this thread's network namespace; 0 on a kernel without
    SO_NETNS_COOKIE (< 5.14)."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            raw = s.getsockopt(socket.SOL_SOCKET, SO_NETNS_COOKIE, 8)
    except OSError:
        return 0
    return int.from_bytes(raw, sys.byteorder)


def cookie_at(path: str | Path) -> int | None:
    """The cookie of the namespace at ``path`` (/proc/PID/ns/net, /run/netns/
    NAME), or None when it cannot be read (not root, gone, no cookies).
    setns moves only the calling thread: a thread of its own, then it ends."""
    got: list[int] = []

    def probe() -> None:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return
        try:
            if ctypes.CDLL(None, use_errno=True).setns(fd, CLONE_NEWNET) == 0:
                got.append(current_cookie())
        finally:
            os.close(fd)

    thread = threading.Thread(target=probe, name="jvpn-netns-cookie", daemon=True)
    thread.start()
    thread.join()
    return got[0] if got and got[0] else None


def _is_it(path: str | Path, cookie: int) -> bool:
    """Whether the namespace at ``path``, whose inode is the one sought, is
    the one with ``cookie``: only a cookie read and different says no (a
    cookie unknown on either side leaves it to the inode)."""
    if not cookie:
        return True
    theirs = cookie_at(path)
    return theirs is None or theirs == cookie


def name_of(inode: int, names: Path = NETNS_NAMES, cookie: int = 0) -> str:
    """``init`` for pid 1's namespace, the /run/netns name of a named one,
    "" when it has neither (a container's, a test's unnamed namespace) or
    when the namespace with that inode now is another one (``cookie``)."""
    if inode_of("/proc/1/ns/net") == inode:
        return INIT_NAME if _is_it("/proc/1/ns/net", cookie) else ""
    try:
        entries = sorted(os.listdir(names))
    except OSError:
        return ""
    for entry in entries:
        if inode_of(names / entry) == inode:  # live inodes are unique: one namespace
            return entry if _is_it(names / entry, cookie) else ""
    return ""


def pid_in(inode: int, cookie: int = 0) -> int | None:
    """A process living in namespace ``inode`` (for `nsenter --target`), or
    None (also when the namespace with that inode now is another one)."""
    for proc in psutil.process_iter():
        path = f"/proc/{proc.pid}/ns/net"
        if inode_of(path) != inode:
            continue
        theirs = cookie_at(path) if cookie else None
        if theirs is None:  # no cookie to compare, or the process just left
            return proc.pid
        return proc.pid if theirs == cookie else None  # one inode: one namespace
    return None


@dataclass(frozen=True)
class Netns:
    inode: int
    name: str = ""
    cookie: int = 0  # 0: unknown (a record from before cookies, a kernel < 5.14)

    @classmethod
    def here(cls) -> Netns:
        inode = current_inode()
        return cls(inode, name_of(inode), current_cookie())

    def same(self, other: Netns) -> bool:
        """The same namespace: equal inodes, and equal cookies where both have one."""
        if self.inode != other.inode:
            return False
        return not (self.cookie and other.cookie) or self.cookie == other.cookie

    def __str__(self) -> str:
        named = f"{self.name} " if self.name else ""
        cookie = f", cookie {self.cookie}" if self.cookie else ""
        return f"network namespace {named}(inode {self.inode}{cookie})"

    def nsenter(self) -> str:
        """How to run a command in this namespace, or "" when nothing tells."""
        if self.name == INIT_NAME:
            return "nsenter --net=/proc/1/ns/net"
        if self.name:
            return f"nsenter --net={NETNS_NAMES / self.name}"
        pid = pid_in(self.inode, self.cookie)
        return f"nsenter --target {pid} --net" if pid else ""
