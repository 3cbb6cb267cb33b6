"""The one namespace harness of the labs, the tests, the demos and the
benchmarks: :class:`Lab` makes a network namespace per role, veth pairs with
their addresses, routes, and runs commands and opens sockets inside a
namespace; it removes all of it on the way out, and what a crashed run left
(namespaces, BPF pin roots and run dirs of a dead owner) on the way in.
Every address exists only inside namespaces the lab created
(jvpn/lab/addresses.py has them all).

:class:`RoamingLab` is the topology most labs use:

    client ns                 router ns                 gateway ns
    wifi 10.77.1.2/24 ---- r1 10.77.1.254/24
    lte  10.77.2.2/24 ---- r2 10.77.2.254/24 (fwd) r0 10.77.0.254/24 ---- gw0 10.77.0.1/24
    (attacker ns: atk 10.77.3.2/24 ---- r3 10.77.3.254/24)

With ``ipv6=True`` every link also carries an IPv6 /64 (fd00:77:N::/64, the
same host numbers: wifi fd00:77:1::2, router ::fe, gateway fd00:77::1), the
router forwards IPv6 and DAD is off, so the addresses work at once.

The client has two uplinks; the one with the lower metric carries the route to
the gateway, so taking "wifi" down moves the client to "lte" (a new source
address), exactly like a phone leaving Wi-Fi. Namespace names carry a prefix
unique to the lab instance (``jl<pid>x<tag>``); ``Lab.cleanup_stale`` removes
what a crashed run left (only labs whose owning process is gone).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil

from jvpn.lab.addresses import (
    ATTACKER_IP,
    ATTACKER_IP6,
    ATTACKER_ROUTER_IF,
    ATTACKER_ROUTER_IP,
    ATTACKER_ROUTER_IP6,
    GW_IP,
    GW_IP6,
    LAN6_PREFIX,
    LAN_PREFIX,
    LTE_IP,
    ROUTER_GW_IF,
    ROUTER_GW_IP,
    ROUTER_GW_IP6,
    UPLINK_IP6,
    UPLINK_METRIC,
    UPLINK_NET,
    UPLINK_ROUTER_IF,
    UPLINK_ROUTER_IP,
    UPLINK_ROUTER_IP6,
    WIFI_IP,
)

# jl<pid>x<tag>-<role> (a namespace), jl<pid>x<tag>[-<name>] (a pin root, a run dir)
NS_PATTERN = re.compile(r"^jl(\d+)x[0-9a-f]{4}-([a-z0-9]+)$")
SCRATCH_PATTERN = re.compile(r"^jl(\d+)x[0-9a-f]{4}(?:-[a-z0-9-]+)?$")
BPFFS = Path("/sys/fs/bpf")
RUN_BASE = Path(tempfile.gettempdir())


def new_prefix() -> str:
    return f"jl{os.getpid()}x{uuid.uuid4().hex[:4]}"


def socket_in(ns: str, *args) -> socket.socket:
    """A socket created inside network namespace ``ns`` (a socket keeps the
    namespace it was created in; only this thread switches, and back)."""
    with inside(ns):
        return socket.socket(*args)


@contextmanager
def inside(ns: str) -> Iterator[None]:
    """This thread in namespace ``ns`` (and the threads and processes it
    starts meanwhile), then back."""
    from pyroute2.netns import popns, pushns  # noqa: PLC0415

    pushns(ns)
    try:
        yield
    finally:
        popns()


def sh(*args: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(args, check=check, capture_output=True, text=True, timeout=timeout)


def _owner_alive(pid: int) -> bool:
    return psutil.pid_exists(pid)


class Lab:
    """A network namespace per role (``<prefix>-<role>``, loopback up), wired
    by :meth:`wire` (a topology overrides it), and what runs inside them."""

    def __init__(self, roles: tuple[str, ...] = (), *, prefix: str | None = None):
        self.prefix = prefix or new_prefix()
        self._roles = tuple(roles)
        self.procs: list[subprocess.Popen] = []

    @property
    def roles(self) -> list[str]:
        return list(self._roles)

    def ns(self, role: str) -> str:
        return f"{self.prefix}-{role}"

    def pin_root(self, name: str = "") -> Path:
        """A BPF pin root of this lab's own (removed after a crash, see cleanup_stale)."""
        return BPFFS / (f"{self.prefix}-{name}" if name else self.prefix)

    def run_dir(self, name: str = "") -> Path:
        """A jvpn run dir of this lab's own (removed after a crash, see cleanup_stale)."""
        return RUN_BASE / (f"{self.prefix}-{name}" if name else self.prefix)

    # ------------------------------------------------------------ build / tear down
    def up(self) -> Lab:
        self.cleanup_stale()
        try:
            for role in self.roles:
                sh("ip", "netns", "add", self.ns(role))
                self.run(role, "ip", "link", "set", "lo", "up")
            self.wire()
        except BaseException:
            self.down()
            raise
        return self

    def wire(self) -> None:
        """Links, addresses and routes between the namespaces: none here."""

    def veth(self, a_role: str, a_if: str, a_ip: str | None, b_role: str, b_if: str,
             b_ip: str | None) -> None:
        """A veth pair ``a_if`` in ``a_role`` -- ``b_if`` in ``b_role``, up,
        each end with its address ("ip/prefix") when given."""
        sh("ip", "link", "add", a_if, "netns", self.ns(a_role), "type", "veth", "peer", b_if,
           "netns", self.ns(b_role))
        for role, ifname, ip in ((a_role, a_if, a_ip), (b_role, b_if, b_ip)):
            if ip is not None:
                self.run(role, "ip", "addr", "add", ip, "dev", ifname)
            self.run(role, "ip", "link", "set", ifname, "up")

    def route(self, role: str, *spec: str) -> None:
        """``ip route add spec`` in ``role``'s namespace."""
        self.run(role, "ip", "route", "add", *spec)

    def down(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    p.kill()
        for role in self.roles:
            sh("ip", "netns", "del", self.ns(role), check=False)

    def __enter__(self) -> Lab:
        return self.up()

    def __exit__(self, *exc) -> None:
        self.down()

    @staticmethod
    def cleanup_stale() -> None:
        """Namespaces, pin roots and run dirs of labs whose owning process is gone."""
        out = sh("ip", "netns", "list", check=False).stdout
        for line in out.splitlines():
            name = line.split()[0] if line.strip() else ""
            m = NS_PATTERN.match(name)
            if m and not _owner_alive(int(m.group(1))):
                sh("ip", "netns", "del", name, check=False)
        for base in (BPFFS, RUN_BASE):
            for p in base.glob("jl*"):
                m = SCRATCH_PATTERN.match(p.name)
                if m and p.is_dir() and not _owner_alive(int(m.group(1))):
                    shutil.rmtree(p, ignore_errors=True)

    # ------------------------------------------------------------ running things
    def cmd(self, role: str, *args: str) -> list[str]:
        # nsenter, not `ip netns exec`: the latter remounts /sys and hides bpffs
        return ["nsenter", f"--net=/run/netns/{self.ns(role)}", *args]

    def run(self, role: str, *args: str, check: bool = True,
            timeout: float = 60) -> subprocess.CompletedProcess:
        return sh(*self.cmd(role, *args), check=check, timeout=timeout)

    def spawn(self, role: str, *args: str, log: Path | None = None, **kw) -> subprocess.Popen:
        out = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115 - owned by Popen
        p = subprocess.Popen(self.cmd(role, *args), stdout=out, stderr=subprocess.STDOUT, **kw)
        self.procs.append(p)
        return p

    def inside(self, role: str):
        """This thread inside ``role``'s namespace (a context manager)."""
        return inside(self.ns(role))

    def socket(self, role: str, *args) -> socket.socket:
        return socket_in(self.ns(role), *args)

    def mac(self, role: str, ifname: str) -> bytes:
        """The MAC address of ``ifname`` in ``role``'s namespace (for injected frames)."""
        out = self.run(role, "ip", "-j", "link", "show", ifname).stdout
        return bytes.fromhex(json.loads(out)[0]["address"].replace(":", ""))

    def jvpn(self, role: str, *args: str, **kw) -> subprocess.CompletedProcess:
        return self.run(role, *self.jvpn_cmd(*args), **kw)

    @staticmethod
    def jvpn_cmd(*args: str) -> list[str]:
        return [str(Path(sys.executable).with_name("jvpn-xdp")), *args]

    def link(self, role: str, ifname: str, state: str) -> None:
        self.run(role, "ip", "link", "set", ifname, state)


class RoamingLab(Lab):
    """The client (two uplinks), the router, the gateway and (optionally)
    the attacker, as drawn at the top of this module; ``extra_roles`` are
    more namespaces a bigger topology wires itself (the cluster lab)."""

    def __init__(self, *, with_attacker: bool = True, extra_roles: tuple[str, ...] = (),
                 prefix: str | None = None, ipv6: bool = False):
        self.with_attacker, self.ipv6 = with_attacker, ipv6
        super().__init__(("gw", "rt", "cl", *(["atk"] if with_attacker else []), *extra_roles),
                         prefix=prefix)

    def wire(self) -> None:
        if self.ipv6:  # before the links exist: their addresses usable at once
            for role in ("gw", "rt", "cl", *(["atk"] if self.with_attacker else [])):
                self.run(role, "sysctl", "-qw", "net.ipv6.conf.default.accept_dad=0",
                         "net.ipv6.conf.all.accept_dad=0")
        n = LAN_PREFIX
        self.veth("gw", "gw0", f"{GW_IP}/{n}", "rt", ROUTER_GW_IF, f"{ROUTER_GW_IP}/{n}")
        for uplink, ip in (("wifi", WIFI_IP), ("lte", LTE_IP)):
            self.veth("cl", uplink, f"{ip}/{n}", "rt", UPLINK_ROUTER_IF[uplink],
                      f"{UPLINK_ROUTER_IP[uplink]}/{n}")
        if self.with_attacker:
            self.veth("atk", "atk0", f"{ATTACKER_IP}/{n}", "rt", ATTACKER_ROUTER_IF,
                      f"{ATTACKER_ROUTER_IP}/{n}")
            self.route("atk", "default", "via", ATTACKER_ROUTER_IP)
        self.run("rt", "sysctl", "-qw", "net.ipv4.ip_forward=1")
        self.route("gw", "default", "via", ROUTER_GW_IP)
        for uplink in ("wifi", "lte"):
            self.route("cl", "default", "via", UPLINK_ROUTER_IP[uplink], "dev", uplink,
                       "metric", str(UPLINK_METRIC[uplink]))
        if self.ipv6:
            self.wire_ipv6()

    def wire_ipv6(self) -> None:
        """The IPv6 half: an address per link end, the router forwarding,
        default routes as for IPv4 (wifi's metric lower)."""
        def addr(role: str, ip: str, ifname: str) -> None:
            self.run(role, "ip", "-6", "addr", "add", f"{ip}/{LAN6_PREFIX}", "dev", ifname,
                     "nodad")

        addr("gw", GW_IP6, "gw0")
        addr("rt", ROUTER_GW_IP6, ROUTER_GW_IF)
        for uplink in ("wifi", "lte"):
            addr("cl", UPLINK_IP6[uplink], uplink)
            addr("rt", UPLINK_ROUTER_IP6[uplink], UPLINK_ROUTER_IF[uplink])
            self.run("cl", "ip", "-6", "route", "add", "default", "via",
                     UPLINK_ROUTER_IP6[uplink], "dev", uplink, "metric", str(UPLINK_METRIC[uplink]))
        if self.with_attacker:
            addr("atk", ATTACKER_IP6, "atk0")
            addr("rt", ATTACKER_ROUTER_IP6, ATTACKER_ROUTER_IF)
            self.run("atk", "ip", "-6", "route", "add", "default", "via", ATTACKER_ROUTER_IP6)
        self.run("gw", "ip", "-6", "route", "add", "default", "via", ROUTER_GW_IP6)
        self.run("rt", "sysctl", "-qw", "net.ipv6.conf.all.forwarding=1")

    # ------------------------------------------------------------ path MTU
    def narrow_uplink(self, uplink: str, mtu: int, *, icmp_black_hole: bool = True) -> None:
        """The path through ``uplink`` carries datagrams of at most ``mtu``
        bytes, both ways: the uplink and the router's port behind it get that
        MTU (the router refuses a larger DF datagram from the gateway), and
        the router drops a larger one from the client (a veth lets a frame
        somewhat over its MTU through; a real link does not).
        ``gso_max_segs 1``: the client's kernel cuts a UDP GSO send into its
        datagrams before the uplink, as a NIC would, so each one is checked.
        ``icmp_black_hole``: the router sends no ICMP errors (as many real
        paths), so neither end's kernel learns the path MTU and a datagram
        that does not fit is simply lost."""
        router_if = UPLINK_ROUTER_IF[uplink]
        self.run("cl", "ip", "link", "set", uplink, "mtu", str(mtu), "gso_max_segs", "1")
        self.run("rt", "ip", "link", "set", router_if, "mtu", str(mtu))
        icmp = ("  chain noicmp {\n    type filter hook output priority 0;\n"
                "    icmp type { destination-unreachable, time-exceeded } drop\n"
                "    icmpv6 type { packet-too-big, destination-unreachable, time-exceeded } drop\n"
                "  }\n") if icmp_black_hole else ""  # errors only: neighbour discovery works
        rules = (f"table inet jvpnlabmtu{router_if} {{\n  chain mtu {{\n"
                 f"    type filter hook forward priority 0;\n"
                 f'    iifname "{router_if}" meta length > {mtu} drop\n  }}\n{icmp}}}\n')
        subprocess.run(self.cmd("rt", "nft", "-f", "-"), input=rules, text=True,
                       check=True, capture_output=True, timeout=30)

    # ------------------------------------------------------------ NAT
    def nat_on(self, uplinks: tuple[str, ...] = ("wifi", "lte"),
               outs: tuple[str, ...] = (ROUTER_GW_IF,)) -> None:
        """The router masquerades the client's traffic on these uplinks
        towards the gateway(s) (router ports ``outs``) with random source
        ports (nftables), as a carrier NAT would."""
        lines = "\n".join(f'    oifname "{o}" ip saddr {UPLINK_NET[u]} masquerade random'
                          for o in outs for u in uplinks)
        rules = f"""table ip jvpnlab {{
  chain post {{
    type nat hook postrouting priority 100;
{lines}
  }}
}}
"""
        subprocess.run(self.cmd("rt", "nft", "-f", "-"), input=rules, text=True, check=True,
                       capture_output=True, timeout=30)

    def nat_rebind(self) -> None:
        """Forget the NAT mappings: the next packet gets a new source port."""
        self.run("rt", "conntrack", "-D", "-p", "udp", check=False)

