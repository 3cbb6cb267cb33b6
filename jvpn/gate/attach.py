"""Netlink attach and detach of the gate, and removal of its pins."""

from __future__ import annotations

import os
import shutil
import socket
import time
from dataclasses import replace
from pathlib import Path

from jvpn.errors import (
    AlreadyAttached,
    JvpnError,
    LoadFailed,
    NoSuchInterface,
    NotAttached,
    NotRoot,
)
from jvpn.gate import loader
from jvpn.gate.config import GateConfig
from jvpn.gate.loader import BuildOptions, Program, measure_ns_per_jiffy
from jvpn.gate.paths import DEFAULT_PATHS, GatePaths
from jvpn.gate.records import Attachment

XDP_FLAGS_SKB_MODE = 1 << 1
XDP_FLAGS_DRV_MODE = 1 << 2
MODES = {"native": XDP_FLAGS_DRV_MODE, "generic": XDP_FLAGS_SKB_MODE}


def require_root() -> None:
    if os.geteuid() != 0:
        raise NotRoot("this needs root (BPF maps and XDP): run it with sudo")


def require_interface(ifname: str) -> int:
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


def attach(ifname: str, config: GateConfig, mode: str = "native",
           options: BuildOptions | None = None, paths: GatePaths = DEFAULT_PATHS) -> Attachment:
    """Compile, load, configure and attach the gate to ``ifname``.

    Native (driver) mode first; if the driver refuses, generic (skb) mode,
    with the reason recorded in ``Attachment.note``.
    """
    require_root()
    ifindex = require_interface(ifname)
    if mode not in MODES:
        raise JvpnError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    if Attachment.path(ifname, paths).exists() or xdp_prog_id(ifname):
        raise AlreadyAttached(f"an XDP program is already attached to {ifname}: detach it first")
    options = options or BuildOptions()
    if not config.ns_per_jiffy:
        config = replace(config, ns_per_jiffy=measure_ns_per_jiffy())
    pins = paths.pin_dir(ifname)
    prog = Program(pins, options)
    try:
        with prog.maps() as maps:
            maps.write_config(config.to_abi())
        used, note = _attach_with_fallback(ifname, prog, mode)
        prog._pin("prog", prog.prog_fd)
    except BaseException:
        _unpin(pins)
        raise
    finally:
        prog.close()
    att = Attachment(ifname=ifname, ifindex=ifindex, mode=used, ports=list(config.ports),
                     pin_dir=str(pins), replay_bits=options.replay_bits,
                     attached_at=time.time(), note=note)
    att.save(paths)
    return att


def _attach_with_fallback(ifname: str, prog: Program, mode: str) -> tuple[str, str]:
    bcc = loader._bcc()
    try:
        bcc.BPF.attach_xdp(ifname, prog.fn, MODES[mode])
        return mode, ""
    except Exception as e:
        if mode == "generic":
            raise LoadFailed(f"attaching XDP (generic) to {ifname} failed: {e}") from e
        first = str(e)
    try:
        bcc.BPF.attach_xdp(ifname, prog.fn, MODES["generic"])
    except Exception as e:
        raise LoadFailed(f"attaching XDP to {ifname} failed: native: {first}; generic: {e}") from e
    return "generic", f"native mode refused by the driver ({first}); running in generic mode"


def detach(ifname: str, paths: GatePaths = DEFAULT_PATHS) -> None:
    require_root()
    try:
        att = Attachment.load(ifname, paths)
    except NotAttached:
        att = None
    if att is None and not paths.pin_dir(ifname).exists():
        raise NotAttached(f"jvpn is not attached to {ifname}")
    if _interface_exists(ifname):
        bcc = loader._bcc()
        modes = [att.mode] if att else []
        for m in modes + [m for m in MODES if m not in modes]:
            try:
                bcc.BPF.remove_xdp(ifname, MODES[m])
            except Exception:  # noqa: BLE001 - bcc raises bare Exception; try every mode
                continue
        if xdp_prog_id(ifname):
            raise JvpnError(f"an XDP program is still attached to {ifname} after detach "
                            "(not jvpn's?): pins kept; remove it with `ip link set dev "
                            f"{ifname} xdp off`")
    _unpin(paths.pin_dir(ifname))
    Attachment.path(ifname, paths).unlink(missing_ok=True)


def _interface_exists(ifname: str) -> bool:
    try:
        socket.if_nametoindex(ifname)
        return True
    except OSError:
        return False


def _unpin(pins: Path) -> None:
    if pins.is_dir():
        shutil.rmtree(pins, ignore_errors=True)


def unpin(pins: Path) -> None:
    """Remove a pin directory (tests and detach)."""
    _unpin(Path(pins))
