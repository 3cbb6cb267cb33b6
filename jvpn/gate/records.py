"""The JSON run records next to an attachment: the attachment itself (written
by `jvpn-xdp attach`) and the owners document (written by the gateway daemon).

Records and pins are keyed by interface name, and names are per network
namespace: the attachment names its namespace (netns.py), and a record made
in another namespace is never acted on from here (:meth:`Attachment.foreign`).
"""

from __future__ import annotations

import json
import os
from dataclasses import MISSING, asdict, dataclass, fields
from pathlib import Path

from jvpn.errors import JvpnError, NotAttached
from jvpn.files import open_private, private_dir
from jvpn.gate import abi, ifnames
from jvpn.gate.netns import Netns, name_of, pid_in
from jvpn.gate.paths import GatePaths


class ForeignNamespace(JvpnError):
    """The record belongs to an interface of another network namespace."""


class UnreadableRecord(JvpnError):
    """A record that is not JSON, or lacks a field this version needs: whose
    namespace and program it names cannot be told, so no link is touched."""

    def __init__(self, what: str, advice: str):
        super().__init__(f"{what}: {advice}")
        self.what = what  # without the advice, for a caller that gives its own


def known_fields(cls, raw: object) -> dict:
    """The fields of ``cls`` in a record's JSON: a newer version's extra keys
    are ignored (its record stays readable, and its namespace checked); a
    missing required key or a wrongly typed value is a TypeError."""
    if not isinstance(raw, dict):
        raise TypeError(f"not a JSON object but {type(raw).__name__}")
    out = {}
    for f in fields(cls):
        if f.name not in raw:
            if f.default is MISSING and f.default_factory is MISSING:
                raise TypeError(f"missing key {f.name!r}")
            continue
        _check_type(f.name, raw[f.name], f.type)
        out[f.name] = raw[f.name]
    return out


_TYPES = {"int": int, "str": str, "float": (int, float), "dict": dict, "list[int]": list}


def _check_type(name: str, value: object, annotation: str) -> None:
    want = _TYPES[annotation]
    if isinstance(value, bool) or not isinstance(value, want):
        raise TypeError(f"{name!r} is {type(value).__name__}, not {annotation}")
    if annotation == "list[int]" and not all(type(v) is int for v in value):
        raise TypeError(f"{name!r} is not a list of whole numbers")


def write_record(path: Path, data: dict) -> None:
    """Write a run record whole, as only we may: the run dir checked (0700
    when made here; refused if others may write it: they could plant a
    link), the temp file made 0600 by open() itself and never through a
    symlink, then renamed over the record (readers see the old or the new)."""
    private_dir(path.parent)
    tmp = path.with_suffix(".tmp")  # not *.json: all() never reads a half-written record
    tmp.unlink(missing_ok=True)  # a crash's leftover: the directory is ours alone
    fd = open_private(tmp, os.O_WRONLY | os.O_EXCL)
    with os.fdopen(fd, "w") as f:
        f.write(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


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
    max_sessions: int = abi.DEFAULT_MAX_SESSIONS  # the maps' size (older records: the default)

    @staticmethod
    def path(ifname: str, paths: GatePaths) -> Path:
        return paths.record(ifname, ".json")

    def save(self, paths: GatePaths) -> None:
        write_record(self.path(self.ifname, paths), asdict(self))

    @classmethod
    def load(cls, ifname: str, paths: GatePaths) -> Attachment:
        path = cls.path(ifname, paths)
        try:
            att = cls(**known_fields(cls, json.loads(path.read_text())))
            if att.ifname != ifname:  # its name makes the paths acted on: the file's must do
                raise ValueError(f"it names interface {att.ifname!r}")
            return att
        except FileNotFoundError:
            raise NotAttached(f"jvpn is not attached to {ifname}") from None
        except PermissionError:
            raise JvpnError(f"cannot read {path}: run records are root's (run as root)") from None
        except (ValueError, TypeError) as e:
            raise UnreadableRecord(f"{path} is unreadable ({e})",
                                   f"`jvpn-xdp detach --force {ifname}` removes it and the "
                                   "pins (no link is touched)") from e

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
        if not os.access(paths.run_dir, os.R_OK | os.X_OK):  # else "nothing attached": a lie
            raise JvpnError(f"cannot read the run records in {paths.run_dir}: they are "
                            "root's (run as root)")
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
        return paths.record(ifname, ".owners.json")

    def save(self, ifname: str, paths: GatePaths) -> None:
        write_record(self.path(ifname, paths), asdict(self))

    @classmethod
    def load(cls, ifname: str, paths: GatePaths) -> Owners | None:
        try:
            return cls(**known_fields(cls, json.loads(cls.path(ifname, paths).read_text())))
        except (OSError, ValueError, TypeError):
            return None  # no daemon has run here (yet)
