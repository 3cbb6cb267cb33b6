"""Every address, prefix and port the harness uses: the labs, the demos, the
benchmarks and the namespace tests read them from here and retype none.

Every address below exists only inside namespaces a lab creates (or, for
the cluster's management links, on veths the cluster lab adds to the root
namespace and removes again). jvpn's own UDP port is the product's default
(jvpn/gate/abi.py, which mirrors the C header), never a copy of it.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from jvpn.gate.abi import DEFAULT_PORT

PORT = DEFAULT_PORT  # jvpn's UDP port on every gateway of every lab

# ---------------------------------------------------------------- the roaming lab (netns.Lab)
# client (two uplinks) -- router -- gateway, and an attacker behind the router
LAN_PREFIX = 24
GW_IP, ROUTER_GW_IP = "10.77.0.1", "10.77.0.254"
WIFI_IP, WIFI_ROUTER_IP, WIFI_NET = "10.77.1.2", "10.77.1.254", "10.77.1.0/24"
LTE_IP, LTE_ROUTER_IP, LTE_NET = "10.77.2.2", "10.77.2.254", "10.77.2.0/24"
ATTACKER_IP, ATTACKER_ROUTER_IP, ATTACKER_NET = "10.77.3.2", "10.77.3.254", "10.77.3.0/24"
UPLINK_NET = {"wifi": WIFI_NET, "lte": LTE_NET}
UPLINK_IP = {"wifi": WIFI_IP, "lte": LTE_IP}  # the client's address on each uplink
UPLINK_ROUTER_IP = {"wifi": WIFI_ROUTER_IP, "lte": LTE_ROUTER_IP}
UPLINK_ROUTER_IF = {"wifi": "r1", "lte": "r2"}  # the router's port behind each uplink
UPLINK_METRIC = {"wifi": 10, "lte": 20}  # the lower metric carries the default route
ROUTER_GW_IF, ATTACKER_ROUTER_IF = "r0", "r3"  # the router's ports to the gateway, attacker
# the same links over IPv6 (RoamingLab(ipv6=True)): ULA, one /64 per link
LAN6_PREFIX = 64
GW_IP6, ROUTER_GW_IP6 = "fd00:77::1", "fd00:77::fe"
WIFI_IP6, WIFI_ROUTER_IP6 = "fd00:77:1::2", "fd00:77:1::fe"
LTE_IP6, LTE_ROUTER_IP6 = "fd00:77:2::2", "fd00:77:2::fe"
ATTACKER_IP6, ATTACKER_ROUTER_IP6 = "fd00:77:3::2", "fd00:77:3::fe"
UPLINK_IP6 = {"wifi": WIFI_IP6, "lte": LTE_IP6}
UPLINK_ROUTER_IP6 = {"wifi": WIFI_ROUTER_IP6, "lte": LTE_ROUTER_IP6}
SIDE_GW_IP6, SIDE_ATK_IP6 = "fd00:77:5::1", "fd00:77:5::2"  # a second link, without the gate

# ---------------------------------------------------------------- inside the tunnel
GW_INNER, CLIENT_INNER = "10.99.0.1", "10.99.0.2"
INNER_PREFIX = 24
# IPv6 inside, and a site behind the client (tests/netns/test_inner_addressing_lab.py)
GW_INNER6, CLIENT_INNER6, INNER6_PREFIX = "fd99::1", "fd99::2", 64
SITE_NET, SITE_CLIENT_IP, SITE_HOST_IP = "192.168.50.0/24", "192.168.50.1", "192.168.50.2"
SITE_PREFIX = 24
# inner sources the client's peer does not own: another peer's address, a stranger's
SPOOFED_INNER_SOURCES = ("10.99.0.3", "192.168.60.1")
# the peer a reload puts in the client's place (tests/netns/test_operator_control.py)
OTHER_PEER_INNER = "10.99.0.4"

# ---------------------------------------------------------------- names
# (tests/netns/test_client_dns_hooks.py) only in the client's private /etc
# (jvpn/lab/private_etc.py); .test is reserved (RFC 6761)
GW_HOSTNAME = "gw.jvpn.test"  # the Endpoint host name, in that /etc/hosts: GW_IP
CLIENT_DNS_SEARCH = "corp.jvpn.test"  # the DNS search domain the client config gives
UPLINK_DNS = "192.0.2.53"  # the "DHCP" name server of that /etc/resolv.conf (never asked)

# ---------------------------------------------------------------- behind the gateway (full tunnel)
# a host outside the inner network, linked to the gateway only, with no route of
# its own: a client reaches it through the tunnel and the gateway's masquerade
INET_IP, INET_GW_IP, INET_NET = "10.79.0.2", "10.79.0.1", "10.79.0.0/24"
INET_IF, INET_GW_IF = "inet0", "gwi0"  # its end of the link, the gateway's end
GW_TUN = "jvpn-gw"  # the gateway's TUN device (`gateway up --tun`, default)

# ---------------------------------------------------------------- test_client_routes_netns.py
# a client namespace with one uplink, and addresses beyond it (never on a link)
ROUTES_UP_IP, ROUTES_UP_PEER, ROUTES_ELSEWHERE = "10.201.0.2", "10.201.0.1", "10.202.0.9"
ROUTES_UP6_IP, ROUTES_UP6_PEER, ROUTES_ELSEWHERE6 = "fd20::2", "fd20::1", "fd30::9"
ROUTES_SUBNET = "10.50.0.0/16"  # an AllowedIPs prefix that is not a /0

# ---------------------------------------------------------------- the cluster lab
VIP = "10.77.9.1"  # the anycast address both gateways answer on
SVC_IP, SVC_NET = "10.78.0.1", "10.78.0.0/24"  # the backend behind both gateways
LINK_PREFIX = 30  # the point-to-point links: gateway to backend, gateway to etcd
MGMT_NETS = "10.253"  # 10.253.N.0/29: the two management links of one cluster lab


@dataclass(frozen=True)
class Site:
    """One gateway's place in the cluster lab."""
    name: str         # "a" | "b"
    role: str         # its namespace role in the Lab
    node_id: str
    edge_ip: str      # gw0, towards the router
    router_ip: str    # the router's end of that link
    router_if: str    # the router's port in front of this gateway
    table: int        # the router's table that sends the VIP here
    svc_ip: str       # svc0, towards the backend
    svc_peer_ip: str  # the backend's end of that link
    svc_peer_if: str
    mgmt: int         # offset of its management /30 in 10.253.N.0/29

    @property
    def edge_net(self) -> str:
        return str(ipaddress.ip_interface(f"{self.edge_ip}/{LAN_PREFIX}").network)


SITES = {
    "a": Site("a", "gw", "gw-a", GW_IP, ROUTER_GW_IP, ROUTER_GW_IF, 101,
              "10.78.1.1", "10.78.1.2", "a0", 0),
    "b": Site("b", "gwb", "gw-b", "10.77.4.1", "10.77.4.254", "r4", 102,
              "10.78.2.1", "10.78.2.2", "b0", 4),
}
# source network on the router -> the gateway its VIP traffic lands on
CATCHMENT = {WIFI_NET: "a", LTE_NET: "b", ATTACKER_NET: "a"}



def mgmt_ips(n: int, site: Site) -> tuple[str, str]:
    """(root side, gateway side) of ``site``'s management /30 in 10.253.N.0/29."""
    return f"{MGMT_NETS}.{n}.{site.mgmt + 1}", f"{MGMT_NETS}.{n}.{site.mgmt + 2}"


# ---------------------------------------------------------------- the XDP-only demo
DEMO_GW_IP, DEMO_CL_IP = "10.77.0.1", "10.77.0.2"
DEMO_CL_PORT, DEMO_OTHER_PORT = 40000, 40001  # the bound client port, and a stranger

# ---------------------------------------------------------------- tests/netns/test_attach_netns.py
ATTACH_GW_IP, ATTACH_CL_IP = "10.199.0.1", "10.199.0.2"
ATTACH_PORT, ATTACH_OTHER_PORT = 41900, 41901  # the gate's port, and one it must pass
ATTACH_BOUND_PORT, ATTACH_STRANGER_PORT = 40001, 40002  # a session's binding, another port

# ---------------------------------------------------------------- benchmarks
ECHO_PORT = 7007  # the UDP echo the reattach and handoff probers measure against
STREAM_PORT = 5001  # the hashed TCP stream's first port
REPLAY_SINK_PORT = 7010  # inner UDP the replayed data carries (test_rekey_lab.py)
METRICS_PORT = 9586  # the gateway's MetricsListen (on its namespace's loopback)
WG_GW_IP, WG_CL_IP, WG_NET, WG_PORT = "10.98.0.1", "10.98.0.2", "10.98.0.0/24", 51820
FLOOD_PORTS = (40000, 40001, 40002)  # the attacker's source ports per forged kind
# BPF_PROG_TEST_RUN frames (bench xdp): documentation addresses, never on a link
TESTRUN_CLIENT_IP, TESTRUN_CLIENT_PORT, TESTRUN_GW_IP = "192.0.2.10", 5555, "192.0.2.1"

# ---------------------------------------------------------------- in-process clusters (tests)
LOOPBACK = "127.0.0.1"
CLUSTER_KIT_BASE_PORT = 52000  # node i listens on base + i, on loopback in its namespace
HUNG_STORE_PORT = 2379  # a "store" that accepts and never answers (a start that waits)
