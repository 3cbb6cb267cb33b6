"""In-process clusters for the ownership tests: an etcd, several gateway
daemons (userspace gate: the reference model is the gate) and a client, all
on loopback inside one throwaway network namespace that this thread enters
(threads and the etcd process started from here inherit it)."""

from __future__ import annotations

import ipaddress
import os
import shutil
from contextlib import contextmanager
from dataclasses import replace

import pytest

from jvpn import keys
from jvpn.client import Client
from jvpn.events import EventLog
from jvpn.gate.userspace import UserspaceGate
from jvpn.gateway.daemon import Gateway
from jvpn.lab.addresses import (
    CLIENT_INNER,
    CLUSTER_KIT_BASE_PORT,
    LOOPBACK,
)
from jvpn.lab.etcd import EtcdServer
from jvpn.lab.netns import Lab
from jvpn.lab.wait import wait_until
from jvpn.policy import default_policy
from jvpn.store.etcd import EtcdStore

INNER = ipaddress.IPv4Address(CLIENT_INNER)


class RecordingLog(EventLog):
    """An EventLog that also keeps every event in memory."""

    def __init__(self, node_id: str):
        super().__init__(node_id)
        self.seen: list[dict] = []

    def emit(self, event_type, reason_code, session_id=None, transport=None, **fields):
        self.seen.append({"type": event_type, "reason": reason_code, "sid": session_id,
                          **fields})
        return super().emit(event_type, reason_code, session_id, transport, **fields)

    def has(self, event_type: str, reason: str) -> bool:
        return any(e["type"] == event_type and e["reason"] == reason for e in self.seen)


@contextmanager
def netns():
    """This thread (and what it starts) in a fresh namespace of a one-role
    :class:`Lab` (lo up), removed afterwards (or by the next run after a crash)."""
    lab = Lab(("node",)).up()
    try:
        with lab.inside("node"):
            yield lab.ns("node")
    finally:
        lab.down()


class Cluster:
    def __init__(self, tmp, nodes=("gw-a", "gw-b"), lease_ttl_s: int = 2):
        self.tmp, self.lease_ttl_s = tmp, lease_ttl_s
        self.gw_key, self.client_key = keys.generate_private(), keys.generate_private()
        self.cluster_key = os.urandom(32)
        self.etcd = EtcdServer().start()
        self.gateways: dict[str, Gateway] = {}
        self.ports: dict[str, int] = {}
        self.client: Client | None = None
        for i, node in enumerate(nodes):
            self.start(node, CLUSTER_KIT_BASE_PORT + i)

    def store(self) -> EtcdStore:
        return EtcdStore(self.etcd.host, self.etcd.port, cluster_key=self.cluster_key)

    def start(self, node: str, port: int) -> Gateway:
        store = self.store()
        store.register_gateway(node, self.lease_ttl_s)
        gw = Gateway(private_key=self.gw_key, listen=("127.0.0.1", port),
                     address=ipaddress.IPv4Interface("10.99.0.1/24"),
                     peers={keys.public_from_private(self.client_key): INNER},
                     policy=replace(default_policy(), max_switches_per_min=600,
                                    switch_cooldown_ms=0),
                     store=store, gate=UserspaceGate(), events=RecordingLog(node),
                     tun_name=f"jvt-{node[-1]}{len(self.gateways)}")
        gw.start()
        self.gateways[node], self.ports[node] = gw, port
        return gw

    def crash(self, node: str) -> None:
        """As SIGKILL would leave it: no release, no revoke; the lease runs out."""
        gw = self.gateways.pop(node)
        gw.store._stop.set()  # the keepalive thread stops refreshing; no revoke
        gw.stop()  # threads and sockets; the store and the maps keep everything

    def connect(self, node: str = "gw-a") -> Client:
        c = Client(private_key=self.client_key, gateway_public=keys.public_from_private(
            self.gw_key), endpoint=(LOOPBACK, self.ports[node]), events=RecordingLog("client"),
            keepalive_ms=200)
        c.up(with_tun=False)
        self.client = c
        return c

    def move(self, node: str, timeout_s: float = 5.0) -> None:
        """The client reaches another gateway (new socket, new port) and
        reattaches there; waits for the ACK."""
        c = self.client
        before = c.reattaches
        c.endpoint = (LOOPBACK, self.ports[node])
        c.rebind()
        wait_until(lambda: c.reattaches > before, f"reattach at {node}", timeout_s)

    def close(self) -> None:
        if self.client is not None:
            self.client.down()
        for gw in self.gateways.values():
            gw.stop()
            gw.store.close()
        self.etcd.remove()


def need_etcd() -> None:
    """Skip without etcd; with JVPN_REQUIRE_KERNEL=1 (CI) fail instead."""
    if not shutil.which("etcd"):
        if os.environ.get("JVPN_REQUIRE_KERNEL") == "1":
            pytest.fail("etcd (Debian etcd-server) is missing: sudo make setup")
        pytest.skip("etcd (Debian etcd-server) is not installed")
