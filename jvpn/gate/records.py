"""The JSON run records next to an attachment: the attachment itself (written
by `jvpn-xdp attach`) and the owners document (written by the gateway daemon).

Records and pins are keyed by interface name, and names are per network
namespace: the attachment names its namespace (netns.py), and a record made
in another namespace is never acted on from here (:meth:`Attachment.foreign`).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from jvpn.errors import JvpnError, NotAttached
from jvpn.gate import ifnames
from jvpn.gate.netns import Netns, name_of, pid_in
from jvpn.gate.paths import GatePaths


class ForeignNamespace(JvpnError):
    """The record belongs to an interface of another network namespace."""


@dataclass
class Attachment:
    ifname: str
    ifindex: int
    mode: str
    ports: list[int]
    pin_dir: str
    replay_bits: int
    attached_at: float
    note: str = ""
    netns_inode: int = 0  # 0: a record written before namespaces were recorded
    netns_name: str = ""  # its /run/netns name, "init", or "" (unnamed)
    netns_cookie: int = 0  # SO_NETNS_COOKIE; 0: an older record or kernel (the inode decides)

    @staticmethod
    def path(ifname: str, paths: GatePaths) -> Path:
        return paths.run_file(ifname, "json")

    def save(self, paths: GatePaths) -> None:
        paths.run_dir.mkdir(parents=True, exist_ok=True)
        path = self.path(self.ifname, paths)
        tmp = path.with_suffix(".tmp")  # not *.json: all() never reads a half-written record
        tmp.write_text(json.dumps(asdict(self), indent=2) + "\n")
        tmp.replace(path)

    @classmethod
    def load(cls, ifname: str, paths: GatePaths) -> Attachment:
        path = cls.path(ifname, paths)
        try:
            return cls(**json.loads(path.read_text()))
        except FileNotFoundError:
            raise NotAttached(f"jvpn is not attached to {ifname}") from None
        except (ValueError, TypeError) as e:
            raise JvpnError(f"{path} is unreadable ({e}): run detach") from e

    def netns(self) -> Netns | None:
        """The namespace of the interface (its current name if it got one
        since), or None for a record that predates namespaces."""
        if not self.netns_inode:
            return None
        inode, cookie = self.netns_inode, self.netns_cookie
        return Netns(inode, name_of(inode, cookie=cookie) or self.netns_name, cookie)

    def foreign(self, here: Netns | None = None) -> str | None:
        """None when this record's interface is in our namespace (or the
        record does not say); else one line saying where to act on it."""
        ns = self.netns()
        here = here or Netns.here()
        if ns is None or ns.same(here):
            return None
        if ns.inode == here.inode:  # live inodes are unique: the record's namespace died
            there = ("that namespace is gone (this one has its inode now): `jvpn-xdp detach "
                     f"--force {self.ifname}` removes the record and the pins (no link is "
                     "touched)")
        # a name it has now, not had (none when its inode is another namespace's now)
        elif how := Netns(ns.inode, name_of(ns.inode, cookie=ns.cookie), ns.cookie).nsenter():
            there = f"run this command there ({how} jvpn-xdp ...)"
        elif os.geteuid() != 0:  # other users' namespaces cannot be looked into
            there = "run this command as root to learn how to enter it"
        else:
            there = ("it has no name and no process now: if it is gone (and its XDP program "
                     f"with it), `jvpn-xdp detach --force {self.ifname}` removes the record "
                     "and the pins (no link is touched)")
        return f"{self.ifname} is attached in {ns}, not this one ({here}): {there}"

    def orphaned(self) -> bool:
        """Whether the record's namespace looks gone: no /run/netns name and
        no process in it (one held only by an open descriptor or a bind mount
        elsewhere cannot be told from a gone one: hence --force)."""
        inode, cookie = self.netns_inode, self.netns_cookie
        if not inode or os.geteuid() != 0:  # only root sees every process's namespace
            return False
        return not name_of(inode, cookie=cookie) and pid_in(inode, cookie) is None

    def require_here(self) -> None:
        problem = self.foreign()
        if problem is not None:
            raise ForeignNamespace(problem)

    @classmethod
    def all(cls, paths: GatePaths) -> list[Attachment]:
        if not paths.run_dir.is_dir():
            return []
        out = []
        for p in sorted(paths.run_dir.glob("*.json")):
            if p.name.endswith(".owners.json"):
                continue  # the daemon's document, not an attachment
            try:
                out.append(cls.load(ifnames.decode(p.stem), paths))
            except JvpnError:
                continue
        return out


@dataclass
class Owners:
    """Written by the gateway daemon next to the attachment record: its node
    id, its lease (the fence of its own elements) and the owners of its
    standby elements. Read by `jvpn-xdp sessions`."""

    node: str
    lease: int
    remote: dict

    @staticmethod
    def path(ifname: str, paths: GatePaths) -> Path:
        return paths.run_file(ifname, "owners.json")

    def save(self, ifname: str, paths: GatePaths) -> None:
        paths.run_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.path(ifname, paths).with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2) + "\n")
        tmp.replace(self.path(ifname, paths))  # readers see the old or the new file

    @classmethod
    def load(cls, ifname: str, paths: GatePaths) -> Owners | None:
        try:
            return cls(**json.loads(cls.path(ifname, paths).read_text()))
        except (OSError, ValueError, TypeError):
            return None  # no daemon has run here (yet)
