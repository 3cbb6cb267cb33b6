"""Impairments of one uplink's path, made in the router namespace with
nftables (issue 14, `jvpn-xdp bench failover`): a silent blackhole (Wi-Fi
with no backhaul, a dead NAT mapping: everything dropped, no link or route
event on the client) or random loss (``numgen random``), on the router's
port behind the uplink, both directions, in the forward hook (what the
router itself sends and receives, ARP included, still works: the link
stays up as far as anyone can tell).

The rules live in a table of their own (``inet jvpnbench``), one chain per
router port, so changing one uplink's impairment leaves the other's and the
lab's own tables (NAT, path MTU) alone. :class:`Impairments` is a context
manager: the table goes on exit, after a failure too. Each change is one
``nft -f`` transaction: once the call returns, the rule is in (the moment a
benchmark takes as its t0)."""

from __future__ import annotations

import subprocess
from collections.abc import Callable

from jvpn.lab.addresses import UPLINK_ROUTER_IF

TABLE = "jvpnbench"
PRIORITY = -10  # before any filter the lab adds (the path MTU's, at 0)


def _chain(router_if: str) -> str:
    return f"impair_{router_if}"


def impairment_script(router_if: str, drop_percent: int) -> str:
    """The nft transaction that makes ``router_if`` drop ``drop_percent``
    % of what the router forwards in or out through it (100: all, 0: none,
    the chain then empty)."""
    if not 0 <= drop_percent <= 100:
        raise ValueError(f"drop_percent {drop_percent}: 0..100")
    chain = _chain(router_if)
    out = [f"add table inet {TABLE}",
           f"add chain inet {TABLE} {chain} {{ type filter hook forward priority {PRIORITY}; "
           f"policy accept; }}",
           f"flush chain inet {TABLE} {chain}"]
    if drop_percent:
        # numgen per packet: each direction loses its share independently
        match = "" if drop_percent == 100 else f"numgen random mod 100 < {drop_percent} "
        out += [f'add rule inet {TABLE} {chain} iifname "{router_if}" {match}drop',
                f'add rule inet {TABLE} {chain} oifname "{router_if}" {match}drop']
    return "\n".join(out) + "\n"


def removal_script() -> str:
    return f"delete table inet {TABLE}\n"


def nft_in(lab, role: str = "rt") -> Callable[[str], None]:
    """A runner of nft transactions inside ``role``'s namespace of ``lab``
    (a :class:`jvpn.lab.netns.Lab`); a refused one raises CalledProcessError."""
    def run(script: str) -> None:
        subprocess.run(lab.cmd(role, "nft", "-f", "-"), input=script, text=True, check=True,
                       capture_output=True, timeout=30)
    return run


class Impairments:
    """The impairments of the lab's uplinks, by uplink name ("wifi", "lte").
    ``run(script)`` applies one nft transaction (:func:`nft_in`)."""

    def __init__(self, run: Callable[[str], None]):
        self._run = run
        self.active: dict[str, int] = {}  # uplink -> drop percent in force
        self._made = False

    def set(self, uplink: str, drop_percent: int) -> None:
        """``uplink``'s path drops ``drop_percent`` % from now on (the call
        returns once the rule is in)."""
        self._run(impairment_script(UPLINK_ROUTER_IF[uplink], drop_percent))
        self._made = True
        if drop_percent:
            self.active[uplink] = drop_percent
        else:
            self.active.pop(uplink, None)

    def blackhole(self, uplink: str) -> None:
        self.set(uplink, 100)

    def clear(self, uplink: str) -> None:
        self.set(uplink, 0)

    def close(self) -> None:
        """Remove the table (and every impairment); a namespace already gone
        (the lab went down first) is not an error."""
        if not self._made:
            return
        self._made = False
        self.active.clear()
        try:
            self._run(removal_script())
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired):
            pass

    def __enter__(self) -> Impairments:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
