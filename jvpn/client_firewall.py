"""The nftables half of a full tunnel, as wg-quick has it:

- the outer socket's mark is copied into conntrack on the way out and back
  onto the replies on the way in, and ``src_valid_mark`` makes the reverse
  path filter use it: with a strict ``rp_filter`` the gateway's replies
  would otherwise be dropped (their reverse route, looked up without the
  mark, points into the tunnel);
- a packet for the client's inner address that arrives on any other
  interface than the TUN is dropped before routing: with everything routed
  into the tunnel, a neighbour on the Wi-Fi must not reach the inner address
  directly (Linux answers for any local address on any interface).

One table per TUN (``jvpn-<tun>``), replaced atomically at up (a killed
client's copy included) and deleted at down. ``src_valid_mark`` is left set
at down, as wg-quick leaves it: another tunnel may rely on it.
"""

from __future__ import annotations

import ipaddress
import re
import subprocess
from collections.abc import Callable

SRC_VALID_MARK = "/proc/sys/net/ipv4/conf/all/src_valid_mark"


class FirewallError(Exception):
    """One line: what nft refused."""


def table_name(tun: str) -> str:
    return f"jvpn-{tun}"


# What the kernel accepts as an interface name is wider (quotes, braces...):
# only these go into nft's text, so a Name can never become nft syntax.
_NFT_SAFE_NAME = re.compile(r"[A-Za-z0-9_.+@-]{1,15}")


def ruleset(tun: str, mark: int, inner: list[str]) -> str:
    """The ``nft -f`` text: replaces the table (``table; delete table;
    table {...}`` is one transaction whether or not it existed)."""
    if not _NFT_SAFE_NAME.fullmatch(tun):
        raise FirewallError(f"TUN name {tun!r}: a full tunnel needs a name of letters, digits "
                            "and _ . + @ - only (it goes into an nftables rule)")
    name = table_name(tun)
    guards = []
    for text in inner:
        addr = ipaddress.ip_address(text)  # an address, nothing else, goes into the text
        ip = "ip6" if addr.version == 6 else "ip"
        guards.append(f'        iifname != "{tun}" {ip} daddr {addr} fib saddr type != local drop')
    return "\n".join([
        f"table inet {name}",
        f"delete table inet {name}",
        f"table inet {name} {{",
        "    chain preraw {",
        "        type filter hook prerouting priority raw; policy accept;",
        *guards,
        "    }",
        "    chain premangle {",
        "        type filter hook prerouting priority mangle; policy accept;",
        "        meta l4proto udp meta mark set ct mark",
        "    }",
        "    chain postmangle {",
        "        type filter hook postrouting priority mangle; policy accept;",
        f"        meta l4proto udp meta mark {mark:#x} ct mark set meta mark",
        "    }",
        "}",
        ""])


def _nft(args: list[str], text: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["nft", *args], input=text, capture_output=True, text=True,
                          timeout=30, check=False)


class MarkFirewall:
    """The table of one TUN; :meth:`undo` is idempotent."""

    def __init__(self, tun: str, nft: Callable[..., subprocess.CompletedProcess] = _nft,
                 sysctl_path: str = SRC_VALID_MARK):
        self.tun, self._nft, self._sysctl = tun, nft, sysctl_path
        self.applied = False

    def apply(self, mark: int, inner: list[str]) -> None:
        text = ruleset(self.tun, mark, inner)  # refused before anything is changed
        try:
            with open(self._sysctl, "w") as f:
                f.write("1")
            out = self._nft(["-f", "-"], text)
        except OSError as e:  # no nft binary, no /proc/sys (not root)
            raise FirewallError(f"full tunnel needs nft (nftables) and root: {e}") from None
        if out.returncode != 0:
            why = " ".join(out.stderr.split())  # one line
            raise FirewallError(f"nft refused the table {table_name(self.tun)}: {why}")
        self.applied = True

    def undo(self) -> list[str]:
        if not self.applied:
            return []
        self.applied = False
        try:
            out = self._nft(["delete", "table", "inet", table_name(self.tun)])
        except OSError as e:
            return [f"nft table inet {table_name(self.tun)}: {e}"]
        if out.returncode != 0 and "No such file" not in out.stderr:
            return [f"nft table inet {table_name(self.tun)}: {out.stderr.strip()}"]
        return []
