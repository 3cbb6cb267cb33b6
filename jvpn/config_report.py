"""The effective configuration, for `jvpn-xdp gateway check` and `client
check`: every key with the value `up` would use and where it came from
(``FILE:LINE`` of the line that set it, or ``default``). Pure: it reads
nothing and opens nothing; the loaders in jvpn.config did the validation.

Secrets are never part of it: an inline ``PrivateKey`` shows as
``(inline, not shown)``, a key file as its path, and the public key derived
from the private one is shown instead; the cluster key shows as its path."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from jvpn import keys
from jvpn.config import DEFAULT_FWMARK, ClientConfig, GatewayConfig, PeerConfig
from jvpn.config_sources import Sources
from jvpn.policy import SPEC, Policy

DEFAULT = "default"
NOT_SHOWN = "(inline, not shown)"


@dataclass(frozen=True)
class Row:
    key: str
    value: object  # JSON-able: str, int, float, bool, None or a list of str
    source: str  # "FILE:LINE" or "default"
    note: str = ""  # what a default means, or what a value stands for
    derived: bool = False  # not a key of the file (the public key): a comment in the text

    def as_dict(self) -> dict:
        out = {"key": self.key, "value": self.value, "source": self.source}
        return {**out, "note": self.note} if self.note else out


def _row(src: Sources, key: str, value: object, note: str = "") -> Row:
    return Row(key, value, src.given(key) or DEFAULT, note)


def _private_key_rows(src: Sources, private_key: bytes) -> list[Row]:
    """The private key's origin, never its value, and the public key it gives."""
    public = keys.encode(keys.public_from_private(private_key))
    if src.given("PrivateKeyFile"):
        first = _row(src, "PrivateKeyFile", str(src.files["PrivateKeyFile"]))
    else:
        first = _row(src, "PrivateKey", NOT_SHOWN)
    return [first, Row("PublicKey", public, first.source, "derived from the private key",
                       derived=True)]


def gateway_rows(cfg: GatewayConfig, default_socket: Path | None = None) -> list[Row]:
    """The [Interface] keys of a gateway config, in the README's order.
    ``default_socket``: the operator socket without ControlSocket (it
    depends on the run directory, a command-line option)."""
    src = cfg.sources
    address = [str(cfg.address)] + ([str(cfg.address6)] if cfg.address6 else [])
    policy = src.files.get("Policy")
    cluster = src.files.get("ClusterKeyFile")
    etcd = f"etcd://{cfg.store[0]}:{cfg.store[1]}" if cfg.store else "sqlite"
    return [
        *_private_key_rows(src, cfg.private_key),
        _row(src, "ListenPort", cfg.listen_port),
        _row(src, "Address", address),
        _row(src, "PeersFile", str(src.files.get("PeersFile", "")), f"peers: {len(cfg.peers)}"),
        _row(src, "Policy", str(policy) if policy else None,
             "" if policy else "the default policy"),
        _row(src, "XdpInterface", cfg.xdp_interface, "" if cfg.xdp_interface
             else "none: the userspace gate"),
        _row(src, "StateDir", str(cfg.state_dir)),
        _row(src, "NodeId", cfg.node_id, "" if src.given("NodeId") else "the hostname"),
        _row(src, "EventsFile", str(cfg.events_file)),
        _row(src, "EventsMaxBytes", cfg.events_max_bytes),
        _row(src, "EventsKeep", cfg.events_keep),
        _row(src, "EventsSummaryInterval", cfg.events_summary_interval_s, "seconds"),
        _row(src, "HandshakesPerSecond", cfg.handshakes_per_second),
        _row(src, "Store", etcd, "" if cfg.store else f"{cfg.state_dir / 'sessions.db'}"),
        _row(src, "ClusterKeyFile", str(cluster) if cluster else None,
             "" if cluster else "only with an etcd store"),
        _row(src, "LeaseTTL", cfg.lease_ttl_s, "seconds; only with an etcd store"),
        _row(src, "PathMTU", cfg.path_mtu),
        _row(src, "ControlSocket", str(cfg.control_socket or default_socket or "") or None,
             "" if cfg.control_socket else "<run dir>/gateway.sock"),
        _row(src, "MetricsListen", _listen(cfg.metrics_listen),
             "/metrics" if cfg.metrics_listen else "off: no metrics endpoint"),
        _row(src, "MetricsPeers", "yes" if cfg.metrics_peers else "no",
             "per-peer series (keys, names, AllowedIPs) served" if cfg.metrics_peers
             else "no per-peer series"),
        _row(src, "MaxSessions", cfg.max_sessions,
             "" if cfg.max_sessions else "what the gate holds (attach --max-sessions)"),
    ]


def _listen(listen: tuple[str, int] | None) -> str | None:
    if listen is None:
        return None
    host, port = listen
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def peer_dict(peer: PeerConfig) -> dict:
    return {"name": peer.name, "public_key": keys.encode(peer.public_key),
            "allowed_ips": [str(n) for n in peer.allowed_ips], "source": peer.origin}


def policy_rows(policy: Policy, src: Sources) -> list[Row]:
    """Every policy field (``section.name``), ``version`` first."""
    rows = [_row(src, "version", policy.version)]
    rows += [_row(src, f.key, getattr(policy, f.name), f"range {f.lo}..{f.hi}"
                  if f.kind is not bool else "true or false") for f in SPEC]
    return rows


def gateway_report(cfg: GatewayConfig, default_socket: Path | None = None) -> dict:
    """All of it, as ``gateway check --json`` prints it."""
    policy_file = cfg.sources.files.get("Policy")
    return {
        "config": str(cfg.sources.path),
        "valid": True,
        "interface": [r.as_dict() for r in gateway_rows(cfg, default_socket)],
        "peers": [peer_dict(p) for p in cfg.peers],
        "policy": {"file": str(policy_file) if policy_file else None,
                   "fields": [r.as_dict() for r in policy_rows(cfg.policy, cfg.sources)]},
    }


def client_rows(cfg: ClientConfig) -> list[Row]:
    """The [Interface] and [Peer] keys of a client config."""
    src = cfg.sources
    endpoint = cfg.endpoint_name or cfg.endpoint[0]
    host = f"[{endpoint}]" if ":" in endpoint else endpoint
    return [
        *_private_key_rows(src, cfg.private_key),
        _row(src, "Name", cfg.tun_name),
        _row(src, "MTU", cfg.tun_mtu),
        _row(src, "PathMTU", cfg.path_mtu, "" if cfg.path_mtu
             else "from the route to the endpoint"),
        _row(src, "Policy", str(src.files["Policy"]) if "Policy" in src.files else None,
             "" if "Policy" in src.files else "none: the default transport-selection policy"),
        _row(src, "DNS", [*cfg.dns.servers, *cfg.dns.search],
             "" if src.given("DNS") else "none: resolv.conf is left alone"),
        *(row for key, attr in _HOOKS for row in _hook_rows(src, key, getattr(cfg.hooks, attr))),
        _fwmark_row(src, cfg),
        _row(src, "Table", cfg.table),
        _row(src, "PublicKey", keys.encode(cfg.gateway_public_key), "the gateway's"),
        _row(src, "Endpoint", f"{host}:{cfg.endpoint[1]}",
             f"resolved now to {cfg.endpoint[0]}" if cfg.endpoint_name else ""),
        _row(src, "KeepaliveInterval", cfg.keepalive_ms / 1000, "seconds"),
        _row(src, "AllowedIPs", [str(n) for n in cfg.allowed_ips],
             "" if cfg.allowed_ips else "none: the gateway's inner network only"),
        _row(src, "OrphanTimeout", cfg.orphan_timeout_ms / 1000,
             "seconds without an authenticated answer: the session is over"),
        _row(src, "Reconnect", "yes" if cfg.reconnect else "no"),
    ]


def _hook_rows(src: Sources, key: str, commands: tuple[str, ...]) -> list[Row]:
    """One row per command, each with its own line: a hook may hold a comma."""
    if not commands:
        return [_row(src, key, None, "none")]
    return [Row(key, c, src.given(f"{key}[{n}]") or DEFAULT)
            for n, c in enumerate(commands, start=1)]


def _fwmark_row(src: Sources, cfg: ClientConfig) -> Row:
    """The mark in effect: the given one, else DEFAULT_FWMARK with a full tunnel."""
    if cfg.fwmark is not None:
        return _row(src, "FwMark", f"{cfg.fwmark:#x}")
    if any(n.prefixlen == 0 for n in cfg.allowed_ips):
        return _row(src, "FwMark", f"{DEFAULT_FWMARK:#x}", "a /0 in AllowedIPs: full tunnel")
    return _row(src, "FwMark", None, "none: no /0 in AllowedIPs")


_HOOKS = (("PreUp", "pre_up"), ("PostUp", "post_up"), ("PreDown", "pre_down"),
          ("PostDown", "post_down"))


def client_report(cfg: ClientConfig) -> dict:
    return {"config": str(cfg.sources.path), "valid": True,
            "keys": [r.as_dict() for r in client_rows(cfg)]}


# ---------------------------------------------------------------- as text

def text_value(value: object) -> str:
    """A value as a config file spells it (a list comma-separated)."""
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    if isinstance(value, bool):
        return str(value).lower()
    return "" if value is None else str(value)


def text_lines(rows: list[Row], base: Path | None = None) -> list[str]:
    """``Key = value  # source (note)``; a key with no value is commented out.
    Sources in ``base``'s folder are shown by file name, to keep lines short."""
    out = []
    for r in rows:
        value = text_value(r.value)
        line = f"{r.key} = {value}" if value and not r.derived else f"# {r.key} = {value}"
        where = _short(r.source, base)
        out.append(f"{line:<40} # {where}" + (f" ({r.note})" if r.note else ""))
    return out


def _short(source: str, base: Path | None) -> str:
    if base is not None and source.startswith(f"{base.parent}/"):
        return source[len(f"{base.parent}/"):]
    return source
