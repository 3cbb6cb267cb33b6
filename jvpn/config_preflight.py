"""What `gateway check` verifies beyond the loaders, without changing
anything: the places `gateway up` will create or open files in (StateDir,
EventsFile), looked at with stat only, never created, so a check can run
before the first start, as another user, or on a host where the gateway
runs. Each failure is one line naming the key and the file that set it
(jvpn.config_sources.Sources.where); warnings are what `up` would refuse
on this host but may be right for the host the config is meant for."""

from __future__ import annotations

import os
import socket
import stat
from pathlib import Path

from jvpn.config import GatewayConfig
from jvpn.config_sources import Sources, StartError
from jvpn.files import UnsafeFile, check_own_file

# `gateway up` and `client up` run as root (they refuse otherwise): the
# owner their events file must have, whoever runs `check`
DAEMON_UID = 0


def _nearest(path: Path) -> tuple[Path, os.stat_result] | None:
    """The path itself or its nearest ancestor that exists, with its stat."""
    for p in (path, *path.parents):
        try:
            return p, os.stat(p)
        except FileNotFoundError:
            continue
        except NotADirectoryError:
            continue
    return None


def _trusted(uid: int) -> bool:
    return uid in (0, os.geteuid())


def check_state_dir(src: Sources, path: Path) -> None:
    """StateDir: a directory only root (or we) may write, or absent under a
    directory (created 0700 at start)."""
    found = _nearest(path)
    if found is None:
        return
    where, st = found
    if not stat.S_ISDIR(st.st_mode):
        what = "is not a directory" if where == path else f"is under {where}, not a directory"
        raise StartError(f"{src.where('StateDir')}: {path} {what}")
    if where != path:
        return  # created 0700 by `up`
    if not _trusted(st.st_uid):
        raise StartError(f"{src.where('StateDir')}: {path} is owned by uid {st.st_uid}, who "
                         f"can replace the files in it: run `chown root {path}`")
    if st.st_mode & 0o022:
        raise StartError(f"{src.where('StateDir')}: {path} is writable by group or others "
                         f"(mode {stat.S_IMODE(st.st_mode):04o}): run `chmod 700 {path}`")


def check_events_file(src: Sources, path: Path) -> None:
    """EventsFile, as `gateway up` (root) will open it."""
    check_events_path(src.where("EventsFile"), path, DAEMON_UID)


def check_events_path(label: str, path: Path, owner: int) -> None:
    """An events file: absent (created 0600 by ``owner``, its folder a
    directory), or what jvpn.files.open_private takes from a daemon running
    as ``owner``: never a symlink, a regular file of ``owner``'s with one
    link. ``label``: what set the path (``gw.conf:9: EventsFile``)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        found = _nearest(path.parent)
        if found is not None and not stat.S_ISDIR(found[1].st_mode):
            raise StartError(f"{label}: {path}: {found[0]} is not a directory") from None
        return
    except NotADirectoryError:
        raise StartError(f"{label}: {path}: a parent is not a directory") from None
    if stat.S_ISLNK(st.st_mode):
        raise StartError(f"{label}: {path} is a symlink: refused at start (remove it)")
    try:
        check_own_file(path, st, owner)
    except UnsafeFile as e:
        raise StartError(f"{label}: {e} (refused at start)") from None


def warnings(cfg: GatewayConfig) -> list[str]:
    """What `up` would refuse on this host, which may be right elsewhere."""
    out = []
    if cfg.xdp_interface:
        try:
            socket.if_nametoindex(cfg.xdp_interface)
        except OSError:
            out.append(f"{cfg.sources.where('XdpInterface')}: no interface "
                       f"{cfg.xdp_interface} in this network namespace")
    return out


def preflight(cfg: GatewayConfig) -> list[str]:
    """StartError on what would stop `gateway up`; the warnings otherwise."""
    check_state_dir(cfg.sources, cfg.state_dir)
    check_events_file(cfg.sources, cfg.events_file)
    return warnings(cfg)
