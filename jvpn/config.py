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
    Address = 10.99.0.1/24, fd99::1/64  # gateway inner IPv4 (mandatory) and IPv6 (optional)
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
    ControlSocket = /run/jvpn/gateway.sock  # the operator socket; default <run dir>/gateway.sock
    MetricsListen = 9586           # optional; absent = no /metrics. PORT (127.0.0.1), IP:PORT
    MetricsPeers = no              # yes: /metrics names every peer (key, Name, AllowedIPs)
    MaxSessions = 1000000          # sessions held at once; default: what the gate holds

Relative paths (PrivateKeyFile, PeersFile, Policy, StateDir, EventsFile,
ControlSocket) are relative to the folder of the file that names them.

Peers file (:func:`load_peers`): one ``[Peer]`` section per peer with
``PublicKey`` (mandatory), ``AllowedIPs`` (mandatory; ``AllowedIP`` is the
old spelling: the peer's one IPv4 /32 inside the gateway's IPv4 network, at
most one IPv6 /128 inside its IPv6 network, and any other prefixes are
subnets behind the peer, see :func:`_peer_prefixes`) and ``Name`` (optional).

Client config (:func:`load_client_config`): ``[Interface]`` with the private
key, the TUN ``Name``, its ``MTU`` (default 65000), the outer ``PathMTU``
(default: from the route to the endpoint), ``DNS`` (servers and search
domains, wg-quick's semantics) and the ``PreUp``/``PostUp``/``PreDown``/``PostDown`` hooks (each
may be repeated: run in file order); ``[Peer]`` with the gateway's
``PublicKey``, its ``Endpoint`` (an address or a host name resolved at load,
i.e. at ``client up``), ``KeepaliveInterval`` (seconds) and ``AllowedIPs``
(prefixes routed into the TUN; absent: the gateway's inner network;
jvpn.client_routes). The full tunnel's ``FwMark`` and ``Table`` are in
``[Interface]``. The old ``PersistentKeepalive`` (milliseconds, unlike
WireGuard's seconds) is refused with the rename, never reinterpreted.

Who may touch the files (jvpn.files): a key file, or a config file with an
inline key, that group or others may access or another user owns is refused;
so is any of these files that group or others may write.

Every loaded config carries its ``sources`` (jvpn.config_sources): the
``FILE:LINE`` that set each key (and each policy field), so that `gateway
check` shows where a value came from and errors at start name the key.
"""

from __future__ import annotations

import functools
import ipaddress
import os
import re
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

from jvpn import ifname, keys, pathmtu
from jvpn.config_sources import Sources
from jvpn.errors import JvpnError
from jvpn.events import DEFAULT_KEEP, DEFAULT_MAX_BYTES, DEFAULT_SUMMARY_INTERVAL_MS
from jvpn.files import (
    UnsafeFile,
    check_not_writable_by_others,
    check_secret,
    read_config,
    read_secret,
)
from jvpn.gate import abi
from jvpn.policy import Policy, PolicyError, default_policy, load_policy_file
from jvpn.prefixes import Network

DEFAULT_LISTEN_PORT = 51900
MAX_SESSIONS_RANGE = abi.MAX_SESSIONS_RANGE  # MaxSessions: 1 .. the largest gate
DEFAULT_HANDSHAKES_PER_SECOND = 50
DEFAULT_METRICS_HOST = "127.0.0.1"  # MetricsListen = PORT: localhost only
# MetricsPeers = no: the per-peer series (public key, Name, AllowedIPs, bytes)
# are left out: anyone on the host can read the endpoint (docs/metrics.md)
DEFAULT_METRICS_PEERS = False
DEFAULT_STATE_DIR = Path("/var/lib/jvpn")
EVENTS_FILE_NAME = "events.jsonl"
DEFAULT_TUN_NAME = "jvpn0"
DEFAULT_KEEPALIVE_MS = 500  # KeepaliveInterval = 0.5 (s): path-liveness probes, not NAT pings
KEEPALIVE_RANGE_MS = (50, 60_000)  # KeepaliveInterval 0.05 .. 60 s
HOOK_KEYS = ("PreUp", "PostUp", "PreDown", "PostDown")
# outer datagram sizing (issue 11; the protocol's numbers live in jvpn/pathmtu.py)
DEFAULT_TUN_MTU = pathmtu.DEFAULT_TUN_MTU  # client MTU: jvpn fragments inner packets itself
TUN_MTU_RANGE = pathmtu.TUN_MTU_RANGE
DEFAULT_GATEWAY_PATH_MTU = pathmtu.DEFAULT_PATH_MTU  # gateway PathMTU
PATH_MTU_RANGE = pathmtu.PATH_MTU_RANGE  # client (default: the route's) and gateway PathMTU
# Full tunnel (client AllowedIPs with a /0): the outer socket's SO_MARK and the
# routing table of the tunnel's default routes (wg-quick's scheme; "JV" = 0x4a56).
DEFAULT_FWMARK = 0x4a56
DEFAULT_TABLE = 0x4a56
RESERVED_TABLES = (0, 253, 254, 255)  # unspec, default, main, local: never the tunnel's
# The client's retries and its orphan rule (issue 12; docs/protocol.md,
# "A client the gateway forgot"). Retries double from the base to the cap,
# with jitter (jvpn/backoff.py).
RETRY_BASE_MS, RETRY_CAP_MS = 400, 4_000  # an unanswered reattach request
# `client up`: each initiation waits for its answer 0.5, 1, 2, 4, 6, 6 s
# (jitter: down to half of that): 9.75 to 19.5 s in all, as patient as the 2,
# 4, 6, 6 s before. The first retry comes soon (k18flood, docs/benchmarks.md
# "A legitimate client under the flood"): under a spoofed initiation flood the
# gate's global budget drops some of a legitimate client's initiations too,
# and one drop cost 1-4 s; now 250-500 ms. Not sooner (review k18r1 F1): a
# slow store or a long path answers after the next initiation went out; the
# client still takes the answers to its last ATTEMPTS_KEPT initiations, and a
# round trip plus the store's write under 250 ms never makes the gateway
# write twice.
HANDSHAKE_ATTEMPTS = 6
HANDSHAKE_BASE_MS, HANDSHAKE_CAP_MS = 500, 6_000
# After a cookie reply (the gateway is under load, and its gate drops the
# resend with the cookie more often than anything else: k18flood) the resend
# waits twice the cookie's round trip and a margin, at least 250 ms, at most
# its back-off step: a lost resend costs about a quarter of a second.
COOKIE_RESEND_MIN_MS, COOKIE_RESEND_MARGIN_MS = 250, 100
# The gateway forgets a handshake's session its initiator has not used after
# this long (WireGuard's REKEY_TIMEOUT; jvpn/gateway/control.py). The client
# takes an answer only up to the TTL less a margin (transit, clock rates)
# after sending its initiation: a later one may open a session already gone.
UNCONFIRMED_TTL_MS = 5_000
ANSWER_MARGIN_MS = 1_000
ANSWER_WINDOW_MS = UNCONFIRMED_TTL_MS - ANSWER_MARGIN_MS  # on the client's timer clock
# The client takes the answer to its last three attempts (a late answer to
# one before still opens: review R3 #1; three since the first retry comes at
# 0.25-0.5 s, so that a store that takes a second to write still answers the
# first: review k18r1 F1); the gateway keeps the peer's last three
# unconfirmed sessions, no more (issue 15 review: one peer's initiations never
# fill MaxSessions), so the session of the answer taken exists. At
# MaxSessions too (review k18rall F2: there a retry's session replaced the
# peer's attempt at once, and the client took the late answer to a session
# gone): there the peer's attempts do not grow, and its oldest ends for a new
# one only once its client takes that answer no more -- it expired
# (UNCONFIRMED_TTL_MS), the client sent ATTEMPTS_KEPT newer initiations (its
# newer attempts and its initiations refused meanwhile), or the new one is
# stamped ANSWER_WINDOW_MS + ANSWERABLE_SLACK_MS after it; before, the new
# initiation is refused GATEWAY_FULL and gets the newest attempt's own
# answer again (review k19r1 R4: the first copy may be what was lost;
# jvpn/gateway/new_session.py).
ATTEMPTS_KEPT = 3
# The initiations' timestamps are the client's wall clock, its answer window
# runs on its timer clock (CLOCK_BOOTTIME), from just after the timestamp was
# taken: 100 ms covers that gap and the clocks' rates (NTP slews 0.5 ms/s at
# most). Why timestamps and not only the gateway's clock: a refused
# initiation is claimed nowhere, and one replayed later (by whoever saw it)
# makes an attempt whose answer goes to the replayer; it holds off the
# client's new initiations for one answer window of the client's clock, not
# for a TTL after each replay.
ANSWERABLE_SLACK_MS = 100
# So an initiation stamped this long after an attempt's takes its room at
# capacity (jvpn/gateway/new_session.py); one stamped between ANSWER_WINDOW_MS
# and this is refused and answered with the attempt's answer again, which
# the client, its window closed, would drop: the client stamps none there
# (it holds that retry, ANSWERABLE_SLACK_MS at most: jvpn/client_handshake.py).
ANSWERABLE_PAST_NS = (ANSWER_WINDOW_MS + ANSWERABLE_SLACK_MS) * 1_000_000
# A record's handshake_ns (its client's timestamp) more than this ahead of
# its created_ms (the gateway's clock when it answered) was written by no
# gateway: the gateway refuses such an initiation (FRESHNESS_INVALID, before
# it claims it: jvpn/gateway/admission.py dated_ahead), so such a record is
# a damaged or hostile store's, unreadable to every read (jvpn/store _AHEAD_MAX_NS:
# reported, not served, the store left as it is). Served, it made its
# peer's every new initiation a replay until it ended (review k19r3), and it
# kept the downstream from the peer's new session. A client (or gateway)
# clock a day wrong is broken for much else: reattach proofs are refused
# 5 s off (reattach_proof_max_age_ms), lifetimes and key ages are the
# gateway's clock's.
HANDSHAKE_AHEAD_MAX_MS = 86_400_000
# A session DEGRADED by expired keys gets no keepalive replies, yet its client
# rekeys only when the gateway flags it: the gateway's timer sends the binding
# a flagged keepalive this often until a rekey brings it back (issue 13).
REKEY_NUDGE_MS = 1_000
# OrphanTimeout: no authenticated message from the gateway for this long (while
# the client runs): the session is presumed ended. The gateway's default policy
# ends a session it has heard nothing from transport_lost_ttl_ms after its last
# message (15 s); +2 s (heartbeat_volatile_ms) and +3 s for its timer and a
# keepalive interval: 20 s. A gateway with a longer TTL wants a longer one.
DEFAULT_ORPHAN_TIMEOUT_MS = (Policy.transport_lost_ttl_ms + Policy.heartbeat_volatile_ms
                             + 3_000)
ORPHAN_TIMEOUT_RANGE_MS = (2_000, 86_400_000)
ORPHAN_MIN_KEEPALIVES = 4  # OrphanTimeout spans at least this many keepalive intervals
DEFAULT_RECONNECT = False  # Reconnect = no: a session that ended ends `client up`
DEFAULT_LOG_LEVEL = "info"  # --log-level / JVPN_LOG_LEVEL (jvpn/logs.py)


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
    inner: ipaddress.IPv4Address  # assigned: its /32 inside the gateway's IPv4 network
    name: str
    inner6: ipaddress.IPv6Address | None = None  # assigned: its /128 in the gateway's IPv6 network
    subnets: tuple[Network, ...] = ()  # behind the peer (site-to-site): routed to it
    origin: str = field(default="", compare=False)  # "FILE:LINE" of its [Peer] section

    @functools.cached_property  # one tuple per peer, not one per read (issue 15)
    def allowed_ips(self) -> tuple[Network, ...]:
        """Every prefix the peer may send from and receives for."""
        hosts: list[Network] = [ipaddress.IPv4Network(self.inner)]
        if self.inner6 is not None:
            hosts.append(ipaddress.IPv6Network(self.inner6))
        return (*hosts, *self.subnets)


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
    address6: ipaddress.IPv6Interface | None = None  # the gateway's inner IPv6, optional
    path_mtu: int = DEFAULT_GATEWAY_PATH_MTU  # our outer path: bounds every session's datagrams
    # the operator socket (jvpn/gateway/operator.py); None: <run dir>/gateway.sock
    control_socket: Path | None = None
    metrics_listen: tuple[str, int] | None = None  # Prometheus /metrics (host, port); None: off
    metrics_peers: bool = DEFAULT_METRICS_PEERS  # /metrics serves the per-peer series
    # sessions held at once (a new handshake is refused above); None: the gate's
    # capacity (attach --max-sessions; the userspace gate's model)
    max_sessions: int | None = None
    # where each value came from (gateway check; start errors name the key and file)
    sources: Sources = field(default_factory=Sources, compare=False, repr=False)


@dataclass(frozen=True)
class ClientDns:
    """``DNS =``: addresses are name servers, anything else a search domain."""
    servers: tuple[str, ...] = ()
    search: tuple[str, ...] = ()


@dataclass(frozen=True)
class ClientHooks:
    """Shell commands run as root by ``/bin/sh -c`` (``%i`` = the TUN name)."""
    pre_up: tuple[str, ...] = ()
    post_up: tuple[str, ...] = ()
    pre_down: tuple[str, ...] = ()
    post_down: tuple[str, ...] = ()


@dataclass(frozen=True)
class ClientConfig:
    private_key: bytes = field(repr=False)
    tun_name: str
    gateway_public_key: bytes
    endpoint: tuple[str, int]  # an address: a host name is resolved at load
    keepalive_ms: int
    endpoint_name: str | None = None  # the host name Endpoint gave, if it gave one
    dns: ClientDns = ClientDns()
    hooks: ClientHooks = ClientHooks()
    # Routed into the TUN; empty: the gateway's inner network only (the assignment's prefix)
    allowed_ips: tuple[Network, ...] = ()
    fwmark: int | None = None  # SO_MARK of the outer socket; None: DEFAULT_FWMARK if full tunnel
    table: int = DEFAULT_TABLE  # routing table of the full tunnel's /0 routes
    tun_mtu: int = DEFAULT_TUN_MTU
    path_mtu: int | None = None  # None: from the route to the endpoint, re-read on path changes
    # no authenticated message from the gateway for this long: the session is over
    orphan_timeout_ms: int = DEFAULT_ORPHAN_TIMEOUT_MS
    reconnect: bool = DEFAULT_RECONNECT  # a new session when the gateway ended or forgot one
    # transport selection's thresholds and bounds (Policy =; docs/protocol.md): default absent
    policy: Policy = field(default_factory=default_policy, compare=False)
    sources: Sources = field(default_factory=Sources, compare=False, repr=False)


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
    entries: dict[str, _Entry]  # canonical key -> entry (the first, for repeatable keys)
    repeated: dict[str, list[_Entry]] = field(default_factory=dict)  # every one, in order

    def all(self, key: str) -> list[_Entry]:
        """Every entry of a repeatable key, in file order."""
        return self.repeated.get(key, [])


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


# A key as the schemas spell them. A line that does not start with one is
# refused showing only its leading word (shown_word): the rest of a mistyped
# line is often a secret ("PrivateKey <key>", "PrivateKey: <key>", the key's
# own base64 '=' padding then looking like the separator), and the error line
# goes to the terminal, `check --json` and the journal.
_KEY_WORD = re.compile(r"[A-Za-z]{1,40}")
_NOT_KEY_VALUE = "not a 'Key = Value' line (the rest of the line is not shown)"


def shown_word(text: str) -> str:
    """What an error may echo of an unparsed line: a whole key name (letters
    only, short: a mistyped one is named), else only a leading word that is
    (the start of) one of our key or section names, with '…' (at most a
    name's length of a secret's letters, only if they spell one). Never a
    key's own letters:
    a bare base64 key can start with many letters."""
    t = text.strip()
    if _KEY_WORD.fullmatch(t) and len(t) <= _WHOLE_NAME_MAX:
        return t
    m = _KEY_WORD.match(t)
    word = m.group(0) if m else ""
    known = word.lower() and any(name.startswith(word.lower()) for name in _known_names())
    return (word if known else "") + "…"


_WHOLE_NAME_MAX = 24  # longer than any key name, far shorter than a key (43 + '=')


def _known_names() -> set[str]:
    return {name.lower() for schema in (_GATEWAY, _PEERS, _CLIENT)
            for section, keys in schema.items() for name in (section, *keys)}


def _parse(path: Path, schema: dict[str, tuple[str, ...]],
           origin: tuple[_File, _Entry] | None = None,
           repeatable: tuple[str, ...] = ()) -> _File:
    """Read and parse ``path``. ``schema`` maps each allowed section name to
    its allowed keys (canonical spellings). ``origin``: the file and entry
    that named ``path``, so that an unreadable file is reported there.
    ``repeatable``: keys that may be given more than once (hooks, DNS)."""
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
                raise f.error(n, f"[{shown_word(line[1:])}",
                              "section header without its closing ']'")
            given = line[1:-1].strip()
            name = sections_by_lower.get(given.lower())
            if name is None:
                expected = " or ".join(f"[{s}]" for s in schema)
                raise f.error(n, f"[{shown_word(given)}]",
                              f"unknown section (expected {expected})")
            current = _Section(name, n, {})
            f.sections.append(current)
            continue
        key, sep, value = (part.strip() for part in line.partition("="))
        if not sep or not _KEY_WORD.fullmatch(key):
            raise f.error(n, shown_word(key) if key else "=", _NOT_KEY_VALUE)
        if current is None:
            raise f.error(n, key, "key outside any section (put it under a [Section] header)")
        allowed = {k.lower(): k for k in schema[current.name]}
        canonical = allowed.get(key.lower())
        if canonical is None:
            raise f.error(n, key, f"unknown key in the [{current.name}] section (known: "
                                  f"{', '.join(schema[current.name])})")
        _add(f, current, _Entry(canonical, value, n), canonical in repeatable)
    return f


def _add(f: _File, section: _Section, entry: _Entry, repeatable: bool) -> None:
    """One ``Key = Value`` line into its section; only repeatable keys may repeat."""
    if not repeatable and entry.key in section.entries:
        raise f.fail_entry(entry, f"duplicate key in the [{section.name}] section "
                                  f"(first on line {section.entries[entry.key].line})")
    if not entry.value:
        raise f.fail_entry(entry, "empty value")
    if repeatable:
        section.repeated.setdefault(entry.key, []).append(entry)
    section.entries.setdefault(entry.key, entry)


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
    why = ifname.problem(entry.value)  # the one check, shared with the gate code
    if why is not None:
        raise f.fail_entry(entry, why)
    return entry.value


def _list(f: _File, entry: _Entry) -> list[str]:
    """A comma-separated value, WireGuard style (``a, b, c``)."""
    items = [x.strip() for x in entry.value.split(",")]
    if not all(items):
        raise f.fail_entry(entry, f"{entry.value!r}: an empty item in the list")
    return items


def _addresses(f: _File, entry: _Entry
               ) -> tuple[ipaddress.IPv4Interface, ipaddress.IPv6Interface | None]:
    """``Address``: one IPv4 interface (mandatory), one IPv6 interface (optional)."""
    v4: ipaddress.IPv4Interface | None = None
    v6: ipaddress.IPv6Interface | None = None
    for item in _list(f, entry):
        if ":" in item:
            if v6 is not None:
                raise f.fail_entry(entry, f"{item}: a second IPv6 address (one is {v6})")
            v6 = _address6(f, entry, item)
        else:
            if v4 is not None:
                raise f.fail_entry(entry, f"{item}: a second IPv4 address (one is {v4})")
            v4 = _address(f, entry, item)
    if v4 is None:
        raise f.fail_entry(entry, "no IPv4 address with prefix (mandatory, e.g. 10.99.0.1/24)")
    return v4, v6


def _address6(f: _File, entry: _Entry, value: str) -> ipaddress.IPv6Interface:
    if "/" not in value:
        raise f.fail_entry(entry, f"give the prefix length too, e.g. {value}/64")
    try:
        addr = ipaddress.IPv6Interface(value)
    except ValueError as e:
        raise f.fail_entry(entry, f"not an IPv6 address with prefix: {e}") from None
    net = addr.network
    if net.prefixlen >= 127:
        raise f.fail_entry(entry, f"a /{net.prefixlen} leaves no inner address for peers")
    if addr.ip == net.network_address or not _unicast(net):
        raise f.fail_entry(entry, f"{addr.ip} is not a usable unicast address in {net}")
    return addr


def _address(f: _File, entry: _Entry, value: str | None = None) -> ipaddress.IPv4Interface:
    value = entry.value if value is None else value
    if "/" not in value:
        raise f.fail_entry(entry, f"give the prefix length too, e.g. {value}/24")
    try:
        addr = ipaddress.IPv4Interface(value)
    except ValueError as e:
        raise f.fail_entry(entry, f"not an IPv4 address with prefix: {e}") from None
    net = addr.network
    if net.prefixlen >= 32:
        raise f.fail_entry(entry, f"a /{net.prefixlen} leaves no inner address for peers")
    if net.prefixlen <= 30 and addr.ip in (net.network_address, net.broadcast_address):
        raise f.fail_entry(entry, f"{addr.ip} is the network or broadcast address of {net}")
    return addr


_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")


def is_host_name(v: str) -> bool:
    """An RFC 1123 host name (a trailing dot allowed). Its last label is not
    all digits, so a malformed address such as ``10.1`` is never handed to
    the resolver (inet_aton would read it as 10.0.0.1)."""
    labels = v[:-1].split(".") if v.endswith(".") else v.split(".")
    return (len(v) <= 253 and all(_LABEL.fullmatch(x) for x in labels)
            and not labels[-1].isdigit())


def _endpoint(f: _File, entry: _Entry) -> tuple[str, int]:
    """(address or host name, port); a host name is resolved by the caller."""
    v = entry.value
    bad = "expected IPv4:port, [IPv6]:port or hostname:port"
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
            if not is_host_name(host):
                raise f.fail_entry(entry, f"{v!r}: {host!r} is neither an IPv4 address nor "
                                          f"a host name ({bad})") from None
    if not re.fullmatch(r"[0-9]+", port_text) or not 1 <= int(port_text) <= 65535:
        raise f.fail_entry(entry, f"{v!r}: port must be 1..65535")
    return host, int(port_text)


# ---------------------------------------------------------------- files

_GATEWAY = {"Interface": ("PrivateKey", "PrivateKeyFile", "ListenPort", "Address",
                          "XdpInterface", "PeersFile", "Policy", "StateDir", "NodeId",
                          "EventsFile", "HandshakesPerSecond", "Store", "ClusterKeyFile",
                          "LeaseTTL", "EventsMaxBytes", "EventsKeep", "EventsSummaryInterval",
                          "PathMTU", "ControlSocket", "MetricsListen", "MetricsPeers",
                          "MaxSessions")}
_PEERS = {"Peer": ("PublicKey", "AllowedIPs", "AllowedIP", "Name")}
_CLIENT = {"Interface": ("PrivateKey", "PrivateKeyFile", "Name", "DNS", *HOOK_KEYS,
                         "FwMark", "Table", "MTU", "PathMTU", "Policy"),
           # PersistentKeepalive: known only to refuse it with the rename (load_client_config)
           "Peer": ("PublicKey", "Endpoint", "KeepaliveInterval", "PersistentKeepalive",
                    "AllowedIPs", "OrphanTimeout", "Reconnect")}
_CLIENT_REPEATABLE = ("DNS", *HOOK_KEYS)


def load_gateway_config(path: str | Path) -> GatewayConfig:
    """Read the gateway config, the peers file and the policy it names."""
    f = _parse(Path(path), _GATEWAY)
    s = f.only("Interface")
    e = s.entries
    private_key = _private_key(f, s)
    listen_port = _int(f, e["ListenPort"], 1, 65535) if "ListenPort" in e else DEFAULT_LISTEN_PORT
    address, address6 = _addresses(f, f.require(s, "Address"))
    xdp_interface = _ifname(f, e["XdpInterface"]) if "XdpInterface" in e else None
    peers_entry = f.require(s, "PeersFile")
    peers = _load_peers(f.resolve(peers_entry.value), address, address6,
                        origin=(f, peers_entry))
    policy, policy_lines = _policy(f, e["Policy"]) if "Policy" in e else (default_policy(), {})
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
    if "MetricsPeers" in e and "MetricsListen" not in e:
        raise f.fail_entry(e["MetricsPeers"], "only meaningful with MetricsListen")
    return GatewayConfig(private_key=private_key, listen_port=listen_port, address=address,
                         xdp_interface=xdp_interface, peers=peers, policy=policy,
                         state_dir=state_dir, node_id=node_id, events_file=events_file,
                         handshakes_per_second=load, store=store, cluster_key=cluster_key,
                         lease_ttl_s=lease_ttl, address6=address6, path_mtu=path_mtu,
                         control_socket=(f.resolve(e["ControlSocket"].value)
                                         if "ControlSocket" in e else None),
                         metrics_listen=(_metrics_listen(f, e["MetricsListen"])
                                         if "MetricsListen" in e else None),
                         metrics_peers=_yes_no(f, e.get("MetricsPeers"), DEFAULT_METRICS_PEERS),
                         max_sessions=(_int(f, e["MaxSessions"], 1, MAX_SESSIONS_RANGE[1])
                                       if "MaxSessions" in e else None),
                         sources=_sources(f, [s], policy_lines), **_events_bounds(f, e))


def _sources(f: _File, sections: list[_Section], extra: dict[str, str] | None = None) -> Sources:
    """``key -> FILE:LINE`` of every key these sections set (the first line of
    a repeated one), plus ``extra`` (the policy file's fields)."""
    lines = {k: f"{f.path}:{en.line}" for s in sections for k, en in s.entries.items()}
    lines |= {f"{k}[{n}]": f"{f.path}:{en.line}" for s in sections
              for k, many in s.repeated.items() for n, en in enumerate(many, start=1)}
    files = {k: f.resolve(en.value) for s in sections for k, en in s.entries.items()
             if k in _FILE_KEYS}
    return Sources(f.path, {**lines, **(extra or {})}, files)


_FILE_KEYS = ("PeersFile", "Policy", "PrivateKeyFile", "ClusterKeyFile")


def _metrics_listen(f: _File, entry: _Entry) -> tuple[str, int]:
    """``PORT`` (localhost), ``IPv4:PORT`` or ``[IPv6]:PORT``: the endpoint
    is unauthenticated (it names peers and keys), so never a host name that
    might resolve somewhere public, and localhost unless the operator says."""
    v = entry.value
    if re.fullmatch(r"[0-9]+", v):
        host, port_text = DEFAULT_METRICS_HOST, v
    elif v.startswith("["):
        host, sep, port_text = v[1:].partition("]:")
        if not sep or not _is_ip(host, 6):
            raise f.fail_entry(entry, f"{v!r}: expected PORT, IPv4:PORT or [IPv6]:PORT")
    else:
        host, sep, port_text = v.rpartition(":")
        if not sep or not _is_ip(host, 4):
            raise f.fail_entry(entry, f"{v!r}: expected PORT, IPv4:PORT or [IPv6]:PORT")
    if not re.fullmatch(r"[0-9]+", port_text) or not 1 <= int(port_text) <= 65535:
        raise f.fail_entry(entry, f"{v!r}: port must be 1..65535")
    return str(ipaddress.ip_address(host)), int(port_text)


def _is_ip(text: str, version: int) -> bool:
    try:
        return ipaddress.ip_address(text).version == version
    except ValueError:
        return False


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


def _policy(f: _File, entry: _Entry) -> tuple[Policy, dict[str, str]]:
    """The policy file ``entry`` names, and ``field -> FILE:LINE`` of the
    fields it sets. An error in the file names the policy file's line first
    (where the fix goes), then the line that named the file."""
    path = f.resolve(entry.value)
    try:
        text = read_config(path)  # checked as it is read: it sets the security bounds
        policy, lines = load_policy_file(path, text)
        return policy, {k: f"{path}:{n}" for k, n in lines.items()}
    except PolicyError as err:
        raise ConfigError(f"{err} (the policy named by {f.path}:{entry.line}: Policy)",
                          err.path, err.line, err.field) from None
    except UnsafeFile as err:
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


def load_peers(path: str | Path, gateway_address: ipaddress.IPv4Interface,
               gateway_address6: ipaddress.IPv6Interface | None = None) -> list[PeerConfig]:
    """The peers allowed to connect, each with its inner address inside
    ``gateway_address``'s network (and ``gateway_address6``'s, if given)."""
    return _load_peers(Path(path), gateway_address, gateway_address6)


def _load_peers(path: Path, gateway_address: ipaddress.IPv4Interface,
                gateway_address6: ipaddress.IPv6Interface | None = None,
                origin: tuple[_File, _Entry] | None = None) -> list[PeerConfig]:
    f = _parse(path, _PEERS, origin)
    peers: list[PeerConfig] = []
    key_lines: dict[bytes, int] = {}
    owned: list[tuple[Network, _Entry, str]] = []  # every peer's prefixes, for overlaps
    for s in f.sections:
        key_entry = f.require(s, "PublicKey")
        public_key = _key(f, key_entry)
        if public_key in key_lines:
            raise f.fail_entry(key_entry, f"duplicate public key (already on line "
                                          f"{key_lines[public_key]})")
        ip_entry = _allowed_ips_entry(f, s)
        inner, inner6, subnets = _peer_prefixes(f, ip_entry, gateway_address, gateway_address6)
        key_lines[public_key] = key_entry.line
        name = s.entries["Name"].value if "Name" in s.entries else keys.encode(public_key)[:8]
        peer = PeerConfig(public_key=public_key, inner=inner, name=name, inner6=inner6,
                          subnets=subnets, origin=f"{f.path}:{s.line}")
        owned.extend((net, ip_entry, name) for net in peer.allowed_ips)
        peers.append(peer)
    _refuse_overlaps(f, owned)
    return peers


def _allowed_ips_entry(f: _File, s: _Section) -> _Entry:
    """``AllowedIPs``, or ``AllowedIP`` (its old spelling), not both."""
    new, old = s.entries.get("AllowedIPs"), s.entries.get("AllowedIP")
    if new is not None and old is not None:
        second, first = sorted((new, old), key=lambda e: e.line, reverse=True)
        raise f.fail_entry(second, f"{first.key} is already given on line {first.line}: "
                                   "give one of AllowedIPs and AllowedIP")
    if new is None and old is None:
        f.require(s, "AllowedIPs")
    return new if new is not None else old


# never routed to a peer: loopback, link-local, multicast, unspecified
_NOT_ROUTABLE = tuple(ipaddress.ip_network(n) for n in (
    "0.0.0.0/8", "127.0.0.0/8", "169.254.0.0/16", "224.0.0.0/3",
    "::/128", "::1/128", "fe80::/10", "ff00::/8"))


def _unicast(net: Network) -> bool:
    return not any(net.version == n.version and net.overlaps(n) for n in _NOT_ROUTABLE)


def _peer_prefixes(f: _File, entry: _Entry, gw4: ipaddress.IPv4Interface,
                   gw6: ipaddress.IPv6Interface | None
                   ) -> tuple[ipaddress.IPv4Address, ipaddress.IPv6Address | None,
                              tuple[Network, ...]]:
    """The peer's AllowedIPs: its assigned IPv4 (the one /32 inside the
    gateway's IPv4 network, mandatory), its assigned IPv6 (the one /128
    inside the gateway's IPv6 network, if any) and the subnets behind it
    (every other prefix: none may overlap the gateway's networks)."""
    inner: ipaddress.IPv4Address | None = None
    inner6: ipaddress.IPv6Address | None = None
    subnets: list[Network] = []
    for item in _list(f, entry):
        net = _prefix(f, entry, item)
        gw = gw4 if net.version == 4 else gw6
        if gw is None or not net.overlaps(gw.network):
            subnets.append(net)
            continue
        host = _assigned_host(f, entry, net, gw)
        held = inner if net.version == 4 else inner6
        if held is not None:
            raise f.fail_entry(entry, f"{net}: a second address inside the gateway's network "
                                      f"{gw.network} (the peer's is {held})")
        if net.version == 4:
            inner = host
        else:
            inner6 = host
    if inner is None:
        given = ", ".join(str(n) for n in subnets if n.version == 4) or "none"
        raise f.fail_entry(entry, f"no /32 inside the gateway's inner network {gw4.network} "
                                  f"(the peer's inner address, mandatory); IPv4 prefixes "
                                  f"outside it are subnets behind the peer: {given}")
    return inner, inner6, tuple(subnets)


# IPv6 spellings of IPv4 addresses: the per-family overlap check cannot see
# that ::ffff:10.0.0.3 is another peer's 10.0.0.3 (a dual-stack socket reads
# it so), so no peer may own any of them (jvpn.tunnel.InnerSourceFilter too)
_IPV4_IN_IPV6 = (ipaddress.ip_network("::ffff:0:0/96"), ipaddress.ip_network("::/96"))


def _prefix(f: _File, entry: _Entry, item: str) -> Network:
    try:
        net = ipaddress.ip_network(item, strict=True)
    except ValueError as e:
        raise f.fail_entry(entry, f"{item}: not an IP prefix ({e})") from None
    if net.version == 6 and any(net.overlaps(n) for n in _IPV4_IN_IPV6):
        raise f.fail_entry(entry, f"{net}: overlaps the IPv6 spellings of IPv4 addresses "
                                  "(::ffff:0:0/96 IPv4-mapped, ::/96 IPv4-compatible)")
    if not _unicast(net):
        raise f.fail_entry(entry, f"{net}: overlaps loopback, link-local, multicast or "
                                  "unspecified addresses")
    return net


def _assigned_host(f: _File, entry: _Entry, net: Network,
                   gw: ipaddress.IPv4Interface | ipaddress.IPv6Interface):
    """``net`` overlaps the gateway's network: only the peer's own host may."""
    gwnet = gw.network
    if net.prefixlen != net.max_prefixlen or net.network_address not in gwnet:
        raise f.fail_entry(entry, f"{net} overlaps the gateway's inner network {gwnet} "
                                  f"(only the peer's own /{net.max_prefixlen} may be in it)")
    ip = net.network_address
    if ip == gw.ip:
        raise f.fail_entry(entry, f"{ip} is the gateway's own address")
    if ip == gwnet.network_address and (net.version == 6 or gwnet.prefixlen <= 30):
        raise f.fail_entry(entry, f"{ip} is the network address of {gwnet}")
    if net.version == 4 and gwnet.prefixlen <= 30 and ip == gwnet.broadcast_address:
        raise f.fail_entry(entry, f"{ip} is the network or broadcast address of {gwnet}")
    return ip


def _refuse_overlaps(f: _File, owned: list[tuple[Network, _Entry, str]]) -> None:
    """Two prefixes that overlap (of two peers, or of one) would make the
    owner of an address ambiguous. Prefixes either nest or are disjoint:
    sorted by start (the wider first), one overlaps an earlier one iff it
    starts inside the last still-open one."""
    for version in (4, 6):
        items = sorted((o for o in owned if o[0].version == version),
                       key=lambda o: (o[0].network_address, o[0].prefixlen))
        open_: list[tuple[Network, _Entry, str]] = []
        for item in items:
            net = item[0]
            while open_ and net.network_address > open_[-1][0].broadcast_address:
                open_.pop()
            if open_:
                _overlap_error(f, open_[-1], item)
            open_.append(item)


def _overlap_error(f: _File, a: tuple[Network, _Entry, str],
                   b: tuple[Network, _Entry, str]) -> None:
    first, second = sorted((a, b), key=lambda o: o[1].line)
    raise f.fail_entry(second[1], f"{second[0]} overlaps {first[0]} of peer {first[2]} "
                                  f"(line {first[1].line})")


Resolver = Callable[[str, int], str]


def resolve_host(host: str, port: int) -> str:
    """The first address getaddrinfo gives for ``host`` (the system's order:
    /etc/hosts, gai.conf preferences)."""
    return socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)[0][4][0]


def load_client_config(path: str | Path, resolve: Resolver = resolve_host) -> ClientConfig:
    """The client's config; an Endpoint host name is resolved here, once
    (``client up`` loads the file when it starts; reattaches do not resolve
    again)."""
    f = _parse(Path(path), _CLIENT, repeatable=_CLIENT_REPEATABLE)
    iface = f.only("Interface")
    peer = f.only("Peer")
    private_key = _private_key(f, iface)
    tun_name = _ifname(f, iface.entries["Name"]) if "Name" in iface.entries else DEFAULT_TUN_NAME
    gateway_public_key = _key(f, f.require(peer, "PublicKey"))
    endpoint_entry = f.require(peer, "Endpoint")
    host, port = _endpoint(f, endpoint_entry)
    name = None
    if is_host_name(host):
        name, host = host, _resolved(f, endpoint_entry, host, port, resolve)
    keepalive_ms = _keepalive(f, peer)
    return ClientConfig(private_key=private_key, tun_name=tun_name,
                        gateway_public_key=gateway_public_key, endpoint=(host, port),
                        keepalive_ms=keepalive_ms, endpoint_name=name,
                        orphan_timeout_ms=_orphan_timeout(f, peer, keepalive_ms),
                        reconnect=_yes_no(f, peer.entries.get("Reconnect"), DEFAULT_RECONNECT),
                        policy=_policy(f, iface.entries["Policy"])[0]
                        if "Policy" in iface.entries else default_policy(),
                        dns=_dns(f, iface), hooks=_hooks(iface),
                        **_client_routing(f, iface, peer, (host, port)),
                        **_client_mtus(f, iface.entries, host), sources=_sources(f, [iface, peer]))


def _resolved(f: _File, entry: _Entry, name: str, port: int, resolve: Resolver) -> str:
    try:
        addr = ipaddress.ip_address(resolve(name, port))
    except (OSError, ValueError, IndexError) as e:
        why = e.strerror if isinstance(e, OSError) and e.strerror else str(e) or type(e).__name__
        raise f.fail_entry(entry, f"host name {name!r} does not resolve: {why}") from None
    what = _not_a_gateway(addr)
    if what:  # a hostile or broken DNS answer: never sent to (this host, a group, nowhere)
        raise f.fail_entry(entry, f"host name {name!r} resolves to {addr}, {what} address: "
                                  "not a gateway (check the name's DNS records or /etc/hosts)")
    return str(addr)


def _not_a_gateway(addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    """Why a resolved Endpoint address cannot be a remote gateway, or None."""
    mapped = getattr(addr, "ipv4_mapped", None)
    a = mapped or addr
    for kind, bad in (("an unspecified", a.is_unspecified), ("a loopback", a.is_loopback),
                      ("a multicast", a.is_multicast), ("a link-local", a.is_link_local),
                      ("a broadcast", a == ipaddress.IPv4Address("255.255.255.255"))):
        if bad:
            return kind
    return None


def _seconds_ms(f: _File, entry: _Entry, lo: int, hi: int) -> int:
    """A number of seconds (at most 3 decimals) in [lo, hi] milliseconds."""
    if not re.fullmatch(r"[0-9]+(\.[0-9]{1,3})?", entry.value):
        raise f.fail_entry(entry, f"not a number of seconds with at most 3 decimals: "
                                  f"{entry.value!r}")
    ms = int(Decimal(entry.value) * 1000)
    if not lo <= ms <= hi:
        raise f.fail_entry(entry, f"{entry.value} s is out of range [{lo / 1000:g}, {hi / 1000:g}]")
    return ms


def _yes_no(f: _File, entry: _Entry | None, default: bool) -> bool:
    if entry is None:
        return default
    value = entry.value.strip().lower()
    if value not in ("yes", "no", "true", "false"):
        raise f.fail_entry(entry, f"{entry.value!r}: must be yes or no")
    return value in ("yes", "true")


def _orphan_timeout(f: _File, peer: _Section, keepalive_ms: int) -> int:
    """OrphanTimeout in seconds: at least ORPHAN_MIN_KEEPALIVES keepalive
    intervals (a few lost replies must not end a healthy session)."""
    entry = peer.entries.get("OrphanTimeout")
    if entry is None:
        return max(DEFAULT_ORPHAN_TIMEOUT_MS, ORPHAN_MIN_KEEPALIVES * keepalive_ms)
    ms = _seconds_ms(f, entry, *ORPHAN_TIMEOUT_RANGE_MS)
    if ms < ORPHAN_MIN_KEEPALIVES * keepalive_ms:
        raise f.fail_entry(entry, f"{entry.value} s is shorter than {ORPHAN_MIN_KEEPALIVES} "
                                  f"KeepaliveIntervals ({keepalive_ms / 1000:g} s each): a few "
                                  "lost keepalive replies would end a healthy session")
    return ms


def _keepalive(f: _File, peer: _Section) -> int:
    """KeepaliveInterval in seconds (decimals allowed) as milliseconds."""
    old = peer.entries.get("PersistentKeepalive")
    if old is not None:
        raise f.fail_entry(old, "renamed to KeepaliveInterval, in seconds (e.g. "
                                "KeepaliveInterval = 0.5); PersistentKeepalive was in "
                                "milliseconds, unlike WireGuard's seconds, so it is not "
                                "reinterpreted: convert the value and rename the key")
    entry = peer.entries.get("KeepaliveInterval")
    if entry is None:
        return DEFAULT_KEEPALIVE_MS
    return _seconds_ms(f, entry, *KEEPALIVE_RANGE_MS)


def _dns(f: _File, iface: _Section) -> ClientDns:
    """Every DNS line, comma-separated: addresses are servers, names search
    domains. Validated strictly: they end up in resolv.conf and in argv."""
    servers: list[str] = []
    search: list[str] = []
    for entry in iface.all("DNS"):
        for item in (x.strip() for x in entry.value.split(",")):
            try:
                servers.append(str(ipaddress.ip_address(item)))
                continue
            except ValueError:
                pass
            if not is_host_name(item):
                raise f.fail_entry(entry, f"{item!r} is neither an IP address nor a domain name")
            search.append(item)
    return ClientDns(tuple(servers), tuple(search))


def _hooks(iface: _Section) -> ClientHooks:
    def commands(key: str) -> tuple[str, ...]:
        return tuple(e.value for e in iface.all(key))

    return ClientHooks(commands("PreUp"), commands("PostUp"), commands("PreDown"),
                       commands("PostDown"))


def _client_routing(f: _File, iface: _Section, peer: _Section, endpoint: tuple[str, int]) -> dict:
    """AllowedIPs, FwMark and Table of a client config (jvpn.client_routes plans from them)."""
    out: dict = {}
    if "AllowedIPs" in peer.entries:
        out["allowed_ips"] = _allowed_ips(f, peer.entries["AllowedIPs"], endpoint[0])
    if "FwMark" in iface.entries:
        out["fwmark"] = _u32(f, iface.entries["FwMark"])
    if "Table" in iface.entries:
        out["table"] = _u32(f, iface.entries["Table"])
        if out["table"] in RESERVED_TABLES:
            raise f.fail_entry(iface.entries["Table"], f"table {out['table']} is reserved "
                               "(0 unspec, 253 default, 254 main, 255 local); pick another")
    return out


def _u32(f: _File, entry: _Entry) -> int:
    """A non-zero 32-bit number, decimal or 0x hexadecimal (as wg and ip write marks)."""
    v = entry.value
    if not re.fullmatch(r"0[xX][0-9a-fA-F]+|[0-9]+", v):
        raise f.fail_entry(entry, f"not a number (decimal or 0x hex): {v!r}")
    n = int(v, 0) if v[:2].lower() == "0x" else int(v)
    if not 1 <= n <= 0xFFFFFFFF:
        raise f.fail_entry(entry, f"{v} is out of range [1, 0xffffffff]")
    return n


def _allowed_ips(f: _File, entry: _Entry, endpoint_host: str) -> tuple[Network, ...]:
    """Comma-separated IPv4/IPv6 prefixes, in order, each once, host bits clear.
    A prefix other than a /0 that holds the endpoint is refused: its route would
    send the tunnel's own datagrams into the tunnel (a /0 goes through the
    marked policy routing instead, which keeps them on the uplinks)."""
    nets: list[Network] = []
    for text in _list(f, entry):
        try:
            net = ipaddress.ip_network(text, strict=False)
        except ValueError:
            raise f.fail_entry(entry, f"{text!r} is not an IPv4 or IPv6 prefix") from None
        if net.network_address != ipaddress.ip_interface(text).ip:
            raise f.fail_entry(entry, f"{text} has host bits set (did you mean {net}?)")
        if net in nets:
            raise f.fail_entry(entry, f"{net} is listed twice")
        if net.prefixlen and ipaddress.ip_address(endpoint_host) in net:
            raise f.fail_entry(entry, f"{net} holds the Endpoint {endpoint_host}: the tunnel's "
                                      "own packets would be routed into it (use a /0 for a "
                                      "full tunnel, or leave the endpoint out)")
        nets.append(net)
    return tuple(nets)


def _client_mtus(f: _File, e: dict, host: str) -> dict:
    """MTU (the TUN's) and PathMTU (the outer path's, at least what the
    endpoint's family must carry), when given."""
    out = {}
    if "MTU" in e:
        out["tun_mtu"] = _int(f, e["MTU"], *TUN_MTU_RANGE)
    if "PathMTU" in e:
        lowest = pathmtu.MIN_PATH_MTU[pathmtu.family_of(host)]
        out["path_mtu"] = _int(f, e["PathMTU"], max(lowest, PATH_MTU_RANGE[0]),
                               PATH_MTU_RANGE[1])
    return out


