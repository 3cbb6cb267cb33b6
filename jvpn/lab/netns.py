"""The lab: network namespaces and veth pairs for tests, the demo and the
benchmarks. Every address exists only inside namespaces the lab created.

    client ns                 router ns                 gateway ns
    wifi 10.77.1.2/24 ---- r1 10.77.1.254/24
    lte  10.77.2.2/24 ---- r2 10.77.2.254/24 (fwd) r0 10.77.0.254/24 ---- gw0 10.77.0.1/24
    (attacker ns: atk 10.77.3.2/24 ---- r3 10.77.3.254/24)

The client has two uplinks; the one with the lower metric carries the route to
the gateway, so taking "wifi" down moves the client to "lte" (a new source
address), exactly like a phone leaving Wi-Fi. Namespace names carry a prefix
unique to the lab instance; ``Lab.cleanup_stale`` removes what a crashed run
left (only labs whose owning process is gone).
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from jvpn.lab.addresses import (
    ATTACKER_IP,
    ATTACKER_ROUTER_IF,
    ATTACKER_ROUTER_IP,
    GW_IP,
    LAN_PREFIX,
    LTE_IP,
    ROUTER_GW_IF,
    ROUTER_GW_IP,
    UPLINK_METRIC,
    UPLINK_NET,
    UPLINK_ROUTER_IF,
    UPLINK_ROUTER_IP,
    WIFI_IP,
)

NS_PATTERN = re.compile(r"^jl(\d+)x[0-9a-f]{4}-(gw|rt|cl|atk|gwb|svc)$")


def socket_in(ns: str, *args) -> socket.socket:
    """A socket created inside network namespace ``ns`` (a socket keeps the
    namespace it was created in; only this thread switches, and back)."""
    from pyroute2.netns import popns, pushns  # noqa: PLC0415

    pushns(ns)
    try:
        return socket.socket(*args)
    finally:
        popns()


def sh(*args: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(args, check=check, capture_output=True, text=True, timeout=timeout)


@dataclass
class Lab:
    prefix: str = field(default_factory=lambda: f"jl{os.getpid()}x{uuid.uuid4().hex[:4]}")
    with_attacker: bool = True
    procs: list = field(default_factory=list)
    extra_roles: tuple = ()  # more (empty) namespaces, wired by the caller (jvpn/clusterlab.py)

    def ns(self, role: str) -> str:
        return f"{self.prefix}-{role}"

    @property
    def roles(self) -> list[str]:
        return (["gw", "rt", "cl"] + (["atk"] if self.with_attacker else [])
                + list(self.extra_roles))

    # ------------------------------------------------------------ build / tear down
    def up(self) -> Lab:
        self.cleanup_stale()
        try:
            self._build()
        except BaseException:
            self.down()
            raise
        return self

    def _build(self) -> None:
        for role in self.roles:
            sh("ip", "netns", "add", self.ns(role))
            self.run(role, "ip", "link", "set", "lo", "up")
        n = LAN_PREFIX
        self._veth("gw", "gw0", f"{GW_IP}/{n}", "rt", ROUTER_GW_IF, f"{ROUTER_GW_IP}/{n}")
        for uplink, ip in (("wifi", WIFI_IP), ("lte", LTE_IP)):
            self._veth("cl", uplink, f"{ip}/{n}", "rt", UPLINK_ROUTER_IF[uplink],
                       f"{UPLINK_ROUTER_IP[uplink]}/{n}")
        if self.with_attacker:
            self._veth("atk", "atk0", f"{ATTACKER_IP}/{n}", "rt", ATTACKER_ROUTER_IF,
                       f"{ATTACKER_ROUTER_IP}/{n}")
            self.run("atk", "ip", "route", "add", "default", "via", ATTACKER_ROUTER_IP)
        self.run("rt", "sysctl", "-qw", "net.ipv4.ip_forward=1")
        self.run("gw", "ip", "route", "add", "default", "via", ROUTER_GW_IP)
        for uplink in ("wifi", "lte"):
            self.run("cl", "ip", "route", "add", "default", "via", UPLINK_ROUTER_IP[uplink],
                     "dev", uplink, "metric", str(UPLINK_METRIC[uplink]))

    def _veth(self, a_role, a_if, a_ip, b_role, b_if, b_ip) -> None:
        sh("ip", "link", "add", a_if, "netns", self.ns(a_role), "type", "veth", "peer", b_if,
           "netns", self.ns(b_role))
        for role, ifname, ip in ((a_role, a_if, a_ip), (b_role, b_if, b_ip)):
            self.run(role, "ip", "addr", "add", ip, "dev", ifname)
            self.run(role, "ip", "link", "set", ifname, "up")

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
        out = sh("ip", "netns", "list", check=False).stdout
        for line in out.splitlines():
            name = line.split()[0] if line.strip() else ""
            m = NS_PATTERN.match(name)
            if m and not Path(f"/proc/{m.group(1)}").exists():
                sh("ip", "netns", "del", name, check=False)

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

    def socket(self, role: str, *args) -> socket.socket:
        return socket_in(self.ns(role), *args)

    def jvpn(self, role: str, *args: str, **kw) -> subprocess.CompletedProcess:
        return self.run(role, str(Path(sys.executable).with_name("jvpn-xdp")), *args, **kw)

    def jvpn_cmd(self, *args: str) -> list[str]:
        return [str(Path(sys.executable).with_name("jvpn-xdp")), *args]

    def link(self, role: str, ifname: str, state: str) -> None:
        self.run(role, "ip", "link", "set", ifname, state)

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


def mac_of(lab: Lab, role: str, ifname: str) -> bytes:
    """The MAC address of ``ifname`` in ``role``'s namespace (for injected frames)."""
    out = lab.run(role, "ip", "-j", "link", "show", ifname).stdout
    return bytes.fromhex(json.loads(out)[0]["address"].replace(":", ""))

