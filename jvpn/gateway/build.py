"""The composition root: a Gateway, with its store, gate and event log, from
a GatewayConfig (what `jvpn-xdp gateway up` runs).

Order matters. First the instance lock (one gateway per state directory and
per UDP port: jvpn/gateway/instance.py), before anything else is opened, so
that a second start changes nothing of the running one (not its store, its
maps, its TUN device, its port). Then the gate (with XdpInterface: the
attached program, or a refusal), the store, the event log; the Gateway binds
its socket exclusively (no SO_REUSEADDR) and, with the XDP gate, to the
gate's interface only (jvpn/gateway/listener.py)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TextIO

from jvpn.config import GatewayConfig
from jvpn.config_sources import naming
from jvpn.errors import JvpnError
from jvpn.events import EventLog
from jvpn.files import UnsafeFile
from jvpn.gate.paths import DEFAULT_PATHS, GatePaths
from jvpn.gateway import operator
from jvpn.gateway.capacity import default_max_sessions
from jvpn.gateway.daemon import Gateway
from jvpn.gateway.instance import InstanceLock
from jvpn.gateway.listener import ANY
from jvpn.store import Store


def open_store(cfg: GatewayConfig) -> Store:
    """etcd (a cluster: this gateway registers under its lease) or the
    embedded SQLite store in the state directory."""
    if cfg.store is None:
        from jvpn.store.sqlite import SqliteStore  # noqa: PLC0415

        return SqliteStore(cfg.state_dir / "sessions.db")
    from jvpn.store.etcd import EtcdStore  # noqa: PLC0415 - only clusters need etcd3gw

    store = EtcdStore(*cfg.store, cluster_key=cfg.cluster_key)
    register(store, cfg.node_id, cfg.lease_ttl_s)
    return store


def register(store, node_id: str, ttl_s: int, sleep=time.sleep, monotonic=time.monotonic) -> None:
    """A restart right after a crash finds the old registration until its
    lease runs out: wait that long, not longer."""
    from jvpn.store.etcd import NodeIdTaken  # noqa: PLC0415

    deadline = monotonic() + ttl_s + 1
    while True:
        try:
            store.register_gateway(node_id, ttl_s)
            return
        except NodeIdTaken:
            if monotonic() > deadline:
                raise
            sleep(0.25)


def open_gate(cfg: GatewayConfig, paths: GatePaths = DEFAULT_PATHS):
    """The attached XDP program's maps (pinned under ``paths``), or the same
    checks in the daemon."""
    if cfg.xdp_interface:
        from jvpn.gate.kernel import XdpGate  # noqa: PLC0415

        return XdpGate(cfg.xdp_interface, paths)
    from jvpn.gate.userspace import UserspaceGate  # noqa: PLC0415

    return UserspaceGate()


def limit_sessions(gate, max_sessions: int | None) -> None:
    """MaxSessions: at most what the gate holds (the pinned sessions map's
    max_entries, read by the gate at start); None: that capacity less a
    headroom (jvpn/gateway/capacity.py default_max_sessions), the elements
    a peer that re-handshakes at MaxSessions takes until its confirmation
    ends its old session."""
    if max_sessions is None:
        gate.max_sessions = default_max_sessions(gate.capacity)
        return
    if max_sessions > gate.capacity:
        gate.close()
        raise JvpnError(f"more than the gate holds ({gate.capacity} sessions): "
                        f"lower it, or attach with --max-sessions {max_sessions} "
                        "(jvpn-xdp detach, then attach)")
    gate.max_sessions = max_sessions


def claim_instance(cfg: GatewayConfig, config_path: str | Path,
                   paths: GatePaths = DEFAULT_PATHS) -> InstanceLock:
    """The first step of `gateway up`: this state directory and this port
    are ours until the returned lock is released (or the process ends);
    InstanceTaken (one line naming the holder) if another gateway has either."""
    return InstanceLock.acquire(state_dir=cfg.state_dir, port=cfg.listen_port,
                                config_path=config_path, run_dir=paths.run_dir)


def _naming_store(cfg: GatewayConfig):
    """The key a store failure traces to: Store (etcd) or StateDir (SQLite's file)."""
    if cfg.store is not None:
        return naming(cfg.sources, "Store", f"etcd://{cfg.store[0]}:{cfg.store[1]}")
    return naming(cfg.sources, "StateDir", cfg.state_dir)


def build_gateway(cfg: GatewayConfig, *, tun_name: str, echo: TextIO | None = None,
                  paths: GatePaths = DEFAULT_PATHS) -> Gateway:
    """Everything `gateway up` runs, once :func:`claim_instance` holds the
    lock; the caller starts it, and after stop() closes ``gw.store`` and
    ``gw.events``."""
    # each failure names the key and the config file that set it (or its default)
    with naming(cfg.sources, "XdpInterface", cfg.xdp_interface or "(none)"):
        gate = open_gate(cfg, paths)
    with naming(cfg.sources, "MaxSessions", cfg.max_sessions):
        limit_sessions(gate, cfg.max_sessions)
    with _naming_store(cfg):
        store = open_store(cfg)
    with naming(cfg.sources, "EventsFile", cfg.events_file):
        events = EventLog(cfg.node_id, cfg.events_file, policy_version=cfg.policy.version,
                          echo=echo, max_bytes=cfg.events_max_bytes, keep=cfg.events_keep,
                          summary_interval_ms=cfg.events_summary_interval_s * 1000)
    control = cfg.control_socket or operator.default_path(paths.run_dir)
    # only the operator socket raises these in Gateway(): the UDP port and the TUN
    # are named by their own errors
    with naming(cfg.sources, "ControlSocket", control, (operator.SocketInUse, UnsafeFile)):
        gw = Gateway(private_key=cfg.private_key, listen=(ANY, cfg.listen_port),
                     listen_device=cfg.xdp_interface,
                     address=cfg.address, peers={p.public_key: p for p in cfg.peers},
                     address6=cfg.address6,
                     policy=cfg.policy, store=store, gate=gate, events=events,
                     tun_name=tun_name, cookie_threshold_per_s=cfg.handshakes_per_second,
                     path_mtu=cfg.path_mtu, operator_socket=control)
    # handshakes arriving together share one store commit (jvpn/store/group_commit.py)
    gw.table.group_commit(gw.control, gw.incidents.report)
    return gw
