"""Netlink attach and detach of the gate, and removal of its pins."""

from __future__ import annotations

import os
import shutil
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from jvpn import ifname as ifnames
from jvpn.errors import (
    AlreadyAttached,
    JvpnError,
    LoadFailed,
    NoSuchInterface,
    NotAttached,
    NotRoot,
)
from jvpn.files import private_dir
from jvpn.gate import attachlock, inuse, loader, xdp_link
from jvpn.gate.config import GateConfig
from jvpn.gate.loader import BuildOptions, Program, measure_ns_per_jiffy
from jvpn.gate.netns import Netns
from jvpn.gate.paths import DEFAULT_PATHS, GatePaths
from jvpn.gate.quiet import captured_stderr, one_line
from jvpn.gate.records import Attachment, ForeignNamespace, Owners, UnreadableRecord

XDP_FLAGS_SKB_MODE = 1 << 1
XDP_FLAGS_DRV_MODE = 1 << 2
MODES = {"native": XDP_FLAGS_DRV_MODE, "generic": XDP_FLAGS_SKB_MODE}


def require_root() -> None:
    if os.geteuid() != 0:
        raise NotRoot("this needs root (BPF maps and XDP): run it with sudo")


def require_interface(ifname: str) -> int:
    ifnames.check(ifname)
    try:
        return socket.if_nametoindex(ifname)
    except OSError:
        raise NoSuchInterface(f"no such network interface: {ifname!r}") from None


def xdp_prog_id(ifname: str) -> int | None:
    """The id of the XDP program on a link (any mode), from netlink."""
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        links = ipr.get_links(ifname=ifname)
        if not links:
            return None
        xdp = links[0].get_attr("IFLA_XDP")
        if not xdp:
            return None
        return xdp.get_attr("IFLA_XDP_PROG_ID")


Progress = Callable[[str], None]


def _quiet(_stage: str) -> None:
    pass


def attach(ifname: str, config: GateConfig, mode: str = "native",
           options: BuildOptions | None = None, paths: GatePaths = DEFAULT_PATHS,
           progress: Progress = _quiet) -> Attachment:
    """Compile, load, configure and attach the gate to ``ifname``.

    Native (driver) mode first; if the driver refuses, generic (skb) mode,
    with the reason recorded in ``Attachment.note``. ``progress`` hears each
    stage (compiling, loading, attaching, pinning) as it starts.
    """
    require_root()
    ifindex = require_interface(ifname)
    loader.check_max_sessions((options or BuildOptions()).max_sessions)
    if mode not in MODES:
        raise JvpnError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    private_dir(paths.run_dir)  # refused now, not after the program is on the link
    waiting = f"waiting for another attach of {ifname} to finish"
    with attachlock.exclusive(ifname, paths, lambda: progress(waiting)) as waited:
        _require_free(ifname, paths, waited)
        return _attach_free(ifname, ifindex, config, mode, options, paths, progress)


def _attach_free(ifname: str, ifindex: int, config: GateConfig, mode: str,
                 options: BuildOptions | None, paths: GatePaths,
                 progress: Progress) -> Attachment:
    """attach(), the name checked free and held (attachlock) by the caller."""
    options = options or BuildOptions()
    if not config.ns_per_jiffy:
        progress("measuring the kernel tick")
        config = replace(config, ns_per_jiffy=measure_ns_per_jiffy())
    pins = paths.pin_dir(ifname)
    prog = Program(pins, options, progress=progress)
    try:
        with prog.maps() as maps:
            maps.write_config(config.to_abi())
        used, note = _attach_with_fallback(ifname, prog, mode, progress)
        progress("pinning")
        prog._pin("prog", prog.prog_fd)
    except BaseException:
        _unpin(paths, ifname)
        raise
    finally:
        prog.close()
    here = Netns.here()
    att = Attachment(ifname=ifname, ifindex=ifindex, mode=used, ports=list(config.ports),
                     pin_dir=str(pins), replay_bits=options.replay_bits,
                     max_sessions=options.max_sessions,
                     attached_at=time.time(), note=note, netns_inode=here.inode,
                     netns_name=here.name, netns_cookie=here.cookie)
    att.save(paths)
    return att


def _require_free(ifname: str, paths: GatePaths, waited: bool = False) -> None:
    """Refused when the name's record (of any namespace: pins and records
    are keyed by name) or a program on the link exists. ``waited``: another
    attach of the name held attachlock first (its record, if any, is new)."""
    try:
        att = Attachment.load(ifname, paths)
    except NotAttached:
        att = None
    if att is not None and (problem := att.foreign()):
        raise ForeignNamespace(f"{problem}; its pins ({paths.pin_dir(ifname)}) and record "
                               "share this name: to attach an interface of this name here "
                               "too, give this namespace its own --pin-root and --run-dir")
    if waited and att is not None:
        raise AlreadyAttached(f"jvpn is already attached to {ifname} (by another attach "
                              "that finished first)")
    if att is not None or Attachment.path(ifname, paths).exists() or xdp_prog_id(ifname):
        raise AlreadyAttached(f"an XDP program is already attached to {ifname}: detach it first")


def _attach_with_fallback(ifname: str, prog: Program, mode: str,
                          progress: Progress = _quiet) -> tuple[str, str]:
    progress(f"attaching ({mode})")
    try:
        _attach_xdp(ifname, prog, mode)
        return mode, ""
    except LoadFailed as e:
        if mode == "generic":
            raise LoadFailed(f"attaching XDP (generic) to {ifname} failed: {e}") from None
        first = str(e)
    progress("attaching (generic)")
    try:
        _attach_xdp(ifname, prog, "generic")
    except LoadFailed as e:
        raise LoadFailed(f"attaching XDP to {ifname} failed: native: {first}; "
                         f"generic: {e}") from None
    return "generic", f"native mode refused by the driver ({first}); running in generic mode"


def _attach_xdp(ifname: str, prog: Program, mode: str) -> None:
    """bcc's attach, its stderr and bytes reprs folded into one LoadFailed line."""
    bcc = loader._bcc()
    with captured_stderr() as captured:
        try:
            bcc.BPF.attach_xdp(ifname, prog.fn, MODES[mode])
            return
        except Exception as e:  # noqa: BLE001 - bcc raises bare Exception
            error = e
    raise LoadFailed(one_line(error, captured))


@dataclass(frozen=True)
class Detached:
    """What detach did: ``user`` the holder of a gateway that was using the
    gate (with force), ``left`` the id of an XDP program on the link after
    it (not provably jvpn's: kept), ``link_touched`` False when no record
    said which program and namespace were ours (only pins and records went)."""

    user: str | None = None
    left: int | None = None
    link_touched: bool = True


def detach(ifname: str, paths: GatePaths = DEFAULT_PATHS, force: bool = False) -> Detached:
    """Remove the gate from ``ifname``: refused for a record of another
    namespace (always), while a gateway uses the gate and for a missing or
    unreadable record (unless ``force``: then only pins and records go)."""
    require_root()
    ifnames.check(ifname)
    # not while an attach of the name writes its pins and record (attachlock)
    with attachlock.exclusive(ifname, paths, lambda: None):
        att = _record_or_none(ifname, paths, force)
        if att is not None:
            att.require_here()
        with inuse.exclusive(ifname, paths, force) as user:
            if att is not None and _same_interface(ifname, att):
                _remove_program(ifname, att, paths.pin_dir(ifname))
            _forget_files(ifname, paths)
    left = xdp_prog_id(ifname) if _interface_exists(ifname) else None
    return Detached(user=user, left=left, link_touched=att is not None)


def _record_or_none(ifname: str, paths: GatePaths, force: bool) -> Attachment | None:
    """The record; None (with ``force`` only) when it is missing or
    unreadable but pins or a record file are there: whose namespace and
    program they are cannot be told, so no link may be touched."""
    try:
        return Attachment.load(ifname, paths)
    except NotAttached:
        if not paths.pin_dir(ifname).exists():
            raise
        why = (f"jvpn has pins for {ifname} ({paths.pin_dir(ifname)}) but no record "
               f"({Attachment.path(ifname, paths)})")
    except UnreadableRecord as e:
        why = e.what
    if not force:
        raise UnreadableRecord(f"{why}: which program and network namespace are jvpn's "
                               f"cannot be told", f"`jvpn-xdp detach --force {ifname}` "
                               "removes the pins and records only (no link is touched)")
    return None


def forget(ifname: str, paths: GatePaths = DEFAULT_PATHS) -> None:
    """Remove the record and pins of an interface whose network namespace is
    gone (Attachment.orphaned): no link is touched, none of ours is its."""
    require_root()
    private_dir(paths.run_dir)
    att = Attachment.load(ifname, paths)
    if not att.foreign() or not att.orphaned():
        raise JvpnError(f"the network namespace of {ifname}'s record is not gone: not forgotten")
    _forget_files(ifname, paths)


def _forget_files(ifname: str, paths: GatePaths) -> None:
    _unpin(paths, ifname)
    Owners.path(ifname, paths).unlink(missing_ok=True)
    Attachment.path(ifname, paths).unlink(missing_ok=True)


def _same_interface(ifname: str, att: Attachment) -> bool:
    """Whether the link named ``ifname`` here is the one attached: an
    interface deleted and made again (another ifindex) lost the program
    with the old one, and what runs on the new one is not ours to remove."""
    try:
        now = socket.if_nametoindex(ifname)
    except OSError:
        return False
    return not att.ifindex or att.ifindex == now


def _remove_program(ifname: str, att: Attachment, pins: Path) -> None:
    """Take the pinned program off the link (xdp_link.py: only if it is
    that one, atomically); another program there is kept."""
    fd = xdp_link.pinned_prog_fd(pins)
    if fd is None:  # no pinned program: nothing on the link is provably ours
        return
    try:
        order = [att.mode] + [m for m in MODES if m != att.mode]
        xdp_link.remove_expected(ifname, fd, [MODES[m] for m in order if m in MODES])
    finally:
        os.close(fd)


def _interface_exists(ifname: str) -> bool:
    try:
        socket.if_nametoindex(ifname)
        return True
    except OSError:
        return False


def _unpin(paths: GatePaths, ifname: str) -> None:
    """Remove PIN_ROOT/IFACE, and nothing else: the name is checked
    (GatePaths.pin_dir) and so is where the directory really is (a symlink
    planted in the pin root must not lead rmtree elsewhere)."""
    pins = paths.pin_dir(ifname)
    if pins.is_symlink():
        raise JvpnError(f"{pins} is a symlink, not jvpn's pin directory: not removed")
    if not pins.is_dir():
        return
    if pins.resolve().parent != paths.pin_root.resolve():
        raise JvpnError(f"{pins} is not a directory in the pin root {paths.pin_root}: "
                        "not removed")
    shutil.rmtree(pins, ignore_errors=True)


def unpin(pins: Path) -> None:
    """Remove a whole pin directory or root (the labs' clean-up)."""
    if Path(pins).is_dir():
        shutil.rmtree(pins, ignore_errors=True)
