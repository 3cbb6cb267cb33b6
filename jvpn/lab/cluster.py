"""The cluster lab: two gateways behind one anycast address, an etcd they
share, and a backend the client reaches through its tunnel. Built on
:class:`jvpn.lab.Lab`; every address exists only inside the lab's namespaces,
except the root-side ends of the two management links (etcd runs in the root
namespace).

    client ns             router ns                         gateway A ns (gw)
    wifi 10.77.1.2 --- r1 10.77.1.254  r0 10.77.0.254 --- gw0 10.77.0.1   svc0 10.78.1.1 ---+
    lte  10.77.2.2 --- r2 10.77.2.254                     lo  10.77.9.1 (VIP)               |
    (atk 10.77.3.2 --- r3 10.77.3.254)                    mgmt 10.253.N.2                   |
                                       r4 10.77.4.254 --- gateway B ns (gwb)                |
       from wifi, atk: VIP via A                          gw0 10.77.4.1   svc0 10.78.2.1 -+ |
       from lte:       VIP via B                          lo  10.77.9.1 (VIP)             | |
                                                          mgmt 10.253.N.6                 | |
    backend ns (svc): lo 10.78.0.1 (SVC_IP)   b0 10.78.2.2 -------------------------------+ |
                                              a0 10.78.1.2 ---------------------------------+
    root ns: etcd on 127.0.0.1, and on <prefix>a 10.253.N.1 (A's mgmt peer)
                                    and <prefix>b 10.253.N.5 (B's mgmt peer)

The router sends the VIP to A for sources on Wi-Fi (and the attacker) and to
B for sources on LTE, so taking the client's Wi-Fi down moves it to the other
gateway, like a phone whose new network lands in another anycast catchment.
Both gateways share one static key (the cluster's identity), the peers, the
policy and the cluster key; each has its own node id, state dir, BPF pin root
and run dir. The backend's route back to a client's inner address follows the
session's owner in etcd (:class:`RouteAnnouncer`), as a routing daemon
announcing the owner's /32 would.
"""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import subprocess
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from jvpn import keys
from jvpn.lab.etcd import EtcdServer
from jvpn.lab.netns import (
    CLIENT_INNER,
    GW_INNER,
    PORT,
    Lab,
    lab_policy,
    sh,
    start_stream,
    wait_until,
)

VIP = "10.77.9.1"
SVC_IP, SVC_NET = "10.78.0.1", "10.78.0.0/24"
SESSIONS_PREFIX = "/jvpn/sessions/"
CLUSTER_POLICY = lab_policy(max_switches_per_min=600)


@dataclass(frozen=True)
class Site:
    """One gateway's place in the lab."""
    name: str         # "a" | "b"
    role: str         # its namespace role in the Lab
    node_id: str
    edge_ip: str      # gw0, towards the router
    router_ip: str    # the router's end of that link
    table: int        # the router's table that sends the VIP here
    svc_ip: str       # svc0, towards the backend
    svc_peer_ip: str  # the backend's end of that link
    svc_peer_if: str
    mgmt: int         # offset of its management /30 in 10.253.N.0/29

    @property
    def edge_net(self) -> str:
        return str(ipaddress.ip_interface(f"{self.edge_ip}/24").network)


SITES = {
    "a": Site("a", "gw", "gw-a", "10.77.0.1", "10.77.0.254", 101,
              "10.78.1.1", "10.78.1.2", "a0", 0),
    "b": Site("b", "gwb", "gw-b", "10.77.4.1", "10.77.4.254", 102,
              "10.78.2.1", "10.78.2.2", "b0", 4),
}
# source network on the router -> the gateway its VIP traffic lands on
CATCHMENT = {"10.77.1.0/24": "a", "10.77.2.0/24": "b", "10.77.3.0/24": "a"}


def site(name: str) -> Site:
    """"a", "b", "gw-a" or "gw-b"."""
    return SITES[name.removeprefix("gw-")]


# ---------------------------------------------------------------- the route announcer

class RouteAnnouncer:
    """Installs the backend's route to each ATTACHED session's inner address
    via the gateway that owns it, from the etcd session records: a watch for
    speed, plus a full scan every ``rescan_s`` that also notices a dead etcd
    (and then reconnects) or a watch that missed something (and restarts it).
    Each key's newest mod_revision applied is kept, so an event older than
    what a scan already applied never rolls a route back."""

    def __init__(self, host: str, port: int, install: Callable[[str, str], None],
                 via: dict[str, str], prefix: str = SESSIONS_PREFIX, rescan_s: float = 1.0):
        self.host, self.port, self.prefix = host, port, prefix
        self.install, self.via, self.rescan_s = install, via, rescan_s
        self.announcements: list[tuple[str, str]] = []  # (inner addr, owner), in order
        self.routes: dict[str, str] = {}  # inner addr -> owner it is routed to now
        self.errors: list[str] = []
        self._rev: dict[bytes, int] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="route-announcer", daemon=True)

    @property
    def announced(self) -> int:
        return len(self.announcements)

    def start(self) -> RouteAnnouncer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        import etcd3gw  # noqa: PLC0415 - only the cluster lab needs it

        while not self._stop.is_set():
            try:
                client = etcd3gw.client(host=self.host, port=self.port, timeout=2)
                self._follow(client)
            except Exception as e:  # noqa: BLE001 - any etcd hiccup: reconnect and rescan
                self.errors.append(repr(e)[:300])
                self._stop.wait(0.5)

    def _follow(self, client) -> None:
        """Watch first, then scan: nothing falls between the two."""
        events, cancel = client.watch_prefix(self.prefix)
        drain = threading.Thread(target=self._drain, args=(events,), daemon=True)
        drain.start()
        try:
            first = True
            while not self._stop.is_set():
                fixed = self._scan(client)
                if fixed and not first:
                    return  # the scan had to catch up: the watch may be dead, restart it
                first = False
                self._stop.wait(self.rescan_s)
        finally:
            cancel()
            drain.join(timeout=2)

    def _drain(self, events) -> None:
        for ev in events:  # ends when the watch is cancelled
            kv = ev.get("kv", {})
            if ev.get("type") != "DELETE" and "value" in kv:
                self._apply(kv["key"], kv["value"], int(kv.get("mod_revision", 0)))

    def _scan(self, client) -> bool:
        fixed = False
        for value, meta in client.get_prefix(self.prefix):
            fixed |= self._apply(meta["key"], value, int(meta.get("mod_revision", 0)))
        return fixed

    def _apply(self, key: bytes, value: bytes, rev: int) -> bool:
        """True when this (key, revision) was new."""
        with self._lock:
            if rev <= self._rev.get(key, 0):
                return False
            self._rev[key] = rev
            target = self._target(value)
            if target is not None and self.routes.get(target[0]) != target[1]:
                addr, owner = target
                try:
                    self.install(addr, self.via[owner])
                except Exception as e:  # noqa: BLE001 - retried at the next scan
                    self._rev.pop(key, None)
                    self.errors.append(f"install {addr} via {owner}: {e!r}"[:300])
                    return True
                self.routes[addr] = owner
                self.announcements.append((addr, owner))
            return True

    def _target(self, value: bytes) -> tuple[str, str] | None:
        """(inner addr, owner) when the record says where to route, else None."""
        try:
            rec = json.loads(json.loads(value)["record"])
            addr = str(ipaddress.IPv4Address(rec.get("inner_addr") or ""))
        except (ValueError, KeyError, TypeError):
            return None  # not a routable session record (or not one at all)
        if rec.get("state") != "ATTACHED" or rec.get("owner") not in self.via:
            return None
        return addr, rec["owner"]


# ---------------------------------------------------------------- the lab

class ClusterLab:
    def __init__(self, tmp: Path, *, nat: bool | tuple = False, xdp: bool = True,
                 gateway_extra: dict[str, str] | str | None = None, policy: str = ""):
        self.tmp = Path(tmp)
        self.lab = Lab(extra_roles=("gwb", "svc"))
        self.nat, self.xdp_on, self.policy = nat, xdp, policy or CLUSTER_POLICY
        extra = gateway_extra or {}
        self.gateway_extra = ({n: extra for n in SITES} if isinstance(extra, str) else
                              {site(n).name: v for n, v in extra.items()})
        # one pin root and run dir each: pinned maps live in one global bpffs
        tag = uuid.uuid4().hex[:8]
        self._env = {n: {**os.environ, "JVPN_PIN_ROOT": f"/sys/fs/bpf/jvpnc-{tag}-{n}",
                         "JVPN_RUN_DIR": str(self.tmp / f"run-{n}"), "COLUMNS": "200"}
                     for n in SITES}
        self.cluster_key = os.urandom(32)
        self.client_events = self.tmp / "client-events.jsonl"
        self.mgmt_n: int | None = None
        self.etcd: EtcdServer | None = None
        self.announcer: RouteAnnouncer | None = None
        self._svc_rt = None  # netlink socket in the backend namespace (the announcer's)
        self.gateways: dict[str, subprocess.Popen] = {}
        self.client: subprocess.Popen | None = None

    # ------------------------------------------------------------ addresses
    def mgmt_root_ip(self, name: str) -> str:
        """The root side of a gateway's management link: where its etcd is."""
        return f"10.253.{self.mgmt_n}.{site(name).mgmt + 1}"

    def mgmt_ns_ip(self, name: str) -> str:
        return f"10.253.{self.mgmt_n}.{site(name).mgmt + 2}"

    def mgmt_if(self, name: str) -> str:
        return f"{self.lab.prefix}{site(name).name}"  # at most 15 characters

    def env(self, name: str) -> dict[str, str]:
        return self._env[site(name).name]

    # ------------------------------------------------------------ lifecycle
    def up(self) -> ClusterLab:
        """Namespaces, links, routes, etcd, the announcer and (xdp) the XDP
        gate on both gateways; no jvpn process yet (:meth:`start_all`)."""
        self.lab.up()
        try:
            self._wire()
            # after _wire: etcd binds the root-side management addresses
            self.etcd = EtcdServer(hosts=("127.0.0.1", self.mgmt_root_ip("a"),
                                          self.mgmt_root_ip("b")))
            self.etcd.start()
            self._write_configs()
            self.announcer = RouteAnnouncer(
                "127.0.0.1", self.etcd.port, self._install_route,
                {s.node_id: s.svc_ip for s in SITES.values()}).start()
            if self.nat:
                self.lab.nat_on(*([self.nat] if isinstance(self.nat, tuple) else []),
                                outs=("r0", "r4"))
            if self.xdp_on:
                for n in SITES:
                    self._xdp(n, "attach", "gw0", "--port", str(PORT))
        except BaseException:
            self.down()
            raise
        return self

    def start_all(self) -> ClusterLab:
        for n in SITES:
            self.start_gateway(n)
        self.start_client()
        return self

    def down(self) -> None:
        """Every step runs even when an earlier one fails; the first error is raised."""
        from jvpn.gate.attach import unpin  # noqa: PLC0415 - bcc only when a lab runs

        steps = [lambda: self.announcer and self.announcer.stop(),
                 lambda: self._svc_rt and self._svc_rt.close()]
        if self.xdp_on:
            steps += [lambda n=n: self._xdp(n, "detach", "gw0", check=False) for n in SITES]
        steps.append(self.lab.down)  # stops the jvpn processes while etcd still answers them
        steps += [lambda n=n: sh("ip", "link", "del", self.mgmt_if(n), check=False)
                  for n in SITES]
        steps.append(lambda: self.etcd and self.etcd.remove())
        steps += [lambda n=n: unpin(Path(self._env[n]["JVPN_PIN_ROOT"])) for n in SITES]
        first: BaseException | None = None
        for step in steps:
            try:
                step()
            except BaseException as e:  # noqa: BLE001 - finish tearing down, then raise
                first = first or e
        if first is not None:
            raise first

    def __enter__(self) -> ClusterLab:
        return self.up()

    def __exit__(self, *exc) -> None:
        self.down()

    # ------------------------------------------------------------ building
    def _wire(self) -> None:
        L = self.lab
        L._veth("gwb", "gw0", f"{SITES['b'].edge_ip}/24", "rt", "r4",
                f"{SITES['b'].router_ip}/24")
        for s in SITES.values():
            L._veth(s.role, "svc0", f"{s.svc_ip}/30", "svc", s.svc_peer_if,
                    f"{s.svc_peer_ip}/30")
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
        net = {"wifi": "10.77.1.0/24", "lte": "10.77.2.0/24"}[uplink]
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
            sh("ip", "addr", "add", f"{self.mgmt_root_ip(n)}/30", "dev", self.mgmt_if(n))
            sh("ip", "link", "set", self.mgmt_if(n), "up")
            self.lab.run(s.role, "ip", "addr", "add", f"{self.mgmt_ns_ip(n)}/30", "dev", "mgmt")
            self.lab.run(s.role, "ip", "link", "set", "mgmt", "up")

    def _free_mgmt_net(self) -> int:
        """N of 10.253.N.0/29, from the lab's prefix, skipping one the root
        namespace already uses (another lab running in parallel)."""
        used = sh("ip", "-4", "-o", "addr", "show").stdout
        start = (os.getpid() + int(self.lab.prefix[-4:], 16)) % 250
        for i in range(250):
            n = (start + i) % 250
            if f" 10.253.{n}." not in used:
                return n
        raise RuntimeError("no free 10.253.N.0/29 for the management links")

    def _no_rp_filter(self, role: str) -> None:
        # the VIP's traffic comes and goes on either router port: no reverse-path
        # check (all, default and every interface: the kernel uses the maximum)
        self.lab.run(role, "sh", "-c", "for f in /proc/sys/net/ipv4/conf/*/rp_filter; "
                                       "do echo 0 > $f; done")

    def _install_route(self, addr: str, via: str) -> None:
        """Over a netlink socket opened in the backend's namespace: a routing
        daemon's update takes a millisecond, not a process start."""
        if self._svc_rt is None:
            from pyroute2 import IPRoute  # noqa: PLC0415

            self._svc_rt = IPRoute(netns=self.lab.ns("svc"))
        self._svc_rt.route("replace", dst=f"{addr}/32", gateway=via)

    def _write_configs(self) -> None:
        gp, cp = keys.generate_private(), keys.generate_private()
        t = self.tmp
        (t / "peers.conf").write_text(
            f"[Peer]\nPublicKey = {keys.encode(keys.public_from_private(cp))}\n"
            f"AllowedIP = {CLIENT_INNER}/32\nName = alice\n")
        (t / "policy.toml").write_text(self.policy)
        (t / "cluster.key").write_text(keys.encode(self.cluster_key) + "\n")
        os.chmod(t / "cluster.key", 0o600)
        xdp_line = "XdpInterface = gw0\n" if self.xdp_on else ""
        for n, s in SITES.items():  # the same static key on both: the cluster's identity
            (t / f"gateway-{n}.conf").write_text(
                f"[Interface]\nPrivateKey = {keys.encode(gp)}\nListenPort = {PORT}\n"
                f"Address = {GW_INNER}/24\n{xdp_line}PeersFile = peers.conf\n"
                f"Policy = policy.toml\nStateDir = {t / f'state-{n}'}\nNodeId = {s.node_id}\n"
                f"Store = etcd://{self.mgmt_root_ip(n)}:{self.etcd.port}\n"
                f"ClusterKeyFile = cluster.key\n{self.gateway_extra.get(n, '')}")
        (t / "client.conf").write_text(
            f"[Interface]\nPrivateKey = {keys.encode(cp)}\nName = jvpn0\n"
            f"[Peer]\nPublicKey = {keys.encode(keys.public_from_private(gp))}\n"
            f"Endpoint = {VIP}:{PORT}\nPersistentKeepalive = 300\n")
        for conf in t.glob("*.conf"):  # inline private keys: 0600 or refused
            os.chmod(conf, 0o600)

    # ------------------------------------------------------------ jvpn processes
    def _xdp(self, name: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        out = subprocess.run(self.lab.cmd(site(name).role, *self.lab.jvpn_cmd(*args)),
                             capture_output=True, text=True, env=self.env(name), timeout=60)
        assert not check or out.returncode == 0, f"{name}: {args}: {out.stderr}"
        return out

    def events_file(self, name: str) -> Path:
        return self.tmp / f"state-{site(name).name}" / "events.jsonl"

    def start_gateway(self, name: str) -> subprocess.Popen:
        n = site(name).name
        started = self._count_started(n)  # a restart appends to the same events file
        p = self.lab.spawn(site(n).role, *self.lab.jvpn_cmd(
            "gateway", "up", "--config", str(self.tmp / f"gateway-{n}.conf")),
            log=self.tmp / f"gateway-{n}.log", env=self.env(n))
        self.gateways[n] = p
        self._wait(lambda: self._count_started(n) > started, f"gateway {n} start", p)
        return p

    def _count_started(self, name: str) -> int:
        return sum(e.get("event_type") == "GatewayStarted" for e in self.gateway_events(name))

    def stop_gateway(self, name: str) -> None:
        p = self.gateways[site(name).name]
        p.terminate()
        p.wait(timeout=10)

    def kill_gateway(self, name: str) -> None:
        """SIGKILL: a gateway that dies without cleaning anything up."""
        p = self.gateways[site(name).name]
        p.send_signal(signal.SIGKILL)
        p.wait(timeout=10)

    def start_client(self) -> subprocess.Popen:
        self.client = self.lab.spawn(
            "cl", *self.lab.jvpn_cmd("client", "up", "--config", str(self.tmp / "client.conf"),
                                     "--events-file", str(self.client_events)),
            log=self.tmp / "client.log", env=self.env("a"))
        self._wait(lambda: CLIENT_INNER in self.lab.run("cl", "ip", "-4", "addr", "show",
                                                         check=False).stdout,
                   "client tunnel", self.client)
        # the backend is reached through the tunnel
        self.lab.run("cl", "ip", "route", "replace", SVC_NET, "dev", "jvpn0")
        return self.client

    def use_uplink(self, uplink: str) -> None:
        """"lte": Wi-Fi goes away (the client lands on B); "wifi": it comes
        back and is preferred again (A)."""
        if uplink == "lte":
            self.lab.link("cl", "wifi", "down")
            return
        assert uplink == "wifi", uplink
        self.lab.link("cl", "wifi", "up")
        self._wait(lambda: self.lab.run("cl", "ip", "route", "replace", "default", "via",
                                        "10.77.1.254", "dev", "wifi", "metric", "10",
                                        check=False).returncode == 0, "wifi default route",
                   timeout=5)

    def _wait(self, cond, what: str, proc=None, timeout: float = 30) -> None:
        wait_until(cond, what, proc, timeout, self.logs)

    # ------------------------------------------------------------ traffic
    def stream(self, nbytes: int, seconds: float, port: int = 5001):
        """A TCP stream client -> backend (SVC_IP) through the tunnel and
        whichever gateway carries it; returns a function that waits for it and
        returns (sent, received)."""
        return start_stream(self.lab, ("svc", SVC_IP), nbytes, seconds, port, self.tmp,
                            self.logs)

    # ------------------------------------------------------------ observations
    def cli_json(self, name: str, *args: str):
        out = subprocess.run(self.lab.cmd(site(name).role, *self.lab.jvpn_cmd(*args, "--json")),
                             capture_output=True, text=True, env=self.env(name), timeout=30)
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)

    def gateway_events(self, name: str) -> list[dict]:
        return _jsonl(self.events_file(name))

    def client_event_list(self) -> list[dict]:
        return _jsonl(self.client_events)

    def store(self):
        """The cluster's store as the gateways see it (from the root namespace)."""
        from jvpn.store.etcd import EtcdStore  # noqa: PLC0415

        return EtcdStore("127.0.0.1", self.etcd.port, cluster_key=self.cluster_key)

    def logs(self) -> str:
        out = []
        for name in ("gateway-a.log", "gateway-b.log", "client.log"):
            p = self.tmp / name
            if p.exists():
                out.append(f"--- {name}\n{p.read_text()[-3000:]}")
        if self.announcer is not None and self.announcer.errors:
            out.append(f"--- announcer errors\n{self.announcer.errors[-5:]}")
        return "\n".join(out)


def _jsonl(path: Path) -> list[dict]:
    """The events written so far (a line being written is left for later)."""
    out = []
    for line in path.read_text().splitlines() if path.exists() else []:
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out
