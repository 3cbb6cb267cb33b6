"""The tunnel lab with a host behind the gateway that is not in the inner
network (role ``inet``), and a client whose ``AllowedIPs`` the test chooses:

    client == router == gateway (gw0; gwi0 10.79.0.1/24) ---- inet (inet0 10.79.0.2/24)

The inet host has no route of its own: it answers only what reaches it from
the gateway's address, so a reply proves the gateway's forwarding and
masquerade (``nat_rules``, an nftables ruleset the test gives; the one in
docs/full-tunnel.md)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from jvpn.lab.addresses import (
    CLIENT_INNER,
    CLIENT_INNER6,
    GW_INNER,
    GW_INNER6,
    INET_GW_IF,
    INET_GW_IP,
    INET_IF,
    INET_IP,
    INNER6_PREFIX,
    INNER_PREFIX,
    LAN_PREFIX,
)
from jvpn.lab.running import write_secret
from jvpn.lab.tunnel import TunnelLab


class FullTunnelLab(TunnelLab):
    def __init__(self, tmp: Path, *, allowed_ips: str, nat_rules: str, inner6: bool = False,
                 **kw):
        """``inner6``: the gateway has an inner IPv6 network too, the client its /128."""
        super().__init__(tmp, extra_roles=("inet",), **kw)
        self.nat_rules = nat_rules
        conf = self.tmp / "client.conf"  # its [Peer] section comes last
        write_secret(conf, conf.read_text() + f"AllowedIPs = {allowed_ips}\n")
        if inner6:
            self._inner6()

    def _inner6(self) -> None:
        gw, peers = self.tmp / "gateway.conf", self.tmp / "peers.conf"
        address = f"Address = {GW_INNER}/{INNER_PREFIX}\n"
        assert address in gw.read_text()
        write_secret(gw, gw.read_text().replace(
            address, f"Address = {GW_INNER}/{INNER_PREFIX}, {GW_INNER6}/{INNER6_PREFIX}\n"))
        allowed = f"AllowedIP = {CLIENT_INNER}/32\n"
        assert allowed in peers.read_text()
        peers.write_text(peers.read_text().replace(
            allowed, f"AllowedIPs = {CLIENT_INNER}/32, {CLIENT_INNER6}/128\n"))

    def up(self, before_client=None) -> FullTunnelLab:
        def behind_gateway() -> None:
            self._wire_inet()
            if before_client is not None:
                before_client()
        super().up(before_client=behind_gateway)
        # the TUN's address comes before the routes: wait for the whole of `up`
        log = self.tmp / "client.log"
        try:
            self.wait(lambda: "jvpn client up:" in log.read_text(), "client routes",
                      proc=self.client)
        except BaseException:
            self.down()
            raise
        return self

    def _wire_inet(self) -> None:
        self.lab.veth("gw", INET_GW_IF, f"{INET_GW_IP}/{LAN_PREFIX}", "inet", INET_IF,
                      f"{INET_IP}/{LAN_PREFIX}")
        self.lab.run("gw", "sysctl", "-qw", "net.ipv4.ip_forward=1")
        subprocess.run(self.lab.cmd("gw", "nft", "-f", "-"), input=self.nat_rules, text=True,
                       check=True, capture_output=True, timeout=30)

    # ------------------------------------------------------------ observations
    def rules(self, family: str = "-4") -> list[dict]:
        """The client's policy rules (``ip -j rule``)."""
        return json.loads(self.lab.run("cl", "ip", "-j", family, "rule").stdout or "[]")

    def table(self, table: int, family: str = "-4") -> list[dict]:
        """The client's routes in ``table`` (``ip -j route show table``)."""
        out = self.lab.run("cl", "ip", "-j", family, "route", "show", "table", str(table),
                           check=False)
        return json.loads(out.stdout or "[]") if out.returncode == 0 else []

    def route_get(self, dst: str, *extra: str) -> dict:
        return json.loads(self.lab.run("cl", "ip", "-j", "route", "get", dst, *extra).stdout)[0]

    def nft_table(self, name: str = "jvpn-jvpn0") -> bool:
        """Whether the client's namespace has nftables table ``inet name``."""
        return self.lab.run("cl", "nft", "list", "table", "inet", name,
                            check=False).returncode == 0

    def tun_tx_packets(self, ifname: str = "jvpn0") -> int:
        out = json.loads(self.lab.run("cl", "ip", "-j", "-s", "link", "show", ifname).stdout)
        return out[0]["stats64"]["tx"]["packets"]
