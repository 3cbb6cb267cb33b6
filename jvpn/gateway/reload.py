"""Reload without restart (SIGHUP, `jvpn-xdp gateway reload`): re-read the
gateway config, its peers file and its policy, validate all of it as `gateway
up` does, and apply the peers and the policy at once
(:meth:`jvpn.gateway.operator_actions.OperatorActions.apply_config`), or
refuse and keep the old configuration: a ``ReloadRefused`` event, one line
on stderr, and the `reload` operation's error.

A reload applies the peers file and the policy only. Any other key (the
port, the state directory, the store, the keys...) is read at start; a
reload that changes one is refused, naming the key, rather than half applied
or silently ignored. The policy's ``security.replay_window_size`` sizes
windows that live as long as their sessions: it changes with a restart only.
"""

from __future__ import annotations

import dataclasses
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from jvpn.codes import EventType, Reason
from jvpn.config import GatewayConfig, load_gateway_config
from jvpn.errors import JvpnError
from jvpn.policy import PolicyError

RELOADED = ("peers", "policy")  # GatewayConfig fields a reload applies
# the config key of a GatewayConfig field (a field not named here: its own name)
KEYS = {"private_key": "PrivateKey", "listen_port": "ListenPort", "address": "Address",
        "address6": "Address", "xdp_interface": "XdpInterface", "state_dir": "StateDir",
        "node_id": "NodeId", "events_file": "EventsFile",
        "handshakes_per_second": "HandshakesPerSecond", "store": "Store",
        "cluster_key": "ClusterKeyFile", "lease_ttl_s": "LeaseTTL",
        "events_max_bytes": "EventsMaxBytes", "events_keep": "EventsKeep",
        "events_summary_interval_s": "EventsSummaryInterval", "path_mtu": "PathMTU",
        "control_socket": "ControlSocket", "metrics_listen": "MetricsListen",
        "metrics_peers": "MetricsPeers", "max_sessions": "MaxSessions"}
RESTART_ONLY_POLICY = ("replay_window_size",)


class ReloadRefused(JvpnError):
    """The new configuration is not valid or not reloadable: nothing changed."""


def restart_only_changes(old: GatewayConfig, new: GatewayConfig, path: Path) -> str | None:
    """The one line naming the first key a reload cannot apply, or None."""
    for f in dataclasses.fields(old):
        if f.name in RELOADED or not f.compare:  # not compared: where a value came from
            continue
        if getattr(old, f.name) != getattr(new, f.name):
            key = KEYS.get(f.name, f.name)
            return (f"{path}: {key}: changed, and only a restart applies it "
                    "(a reload applies PeersFile and Policy)")
    for name in RESTART_ONLY_POLICY:
        if getattr(old.policy, name) != getattr(new.policy, name):
            return (f"{path}: Policy: security.{name}: changed, and only a restart applies it "
                    "(it sizes the live sessions' replay windows)")
    return None


class Reloader:
    """One reload at a time, from a signal or the operator socket."""

    def __init__(self, gw, config_path: str | Path, cfg: GatewayConfig,
                 load: Callable[[Path], GatewayConfig] = load_gateway_config,
                 say: Callable[[str], None] | None = None, notify=None):
        """``notify``: told when a reload begins and ends, applied or
        refused (``notify_reloading()`` / ``notify_ready()``: systemd's
        Type=notify-reload protocol, jvpn/sdnotify.py)."""
        self.gw, self.path, self.cfg, self.load = gw, Path(config_path), cfg, load
        self.say = say or (lambda line: print(line, file=sys.stderr, flush=True))
        self.notify = notify
        self._lock = threading.Lock()

    def reload(self) -> dict:
        """The summary of what changed; ReloadRefused (one line) if nothing did."""
        with self._lock:
            if self.notify is not None:
                self.notify.notify_reloading("reloading peers and policy")
            try:
                return self._reload()
            finally:
                if self.notify is not None:
                    self.notify.notify_ready("running")

    def _reload(self) -> dict:
        new = self._load()
        why = restart_only_changes(self.cfg, new, self.path)
        if why is not None:
            self._refuse(why)
        try:
            applied = self.gw.apply_config(new.peers, new.policy)
        except Exception as e:  # noqa: BLE001 - raised before it changed anything
            self._refuse(f"{self.path}: not applied: {_one_line(e)}")
        self.cfg = dataclasses.replace(self.cfg, peers=new.peers, policy=new.policy)
        result = dataclasses.asdict(applied)
        self.gw.events.emit(EventType.GATEWAY_RELOADED, Reason.OK, config=str(self.path),
                            peers=len(new.peers), **result)
        self.say(f"jvpn gateway: reloaded {self.path}: {summary(result)}")
        return result

    def _load(self) -> GatewayConfig:
        """The new configuration, or a refusal: whatever the files hold
        (a policy nested past the parser's recursion limit included)."""
        try:
            return self.load(self.path)
        except (JvpnError, PolicyError, OSError, ValueError) as e:
            self._refuse(str(e))
        except Exception as e:  # noqa: BLE001 - an operator's edit must not end the daemon
            self._refuse(f"{self.path}: cannot be read: {_one_line(e)}")
        raise AssertionError("unreachable: _refuse raises")

    def reload_from_signal(self) -> None:
        """SIGHUP: a refusal is said (event, stderr), never raised: the daemon goes on."""
        try:
            self.reload()
        except ReloadRefused:
            pass
        except Exception as e:  # noqa: BLE001 - never out of the SIGHUP path
            self.gw.incidents.report("reload", e)
            self.say(f"jvpn gateway: reload failed, see the DaemonError event: {_one_line(e)}")

    def _refuse(self, line: str) -> None:
        line = " ".join(line.split())
        self.gw.events.emit(EventType.RELOAD_REFUSED, Reason.CONFIG_INVALID,
                            config=str(self.path), detail=line)
        self.say(f"jvpn gateway: reload refused, the running configuration stays: {line}")
        raise ReloadRefused(line)


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def summary(result: dict) -> str:
    """One line: what a reload changed."""
    parts = [f"{what} {', '.join(result[what])}" for what in
             ("added", "removed", "changed", "renamed") if result.get(what)]
    if result.get("policy_changed"):
        parts.append(f"policy fields {', '.join(result['policy_changed'])}")
    if result.get("revoked"):
        parts.append(f"{len(result['revoked'])} session(s) revoked")
    if result.get("revoke_failed"):
        parts.append(f"{len(result['revoke_failed'])} revocation(s) failed "
                     "(retried every timer tick)")
    return "; ".join(parts) or "no change"
