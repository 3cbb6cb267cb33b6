"""The cluster lab's topology: the links, routes and rules that put two
gateways behind one anycast address, the router's catchments, and the
management links to etcd. A mixin of :class:`jvpn.lab.cluster.ClusterLab`
(``self.lab`` is its :class:`jvpn.lab.netns.RoamingLab`, ``self.mgmt_n`` the
management network it picked)."""

from __future__ import annotations

import os

from jvpn.lab.addresses import (
    CATCHMENT,
    LAN_PREFIX,
    LINK_PREFIX,
    MGMT_NETS,
    SITES,
    SVC_IP,
    UPLINK_NET,
    VIP,
    Site,
    mgmt_ips,
)
from jvpn.lab.netns import sh


def site(name: str) -> Site:
    """"a", "b", "gw-a" or "gw-b"."""
    return SITES[name.removeprefix("gw-")]


class ClusterWiring:
    lab: object
    mgmt_n: int | None

    def mgmt_root_ip(self, name: str) -> str:
        """The root side of a gateway's management link: where its etcd is."""
        return mgmt_ips(self.mgmt_n, site(name))[0]

    def mgmt_ns_ip(self, name: str) -> str:
        return mgmt_ips(self.mgmt_n, site(name))[1]

    def mgmt_if(self, name: str) -> str:
        return f"{self.lab.prefix}{site(name).name}"  # at most 15 characters

    # ------------------------------------------------------------ building
    def _wire(self) -> None:
        L = self.lab
        b = SITES["b"]
        L.veth(b.role, "gw0", f"{b.edge_ip}/{LAN_PREFIX}", "rt", b.router_if,
                f"{b.router_ip}/{LAN_PREFIX}")
        for s in SITES.values():
            L.veth(s.role, "svc0", f"{s.svc_ip}/{LINK_PREFIX}", "svc", s.svc_peer_if,
                    f"{s.svc_peer_ip}/{LINK_PREFIX}")
        L.run("svc", "ip", "addr", "add", f"{SVC_IP}/32", "dev", "lo")
        for s in SITES.values():
            self._wire_gateway(s)
        self._wire_router()
        self._wire_mgmt()
        for role in L.roles:
            self._no_rp_filter(role)

    def _wire_gateway(self, s: Site) -> None:
        run = lambda *a: self.lab.run(s.role, *a)  # noqa: E731
        run("ip", "addr", "add", f"{VIP}/32", "dev", "lo")
        # forwarding for the backend; ARP from gw0's own address, not the VIP
        run("sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv4.conf.all.arp_announce=2")
        # replies leave from the VIP, the address the client (and a NAT's
        # conntrack entry) expects, also towards the router's own address (NAT)
        run("ip", "route", "replace", "default", "via", s.router_ip, "src", VIP)
        run("ip", "route", "replace", s.edge_net, "dev", "gw0", "proto", "kernel", "scope",
            "link", "src", VIP)
        run("ip", "route", "add", f"{SVC_IP}/32", "via", s.svc_peer_ip)

    def _wire_router(self) -> None:
        run = lambda *a: self.lab.run("rt", *a)  # noqa: E731
        for s in SITES.values():
            run("ip", "route", "add", f"{VIP}/32", "via", s.edge_ip, "table", str(s.table))
        # policy routing: the client's source network picks the catchment
        for i, (net, name) in enumerate(CATCHMENT.items()):
            run("ip", "rule", "add", "from", net, "lookup", str(SITES[name].table),
                "priority", str(100 + i))
        run("ip", "route", "add", f"{VIP}/32", "via", SITES["a"].edge_ip)  # anyone else: A

    def set_catchment(self, uplink: str, name: str) -> None:
        """Send the VIP traffic of a client uplink ("wifi"/"lte") to gateway
        ``name``: with both uplinks on one gateway, moving between them is
        a reattach on that gateway, not a handoff (the benchmark's baseline)."""
        net = UPLINK_NET[uplink]
        prio = str(100 + list(CATCHMENT).index(net))
        self.lab.run("rt", "ip", "rule", "del", "from", net, "priority", prio)
        self.lab.run("rt", "ip", "rule", "add", "from", net, "lookup",
                     str(site(name).table), "priority", prio)

    def _wire_mgmt(self) -> None:
        """One veth per gateway to the root namespace, where etcd listens.
        The pair goes away with the gateway's namespace."""
        self.mgmt_n = self._free_mgmt_net()
        for n, s in SITES.items():
            ns = self.lab.ns(s.role)
            sh("ip", "link", "add", self.mgmt_if(n), "type", "veth", "peer", "name", "mgmt",
               "netns", ns)
            sh("ip", "addr", "add", f"{self.mgmt_root_ip(n)}/{LINK_PREFIX}", "dev", self.mgmt_if(n))
            sh("ip", "link", "set", self.mgmt_if(n), "up")
            self.lab.run(s.role, "ip", "addr", "add", f"{self.mgmt_ns_ip(n)}/{LINK_PREFIX}",
                         "dev", "mgmt")
            self.lab.run(s.role, "ip", "link", "set", "mgmt", "up")

    def _free_mgmt_net(self) -> int:
        """N of 10.253.N.0/29, from the lab's prefix, skipping one the root
        namespace already uses (another lab running in parallel)."""
        used = sh("ip", "-4", "-o", "addr", "show").stdout
        start = (os.getpid() + int(self.lab.prefix[-4:], 16)) % 250
        for i in range(250):
            n = (start + i) % 250
            if f" {MGMT_NETS}.{n}." not in used:
                return n
        raise RuntimeError("no free 10.253.N.0/29 for the management links")

    def _no_rp_filter(self, role: str) -> None:
        # the VIP's traffic comes and goes on either router port: no reverse-path
        # check (all, default and every interface: the kernel uses the maximum)
        self.lab.run(role, "sh", "-c", "for f in /proc/sys/net/ipv4/conf/*/rp_filter; "
                                       "do echo 0 > $f; done")
