"""Which network namespace a gate record belongs to.

Interface names and ifindexes are per network namespace, but the pin root
(bpffs, shared by every process in the mount namespace) and the run dir are
not: a record says in which namespace its interface lives, and the commands
act only on records of their own namespace (docs/xdp.md, "Run records").

A namespace is known by the inode of its ``/proc/PID/ns/net`` (the kernel's
id, stable while the namespace lives; psutil has no namespace API) and, where
one exists, by its name under /run/netns (``ip netns add NAME``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import psutil

NETNS_NAMES = Path("/run/netns")  # where `ip netns add` bind-mounts named namespaces
INIT_NAME = "init"  # the host's namespace (that of pid 1)


def inode_of(path: str | Path) -> int | None:
    try:
        return os.stat(path).st_ino
    except OSError:
        return None


def current_inode() -> int:
    """The inode of this process's network namespace."""
    return os.stat("/proc/self/ns/net").st_ino


def name_of(inode: int, names: Path = NETNS_NAMES) -> str:
    """``init`` for pid 1's namespace, the /run/netns name of a named one,
    "" when it has neither (a container's, a test's unnamed namespace)."""
    if inode_of("/proc/1/ns/net") == inode:
        return INIT_NAME
    try:
        entries = sorted(os.listdir(names))
    except OSError:
        return ""
    for entry in entries:
        if inode_of(names / entry) == inode:
            return entry
    return ""


def pid_in(inode: int) -> int | None:
    """A process living in namespace ``inode`` (for `nsenter --target`), or None."""
    for proc in psutil.process_iter():
        if inode_of(f"/proc/{proc.pid}/ns/net") == inode:
            return proc.pid
    return None


@dataclass(frozen=True)
class Netns:
    inode: int
    name: str = ""

    @classmethod
    def here(cls) -> Netns:
        inode = current_inode()
        return cls(inode, name_of(inode))

    def __str__(self) -> str:
        named = f"{self.name} " if self.name else ""
        return f"network namespace {named}(inode {self.inode})"

    def nsenter(self) -> str:
        """How to run a command in this namespace, or "" when nothing tells."""
        if self.name == INIT_NAME:
            return "nsenter --net=/proc/1/ns/net"
        if self.name:
            return f"nsenter --net={NETNS_NAMES / self.name}"
        pid = pid_in(self.inode)
        return f"nsenter --target {pid} --net" if pid else ""
