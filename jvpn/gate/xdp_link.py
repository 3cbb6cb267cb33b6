"""Taking jvpn's XDP program off a link, and only jvpn's (review R2): the
link's program is removed only if it is the very program pinned at
PIN_ROOT/IFACE/prog. The kernel checks that for us, atomically:
RTM_SETLINK with IFLA_XDP_FD -1, XDP_FLAGS_REPLACE and IFLA_XDP_EXPECTED_FD
(Linux 5.7+) removes the program only while it is the expected one, and
fails with EEXIST otherwise (another program, another mode, or none). So a
program someone put there after taking ours off is never removed, even if
it arrives between our look and our removal.

EEXIST has one more cause (review R4): the kernel refuses to remove a
program from a link whose upper device (a bridge or bond it is a port of, a
VLAN on it) has an XDP program. So after EEXIST the link's program id is
read: if it is still the pinned program's, the removal failed and says so
(the caller keeps the pins and records); only another id (or none) is "not
ours"."""

from __future__ import annotations

import errno
import os
from pathlib import Path

from jvpn.errors import JvpnError

XDP_FLAGS_REPLACE = 1 << 4


def pinned_prog_fd(pins: Path) -> int | None:
    """A descriptor on the program pinned at ``pins``/prog (None: none is
    pinned). The caller closes it."""
    from jvpn.gate import loader  # noqa: PLC0415 - bcc's library, only when needed

    fd = loader._lib().bpf_obj_get(str(Path(pins) / "prog").encode())
    return fd if fd >= 0 else None


def remove_expected(ifname: str, prog_fd: int, mode_flags: list[int]) -> bool:
    """Remove the XDP program ``prog_fd`` from ``ifname`` in whichever of
    ``mode_flags`` it runs: True if it was there and is gone, False if the
    link runs another program or none (nothing is touched then). A
    JvpnError if the kernel refused and the program is still there."""
    from pyroute2 import IPRoute  # noqa: PLC0415
    from pyroute2.netlink.exceptions import NetlinkError  # noqa: PLC0415

    with IPRoute() as ipr:
        index = ipr.link_lookup(ifname=ifname)
        if not index:
            return False
        for flags in mode_flags:
            xdp = {"attrs": [("IFLA_XDP_FD", -1),
                             ("IFLA_XDP_FLAGS", flags | XDP_FLAGS_REPLACE),
                             ("IFLA_XDP_EXPECTED_FD", prog_fd)]}
            try:
                ipr.link("set", index=index[0], IFLA_XDP=xdp)
                return True
            except NetlinkError as e:
                if e.code != errno.EEXIST:  # EEXIST: not ours, or not in this mode
                    raise JvpnError(f"removing the XDP program from {ifname} failed: "
                                    f"{os.strerror(e.code)}") from None
        _refused_if_still_ours(ifname, prog_fd, _link_prog_ids(ipr, index[0]))
    return False


def _link_prog_ids(ipr, index: int) -> set[int]:
    """The ids of the XDP programs on a link, in any mode."""
    links = ipr.get_links(index)
    xdp = links[0].get_attr("IFLA_XDP") if links else None
    if not xdp:
        return set()
    names = ("IFLA_XDP_PROG_ID", "IFLA_XDP_SKB_PROG_ID", "IFLA_XDP_DRV_PROG_ID",
             "IFLA_XDP_HW_PROG_ID")
    return {v for v in (xdp.get_attr(n) for n in names) if v}


def _refused_if_still_ours(ifname: str, prog_fd: int, on_link: set[int]) -> None:
    """Every mode said EEXIST: fine if the program is not on the link; if
    it is, the kernel refused for another reason (an upper device with XDP)."""
    from jvpn.gate import loader  # noqa: PLC0415 - bcc's library, only when needed

    ours = loader.prog_fd_id(prog_fd)
    if ours and ours in on_link:
        raise JvpnError(f"{ifname}: jvpn's XDP program (id {ours}) is still on the link: the "
                        "kernel refused to remove it (EEXIST), most likely because an upper "
                        "device (a bridge or bond it is in, a VLAN on it) has an XDP program; "
                        "remove that one first (pins and records kept)")
