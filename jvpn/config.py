"""Configuration files of the gateway and the client, WireGuard style.

Three files, all in one syntax: ``[Section]`` headers, ``Key = Value`` lines,
``#`` starts a comment (to the end of the line; a value cannot contain ``#``),
blank lines are ignored, section and key names are case-insensitive. The
parser is written by hand (not configparser) so that every error names the
file, the line and the field, as one line an operator can act on::

    /etc/jvpn/peers.conf:7: PublicKey: not valid base64

Gateway config (:func:`load_gateway_config`)::

    [Interface]
    PrivateKey = <base64>          # or PrivateKeyFile = /path; exactly one of them
    ListenPort = 51900             # 1..65535, default 51900
    Address = 10.99.0.1/24         # gateway inner address with prefix, mandatory
    XdpInterface = eth0            # optional; absent = userspace gate
    PeersFile = peers.conf         # mandatory
    Policy = policy.toml           # optional; absent = default policy
    StateDir = /var/lib/jvpn       # default /var/lib/jvpn
    NodeId = gw-a                  # default: the hostname
    EventsFile = events.jsonl      # default <StateDir>/events.jsonl
    EventsMaxBytes = 64M           # rotate the events file at this size (K, M, G: binary)
    EventsKeep = 2                 # rotated files kept (events.jsonl.1 ...)
    EventsSummaryInterval = 10     # seconds: one line per kind of unauthenticated rejection
    PathMTU = 1500                 # our outer path's MTU: no datagram to a client is larger

Relative paths (PrivateKeyFile, PeersFile, Policy, StateDir, EventsFile) are
relative to the folder of the file that names them.

Peers file (:func:`load_peers`): one ``[Peer]`` section per peer with
``PublicKey`` (mandatory), ``AllowedIP`` (mandatory: the peer's inner /32,
inside the gateway's inner network) and ``Name`` (optional).

Client config (:func:`load_client_config`): ``[Interface]`` with the private
key, the TUN ``Name``, its ``MTU`` (default 65000) and the outer ``PathMTU``
(default: from the route to the endpoint); ``[Peer]`` with the gateway's ``PublicKey``, its
``Endpoint`` and ``PersistentKeepalive`` (ms).

Who may touch the files (jvpn.files): a key file, or a config file with an
inline key, that group or others may access or another user owns is refused;
so is any of these files that group or others may write.
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
from dataclasses import dataclass, field
from pathlib import Path

from jvpn import keys, pathmtu
from jvpn.errors import JvpnError
from jvpn.events import DEFAULT_KEEP, DEFAULT_MAX_BYTES, DEFAULT_SUMMARY_INTERVAL_MS
from jvpn.files import UnsafeFile, check_not_writable_by_others, check_secret, read_secret
from jvpn.policy import Policy, PolicyError, default_policy, load_policy

DEFAULT_LISTEN_PORT = 51900
DEFAULT_HANDSHAKES_PER_SECOND = 50
DEFAULT_STATE_DIR = Path("/var/lib/jvpn")
EVENTS_FILE_NAME = "events.jsonl"
DEFAULT_TUN_NAME = "jvpn0"
DEFAULT_KEEPALIVE_MS = 500
KEEPALIVE_RANGE_MS = (50, 60_000)
# outer datagram sizing (issue 11; the protocol's numbers live in jvpn/pathmtu.py)
DEFAULT_TUN_MTU = pathmtu.DEFAULT_TUN_MTU  # client MTU: jvpn fragments inner packets itself
TUN_MTU_RANGE = pathmtu.TUN_MTU_RANGE
DEFAULT_GATEWAY_PATH_MTU = pathmtu.DEFAULT_PATH_MTU  # gateway PathMTU
PATH_MTU_RANGE = pathmtu.PATH_MTU_RANGE  # client (default: the route's) and gateway PathMTU
IFNAMSIZ = 16  # the kernel's limit, with the terminating NUL


class ConfigError(JvpnError):
    """A configuration file that cannot be used. The message is one line:
    ``FILE:LINE: FIELD: what is wrong`` (``FILE: ...`` for file-wide errors)."""

    def __init__(self, message: str, path: str | None = None, line: int | None = None,
                 field: str | None = None):
        super().__init__(message)
        self.path, self.line, self.field = path, line, field


@dataclass(frozen=True)
class PeerConfig:
    public_key: bytes
    inner: ipaddress.IPv4Address
    name: str


@dataclass(frozen=True)
class GatewayConfig:
    private_key: bytes = field(repr=False)
    listen_port: int
    address: ipaddress.IPv4Interface
    xdp_interface: str | None
    peers: list[PeerConfig]
    policy: Policy
    state_dir: Path
    node_id: str
    events_file: Path
    # above this many initiations a second, a stateless cookie round trip is
    # required before any Diffie-Hellman (0: always)
    handshakes_per_second: int = 50
    store: tuple[str, int] | None = None  # etcd endpoint; None = the SQLite default
    cluster_key: bytes | None = field(default=None, repr=False)
    lease_ttl_s: int = 3  # cluster: the gateway's etcd lease (takeover after a crash)
    # The events file's bounds (jvpn.events): anyone can make us reject packets.
    events_max_bytes: int = DEFAULT_MAX_BYTES  # rotate at this size
    events_keep: int = DEFAULT_KEEP  # rotated files kept
    events_summary_interval_s: int = DEFAULT_SUMMARY_INTERVAL_MS // 1000
    path_mtu: int = DEFAULT_GATEWAY_PATH_MTU  # our outer path: bounds every session's datagrams


@dataclass(frozen=True)
class ClientConfig:
    private_key: bytes = field(repr=False)
    tun_name: str
    gateway_public_key: bytes
    endpoint: tuple[str, int]
    keepalive_ms: int
    tun_mtu: int = DEFAULT_TUN_MTU
    path_mtu: int | None = None  # None: from the route to the endpoint, re-read on path changes


# ---------------------------------------------------------------- parsing

@dataclass
class _Entry:
    key: str  # canonical spelling, from the schema
    value: str
    line: int


@dataclass
class _Section:
    name: str  # canonical spelling
    line: int
    entries: dict[str, _Entry]  # canonical key -> entry


class _File:
    """One parsed file; its ``error`` methods build errors that name it."""

    def __init__(self, path: Path, sections: list[_Section], st: os.stat_result | None = None):
        self.path = path
        self.sections = sections
        self.stat = st  # of the descriptor the text was read from

    def error(self, line: int | None, what: str, message: str) -> ConfigError:
        where = f"{self.path}:{line}" if line is not None else f"{self.path}"
        return ConfigError(f"{where}: {what}: {message}", str(self.path), line, what)

    def fail_entry(self, entry: _Entry, message: str) -> ConfigError:
        return self.error(entry.line, entry.key, message)

    def require(self, section: _Section, key: str, hint: str = "") -> _Entry:
        entry = section.entries.get(key)
        if entry is None:
            raise self.error(section.line, key,
                             f"mandatory key missing in the [{section.name}] section{hint}")
        return entry

    def only(self, name: str) -> _Section:
        """The single section called ``name`` (mandatory, not repeated)."""
        found = [s for s in self.sections if s.name == name]
        if not found:
            raise ConfigError(f"{self.path}: [{name}]: section is missing", str(self.path),
                              None, f"[{name}]")
        if len(found) > 1:
            raise self.error(found[1].line, f"[{name}]",
                             f"section repeated (first on line {found[0].line})")
        return found[0]

    def resolve(self, value: str) -> Path:
        """A path named in this file: relative ones are relative to its folder."""
        p = Path(value)
        return p if p.is_absolute() else self.path.absolute().parent / p


def _parse(path: Path, schema: dict[str, tuple[str, ...]],
           origin: tuple[_File, _Entry] | None = None) -> _File:
    """Read and parse ``path``. ``schema`` maps each allowed section name to
    its allowed keys (canonical spellings). ``origin``: the file and entry
    that named ``path``, so that an unreadable file is reported there."""
    try:
        with open(path, encoding="utf-8-sig") as fh:
            st = os.fstat(fh.fileno())
            check_not_writable_by_others(path, st)
            text = fh.read()
    except (OSError, UnicodeDecodeError, UnsafeFile) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else (
            "not UTF-8 text" if isinstance(e, UnicodeDecodeError) else str(e))
        if origin is not None:
            f, entry = origin
            raise f.fail_entry(entry, reason if isinstance(e, UnsafeFile)
                               else f"cannot read {path}: {reason}") from None
        if isinstance(e, UnsafeFile):
            raise ConfigError(reason, str(path)) from None
        raise ConfigError(f"{path}: cannot read: {reason}", str(path)) from None
    f = _File(path, [], st)
    sections_by_lower = {name.lower(): name for name in schema}
    current: _Section | None = None
    for n, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith("["):
            if not line.endswith("]"):
                raise f.error(n, line, "section header without its closing ']'")
            given = line[1:-1].strip()
            name = sections_by_lower.get(given.lower())
            if name is None:
                expected = " or ".join(f"[{s}]" for s in schema)
                raise f.error(n, f"[{given}]", f"unknown section (expected {expected})")
            current = _Section(name, n, {})
            f.sections.append(current)
            continue
        if "=" not in line:
            raise f.error(n, line.split()[0], "not a 'Key = Value' line")
        key, value = (part.strip() for part in line.split("=", 1))
        if not key:
            raise f.error(n, "=", "a 'Key = Value' line without its key")
        if current is None:
            raise f.error(n, key, "key outside any section (put it under a [Section] header)")
        allowed = {k.lower(): k for k in schema[current.name]}
        canonical = allowed.get(key.lower())
        if canonical is None:
            raise f.error(n, key, f"unknown key in the [{current.name}] section (known: "
                                  f"{', '.join(schema[current.name])})")
        if canonical in current.entries:
            raise f.error(n, canonical, f"duplicate key in the [{current.name}] section "
                                        f"(first on line {current.entries[canonical].line})")
        if not value:
            raise f.error(n, canonical, "empty value")
        current.entries[canonical] = _Entry(canonical, value, n)
    return f


# ---------------------------------------------------------------- values

def _key(f: _File, entry: _Entry) -> bytes:
    try:
        return keys.decode(entry.value)
    except keys.KeyError_ as e:
        raise f.fail_entry(entry, str(e)) from None


def _private_key(f: _File, section: _Section) -> bytes:
    inline = section.entries.get("PrivateKey")
    from_file = section.entries.get("PrivateKeyFile")
    if inline is not None and from_file is not None:
        second, first = sorted((inline, from_file), key=lambda e: e.line, reverse=True)
        raise f.fail_entry(second, f"{first.key} is already given on line {first.line}: "
                                   "give exactly one of PrivateKey and PrivateKeyFile")
    if inline is not None:
        try:  # the key is in this file: it is a secret file now
            check_secret(f.path, f.stat)
        except UnsafeFile as e:
            raise f.fail_entry(inline, str(e)) from None
        return _key(f, inline)
    if from_file is None:
        raise f.error(section.line, "PrivateKey", f"mandatory key missing in the "
                      f"[{section.name}] section (give PrivateKey or PrivateKeyFile)")
    return _key_file(f, from_file)


def _key_file(f: _File, entry: _Entry) -> bytes:
    """A 32-byte base64 key read from the file ``entry`` names, refused if
    anyone but root or us could read or replace it (jvpn.files)."""
    path = f.resolve(entry.value)
    try:
        return keys.decode(read_secret(path))
    except UnsafeFile as e:
        raise f.fail_entry(entry, str(e)) from None
    except OSError as e:
        raise f.fail_entry(entry, f"cannot read {path}: {e.strerror}") from None
    except (keys.KeyError_, UnicodeDecodeError) as e:
        reason = "not UTF-8 text" if isinstance(e, UnicodeDecodeError) else str(e)
        raise f.fail_entry(entry, f"{path}: {reason}") from None


def _int(f: _File, entry: _Entry, lo: int, hi: int) -> int:
    if not re.fullmatch(r"[0-9]+", entry.value):
        raise f.fail_entry(entry, f"not a whole number: {entry.value!r}")
    v = int(entry.value)
    if not lo <= v <= hi:
        raise f.fail_entry(entry, f"{v} is out of range [{lo}, {hi}]")
    return v


def _ifname(f: _File, entry: _Entry) -> str:
    """A Linux interface name, as the kernel's dev_valid_name() takes it."""
    v = entry.value
    if len(v) >= IFNAMSIZ:
        raise f.fail_entry(entry, f"an interface name is at most {IFNAMSIZ - 1} characters, "
                                  f"{v!r} has {len(v)}")
    if v in (".", "..") or any(c in v for c in "/:") or any(c.isspace() for c in v):
        raise f.fail_entry(entry, f"{v!r} is not a valid interface name")
    return v


def _address(f: _File, entry: _Entry) -> ipaddress.IPv4Interface:
    if "/" not in entry.value:
        raise f.fail_entry(entry, f"give the prefix length too, e.g. {entry.value}/24")
    try:
        addr = ipaddress.IPv4Interface(entry.value)
    except ValueError as e:
        raise f.fail_entry(entry, f"not an IPv4 address with prefix: {e}") from None
    net = addr.network
    if net.prefixlen >= 32:
        raise f.fail_entry(entry, f"a /{net.prefixlen} leaves no inner address for peers")
    if net.prefixlen <= 30 and addr.ip in (net.network_address, net.broadcast_address):
        raise f.fail_entry(entry, f"{addr.ip} is the network or broadcast address of {net}")
    return addr


def _endpoint(f: _File, entry: _Entry) -> tuple[str, int]:
    v = entry.value
    bad = "expected IPv4:port or [IPv6]:port"
    if v.startswith("["):
        host, sep, port_text = v[1:].partition("]:")
        if not sep:
            raise f.fail_entry(entry, f"{v!r}: {bad}")
        try:
            host = str(ipaddress.IPv6Address(host))
        except ValueError:
            raise f.fail_entry(entry, f"{v!r}: {host!r} is not an IPv6 address") from None
    else:
        host, sep, port_text = v.rpartition(":")
        if not sep:
            raise f.fail_entry(entry, f"{v!r}: no port; {bad}")
        try:
            host = str(ipaddress.IPv4Address(host))
        except ValueError:
            raise f.fail_entry(entry, f"{v!r}: {host!r} is not an IPv4 address "
                                      f"({bad}; host names are not resolved)") from None
    if not re.fullmatch(r"[0-9]+", port_text) or not 1 <= int(port_text) <= 65535:
        raise f.fail_entry(entry, f"{v!r}: port must be 1..65535")
    return host, int(port_text)


# ---------------------------------------------------------------- files

_GATEWAY = {"Interface": ("PrivateKey", "PrivateKeyFile", "ListenPort", "Address",
                          "XdpInterface", "PeersFile", "Policy", "StateDir", "NodeId",
                          "EventsFile", "HandshakesPerSecond", "Store", "ClusterKeyFile",
                          "LeaseTTL", "EventsMaxBytes", "EventsKeep", "EventsSummaryInterval",
                          "PathMTU")}
_PEERS = {"Peer": ("PublicKey", "AllowedIP", "Name")}
_CLIENT = {"Interface": ("PrivateKey", "PrivateKeyFile", "Name", "MTU", "PathMTU"),
           "Peer": ("PublicKey", "Endpoint", "PersistentKeepalive")}


def load_gateway_config(path: str | Path) -> GatewayConfig:
    """Read the gateway config, the peers file and the policy it names."""
    f = _parse(Path(path), _GATEWAY)
    s = f.only("Interface")
    e = s.entries
    private_key = _private_key(f, s)
    listen_port = _int(f, e["ListenPort"], 1, 65535) if "ListenPort" in e else DEFAULT_LISTEN_PORT
    address = _address(f, f.require(s, "Address"))
    xdp_interface = _ifname(f, e["XdpInterface"]) if "XdpInterface" in e else None
    peers_entry = f.require(s, "PeersFile")
    peers = _load_peers(f.resolve(peers_entry.value), address, origin=(f, peers_entry))
    policy = _policy(f, e["Policy"]) if "Policy" in e else default_policy()
    state_dir = f.resolve(e["StateDir"].value) if "StateDir" in e else DEFAULT_STATE_DIR
    node_id = e["NodeId"].value if "NodeId" in e else socket.gethostname()
    if any(c.isspace() for c in node_id):
        raise f.fail_entry(e["NodeId"], f"{node_id!r} contains white space")
    events_file = (f.resolve(e["EventsFile"].value) if "EventsFile" in e
                   else state_dir / EVENTS_FILE_NAME)
    load = (_int(f, e["HandshakesPerSecond"], 0, 1_000_000) if "HandshakesPerSecond" in e
            else DEFAULT_HANDSHAKES_PER_SECOND)
    store, cluster_key = _store(f, e)
    if "LeaseTTL" in e and store is None:
        raise f.fail_entry(e["LeaseTTL"], "only meaningful with Store = etcd://...")
    lease_ttl = _int(f, e["LeaseTTL"], 2, 3600) if "LeaseTTL" in e else 3
    path_mtu = (_int(f, e["PathMTU"], *PATH_MTU_RANGE) if "PathMTU" in e
                else DEFAULT_GATEWAY_PATH_MTU)
    return GatewayConfig(private_key=private_key, listen_port=listen_port, address=address,
                         xdp_interface=xdp_interface, peers=peers, policy=policy,
                         state_dir=state_dir, node_id=node_id, events_file=events_file,
                         handshakes_per_second=load, store=store, cluster_key=cluster_key,
                         lease_ttl_s=lease_ttl, path_mtu=path_mtu, **_events_bounds(f, e))


_SIZE_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}


def _events_bounds(f: _File, e: dict) -> dict:
    out = {}
    if "EventsMaxBytes" in e:
        entry = e["EventsMaxBytes"]
        m = re.fullmatch(r"([0-9]+)\s*([KMG]?)", entry.value.upper())
        if not m:
            raise f.fail_entry(entry, f"not a size (bytes, or with K, M, G): {entry.value!r}")
        v = int(m.group(1)) * _SIZE_UNITS[m.group(2)]
        if not 65_536 <= v <= 1 << 40:
            raise f.fail_entry(entry, f"{v} is out of range [65536, {1 << 40}]")
        out["events_max_bytes"] = v
    if "EventsKeep" in e:
        out["events_keep"] = _int(f, e["EventsKeep"], 1, 100)
    if "EventsSummaryInterval" in e:
        out["events_summary_interval_s"] = _int(f, e["EventsSummaryInterval"], 1, 3600)
    return out


def _policy(f: _File, entry: _Entry) -> Policy:
    path = f.resolve(entry.value)
    try:
        check_not_writable_by_others(path, os.stat(path))  # it sets the security bounds
        return load_policy(path)
    except (PolicyError, UnsafeFile) as err:
        raise f.fail_entry(entry, str(err)) from None
    except (OSError, UnicodeDecodeError) as err:
        reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
        raise f.fail_entry(entry, f"cannot read {path}: {reason}") from None


def _store(f: _File, e: dict) -> tuple[tuple[str, int] | None, bytes | None]:
    """``Store = sqlite`` (default) or ``Store = etcd://HOST:PORT`` with a
    ``ClusterKeyFile`` (32 bytes, base64) that seals session secrets."""
    if "Store" not in e or e["Store"].value == "sqlite":
        if "ClusterKeyFile" in e:
            raise f.fail_entry(e["ClusterKeyFile"], "only meaningful with Store = etcd://...")
        return None, None
    m = re.fullmatch(r"etcd://([0-9.]+):([0-9]+)", e["Store"].value)
    if not m or not 1 <= int(m.group(2)) <= 65535:
        raise f.fail_entry(e["Store"], f"{e['Store'].value!r}: use sqlite or etcd://IPv4:PORT")
    if "ClusterKeyFile" not in e:
        raise f.fail_entry(e["Store"], "an etcd store needs ClusterKeyFile (the key that "
                                       "seals session secrets)")
    return (m.group(1), int(m.group(2))), _key_file(f, e["ClusterKeyFile"])


def load_peers(path: str | Path,
               gateway_address: ipaddress.IPv4Interface) -> list[PeerConfig]:
    """The peers allowed to connect, each with its inner address inside
    ``gateway_address``'s network."""
    return _load_peers(Path(path), gateway_address)


def _load_peers(path: Path, gateway_address: ipaddress.IPv4Interface,
                origin: tuple[_File, _Entry] | None = None) -> list[PeerConfig]:
    f = _parse(path, _PEERS, origin)
    peers: list[PeerConfig] = []
    key_lines: dict[bytes, int] = {}
    inner_lines: dict[ipaddress.IPv4Address, int] = {}
    for s in f.sections:
        key_entry = f.require(s, "PublicKey")
        public_key = _key(f, key_entry)
        if public_key in key_lines:
            raise f.fail_entry(key_entry, f"duplicate public key (already on line "
                                          f"{key_lines[public_key]})")
        ip_entry = f.require(s, "AllowedIP")
        inner = _allowed_ip(f, ip_entry, gateway_address)
        if inner in inner_lines:
            raise f.fail_entry(ip_entry, f"{inner} is already another peer's (line "
                                         f"{inner_lines[inner]})")
        key_lines[public_key] = key_entry.line
        inner_lines[inner] = ip_entry.line
        name = s.entries["Name"].value if "Name" in s.entries else keys.encode(public_key)[:8]
        peers.append(PeerConfig(public_key=public_key, inner=inner, name=name))
    return peers


def _allowed_ip(f: _File, entry: _Entry,
                gateway_address: ipaddress.IPv4Interface) -> ipaddress.IPv4Address:
    try:
        iface = ipaddress.IPv4Interface(entry.value)
    except ValueError as e:
        raise f.fail_entry(entry, f"not an IPv4 address: {e}") from None
    if iface.network.prefixlen != 32:
        raise f.fail_entry(entry, f"must be a /32 (the peer's one inner address), "
                                  f"got /{iface.network.prefixlen}")
    ip, net = iface.ip, gateway_address.network
    if ip not in net:
        raise f.fail_entry(entry, f"{ip} is outside the gateway's inner network {net}")
    if ip == gateway_address.ip:
        raise f.fail_entry(entry, f"{ip} is the gateway's own address")
    if net.prefixlen <= 30 and ip in (net.network_address, net.broadcast_address):
        raise f.fail_entry(entry, f"{ip} is the network or broadcast address of {net}")
    return ip


def load_client_config(path: str | Path) -> ClientConfig:
    f = _parse(Path(path), _CLIENT)
    iface = f.only("Interface")
    peer = f.only("Peer")
    private_key = _private_key(f, iface)
    tun_name = _ifname(f, iface.entries["Name"]) if "Name" in iface.entries else DEFAULT_TUN_NAME
    gateway_public_key = _key(f, f.require(peer, "PublicKey"))
    endpoint = _endpoint(f, f.require(peer, "Endpoint"))
    keepalive_ms = (_int(f, peer.entries["PersistentKeepalive"], *KEEPALIVE_RANGE_MS)
                    if "PersistentKeepalive" in peer.entries else DEFAULT_KEEPALIVE_MS)
    return ClientConfig(private_key=private_key, tun_name=tun_name,
                        gateway_public_key=gateway_public_key, endpoint=endpoint,
                        keepalive_ms=keepalive_ms, **_client_mtus(f, iface.entries, endpoint))


def _client_mtus(f: _File, e: dict, endpoint: tuple[str, int]) -> dict:
    """MTU (the TUN's) and PathMTU (the outer path's, at least what the
    endpoint's family must carry), when given."""
    out = {}
    if "MTU" in e:
        out["tun_mtu"] = _int(f, e["MTU"], *TUN_MTU_RANGE)
    if "PathMTU" in e:
        lowest = pathmtu.MIN_PATH_MTU[pathmtu.family_of(endpoint[0])]
        out["path_mtu"] = _int(f, e["PathMTU"], max(lowest, PATH_MTU_RANGE[0]),
                               PATH_MTU_RANGE[1])
    return out
