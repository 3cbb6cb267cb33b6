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

import os
import signal
import subprocess
import uuid
from pathlib import Path

from jvpn import keys
from jvpn.lab.addresses import (
    PORT,
    SITES,
    SVC_IP,
    SVC_NET,
    UPLINK_METRIC,
    UPLINK_ROUTER_IP,
    VIP,
)
from jvpn.lab.announcer import RouteAnnouncer
from jvpn.lab.cluster_topology import ClusterWiring, site
from jvpn.lab.etcd import EtcdServer
from jvpn.lab.netns import RoamingLab, sh
from jvpn.lab.running import RunningLab, jvpn_env, lab_policy, read_jsonl, write_secret

CLUSTER_POLICY = lab_policy(max_switches_per_min=600)


# ---------------------------------------------------------------- the lab

class ClusterLab(ClusterWiring, RunningLab):
    log_names = ("gateway-a.log", "gateway-b.log", "client.log")
    stream_sink = ("svc", SVC_IP)  # the backend, through whichever gateway carries the tunnel

    def __init__(self, tmp: Path, *, nat: bool | tuple = False, xdp: bool = True,
                 gateway_extra: dict[str, str] | str | None = None, policy: str = "",
                 attach_extra: tuple[str, ...] = ()):
        """``attach_extra``: more `jvpn-xdp attach` options for both gates
        (e.g. a small ``--max-sessions``)."""
        super().__init__(tmp, RoamingLab(extra_roles=("gwb", "svc")), nat=nat, xdp=xdp)
        self.policy = policy or CLUSTER_POLICY
        self.attach_extra = attach_extra
        # sessions a test wrote to the store itself (no client behind them):
        # ready() and the lab's "one session" ignore them
        self.background: set[int] = set()
        extra = gateway_extra or {}
        self.gateway_extra = ({n: extra for n in SITES} if isinstance(extra, str) else
                              {site(n).name: v for n, v in extra.items()})
        # one pin root and run dir each: pinned maps live in one global bpffs
        tag = uuid.uuid4().hex[:8]
        self._env = {n: jvpn_env(f"/sys/fs/bpf/jvpnc-{tag}-{n}", self.tmp / f"run-{n}")
                     for n in SITES}
        self.cluster_key = os.urandom(32)
        self.mgmt_n: int | None = None
        self.etcd: EtcdServer | None = None
        self.announcer: RouteAnnouncer | None = None
        self._svc_rt = None  # netlink socket in the backend namespace (the announcer's)
        self.gateways: dict[str, subprocess.Popen] = {}

    # ------------------------------------------------------------ addresses
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
            self.nat_on(tuple(s.router_if for s in SITES.values()))
            if self.xdp_on:
                for n in SITES:
                    self._xdp(n, "attach", "gw0", "--port", str(PORT), *self.attach_extra)
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
        steps = [lambda: self.announcer and self.announcer.stop(),
                 lambda: self._svc_rt and self._svc_rt.close()]
        if self.xdp_on:
            # --force: the gateways still run (they hold their gates); lab.down stops them
            steps += [lambda n=n: self._xdp(n, "detach", "gw0", "--force", check=False)
                      for n in SITES]
        steps.append(self.lab.down)  # stops the jvpn processes while etcd still answers them
        steps += [lambda n=n: sh("ip", "link", "del", self.mgmt_if(n), check=False)
                  for n in SITES]
        steps.append(lambda: self.etcd and self.etcd.remove())
        steps += [lambda n=n: self.unpin(self._env[n]["JVPN_PIN_ROOT"]) for n in SITES]
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

    def _install_route(self, addr: str, via: str) -> None:
        """Over a netlink socket opened in the backend's namespace: a routing
        daemon's update takes a millisecond, not a process start."""
        if self._svc_rt is None:
            from pyroute2 import IPRoute  # noqa: PLC0415

            self._svc_rt = IPRoute(netns=self.lab.ns("svc"))
        self._svc_rt.route("replace", dst=f"{addr}/32", gateway=via)

    def _write_configs(self) -> None:
        self.write_shared_configs(self.policy, VIP)
        write_secret(self.tmp / "cluster.key", keys.encode(self.cluster_key) + "\n")
        for n, s in SITES.items():  # the same static key on both: the cluster's identity
            store = (f"Store = etcd://{self.mgmt_root_ip(n)}:{self.etcd.port}\n"
                     "ClusterKeyFile = cluster.key\n")
            self.write_gateway_conf(self.tmp / f"gateway-{n}.conf", self.tmp / f"state-{n}",
                                    s.node_id, store + self.gateway_extra.get(n, ""))

    # ------------------------------------------------------------ jvpn processes
    def _xdp(self, name: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        out = self.jvpn_in(site(name).role, self.env(name), *args)
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
        self.wait(lambda: self._count_started(n) > started, f"gateway {n} start", proc=p)
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

    def ready(self, owner: str = "a", timeout: float = 30.0) -> None:
        """Back to the start of a test whatever the previous one left: every
        gateway running (a dead one restarted, a stopped one continued), the
        client on Wi-Fi, and its one session ATTACHED on ``owner``. So one
        test's failure is reported once, not again by each test after it."""
        assert self.client is not None and self.client.poll() is None, \
            f"the client has exited\n{self.logs()}"
        for n, p in self.gateways.items():
            if p.poll() is None:
                p.send_signal(signal.SIGCONT)  # a no-op unless a test left it stopped
            else:
                self.start_gateway(n)
        self.use_uplink("wifi" if site(owner).name == "a" else "lte")
        node = site(owner).node_id
        self.wait(lambda: self._session_state() == (node, "ATTACHED", self._client_epoch()),
                  f"the session ATTACHED on {node}, the client's switches all answered",
                  timeout)

    def _session_state(self) -> tuple[str, str, int] | None:
        """(owner, state, epoch) of the lab's one session; None while there
        is not exactly one. A handover alone makes the record say ATTACHED on
        the new owner before its switch (challenge, answer) has happened."""
        store = self.store()
        try:
            recs = [r for r in store.list() if r.session_id not in self.background]
        finally:
            store.close()
        return (recs[0].owner, recs[0].state.name, recs[0].epoch) if len(recs) == 1 else None

    def _client_epoch(self) -> int | None:
        """The epoch of the client's last accepted switch (0: none yet); None
        while a request it started later is still unanswered."""
        epoch, waiting = 0, False
        for e in self.client_event_list():
            if e.get("event_type") == "ReattachAttempt":
                waiting = True
            elif e.get("reason_code") == "REATTACH_ACCEPT":
                epoch, waiting = e.get("epoch", epoch), False
        return None if waiting else epoch

    def client_env(self) -> dict:
        return self.env("a")

    def start_client(self) -> subprocess.Popen:
        super().start_client()
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
        self.wait(lambda: self.lab.run("cl", "ip", "route", "replace", "default", "via",
                                       UPLINK_ROUTER_IP["wifi"], "dev", "wifi", "metric",
                                       str(UPLINK_METRIC["wifi"]),
                                       check=False).returncode == 0, "wifi default route",
                  timeout=5)

    # ------------------------------------------------------------ observations
    def cli_json(self, name: str, *args: str):
        return self.cli_json_in(site(name).role, self.env(name), *args)

    def gateway_events(self, name: str) -> list[dict]:
        return read_jsonl(self.events_file(name))

    def store(self):
        """The cluster's store as the gateways see it (from the root namespace)."""
        from jvpn.store.etcd import EtcdStore  # noqa: PLC0415

        return EtcdStore("127.0.0.1", self.etcd.port, cluster_key=self.cluster_key)

    def logs(self) -> str:
        out = super().logs()
        if self.announcer is not None and self.announcer.errors:
            out += f"\n--- announcer errors\n{self.announcer.errors[-5:]}"
        return out
