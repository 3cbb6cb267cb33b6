"""The session policy: the seed's fields and defaults, loaded from TOML and
validated before anything starts. Every field is optional (its default is on
``Policy``, the one home of the defaults); an unknown field, a wrong type or
an out-of-range value is refused with one line naming the policy file, the
line and the field: ``policy.toml:7: security.replay_window_size: 5 is out of
range [16, 65536]``. ``examples/policy.toml`` lists every field with its
default and range (tests/unit/test_policy_example.py keeps it in step).

    version = 1
    [session]
    max_lifetime_ms = 28800000
    transport_lost_ttl_ms = 15000
    ...
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path


class PolicyError(ValueError):
    """One line: ``FILE:LINE: FIELD: message`` (``FILE: ...`` when no line applies)."""

    def __init__(self, message: str, path: str | None = None, line: int | None = None,
                 field: str | None = None):
        super().__init__(message)
        self.path, self.line, self.field = path, line, field


H = 3_600_000


@dataclass(frozen=True)
class Policy:
    """The one home of every default. Where each field is enforced:

    max_lifetime_ms, transport_lost_ttl_ms, heartbeat_volatile_ms,
    volatile_to_degraded_ms, recovery_expiry_terminates: jvpn/gateway/timers.py;
    max_switches_per_min, switch_cooldown_ms, reattach_proof_max_age_ms:
    jvpn/gateway/reattach.py; recovery_window_ms: bounds RECOVERING (the
    path challenge's deadline and the record's recovery_deadline_ms,
    jvpn/gateway/reattach.py and timers.py); replay_window_size: the
    control-plane replay window (control messages, keepalives: issue 10
    item 5), not the 4032-counter data window compiled into the gate.

    Transport selection (issue 14; docs/protocol.md "Transport selection"),
    on the client, which reads the same policy file (its ``Policy =``):
    loss_window_ms, loss_volatile_threshold, max_consecutive_drops and
    heartbeat_volatile_ms declare its active path VOLATILE
    (jvpn/client_path_health.py); switch_improvement_factor,
    enforce_hysteresis, switch_cooldown_ms and max_switches_per_min decide
    whether it moves to a candidate (jvpn/client_path_select.py);
    max_candidate_count bounds its candidate paths and probe_interval_ms
    how often each candidate is probed (jvpn/client_candidates.py). The
    gateway bounds the probes it answers from max_candidate_count and
    probe_interval_ms (jvpn/gateway/probes.py).

    The key lifecycle (``keys.*``, issue 13; docs/protocol.md "Rekey"),
    WireGuard's timers by default: the gateway asks for a rekey once the
    current keys are ``rekey_after_ms`` old or have sealed
    ``rekey_after_messages`` messages either way; it refuses them at
    ``reject_after_ms`` / ``reject_after_messages`` (KeyExpired, then
    TERMINATED, or DEGRADED when ``expiry_terminates`` is false); it keeps
    accepting the previous keys for ``rekey_overlap_ms`` after the client
    first used the new ones, accepts a rekey only when it asked for one,
    and accepts at most ``max_rekey_attempts`` client ephemerals per epoch
    (a re-send counts once; a commit the store did not apply is taken back;
    DEGRADED by expiry starts afresh). jvpn/gateway/rekey.py."""

    version: int = 1
    max_lifetime_ms: int = 8 * H
    transport_lost_ttl_ms: int = 15_000
    heartbeat_volatile_ms: int = 2_000
    loss_window_ms: int = 2_000
    loss_volatile_threshold: float = 0.20
    max_consecutive_drops: int = 3
    volatile_to_degraded_ms: int = 4_000
    max_switches_per_min: int = 8
    switch_cooldown_ms: int = 1_500
    recovery_window_ms: int = 8_000
    switch_improvement_factor: float = 1.10
    max_candidate_count: int = 3
    enforce_hysteresis: bool = True
    probe_interval_ms: int = 1_000  # each candidate path probed this often (issue 14)
    reattach_proof_max_age_ms: int = 5_000
    replay_window_size: int = 128
    recovery_expiry_terminates: bool = False  # what recovery-window expiry leads to
    # key lifecycle (issue 13): WireGuard's REKEY_AFTER_TIME, REJECT_AFTER_TIME,
    # REKEY_AFTER_MESSAGES; the reject-after count is 2^62 (WireGuard's is
    # about 2^64: a TOML integer stops at 2^63 - 1, and a session's counters,
    # all epochs together, stop at the gate's limit of 2^64 - 4097 anyway)
    rekey_after_ms: int = 120_000
    reject_after_ms: int = 180_000
    rekey_after_messages: int = 1 << 60
    reject_after_messages: int = 1 << 62
    rekey_overlap_ms: int = 5_000
    max_rekey_attempts: int = 20
    expiry_terminates: bool = True  # KeyExpired: TERMINATED (true) or DEGRADED

    def as_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}


_DEFAULTS = {f.name: f.default for f in fields(Policy)}


@dataclass(frozen=True)
class Field:
    """How one policy field is read: its section, range and kind (its
    default lives on ``Policy``)."""

    section: str
    name: str
    lo: float
    hi: float
    kind: type = int

    @property
    def key(self) -> str:
        return f"{self.section}.{self.name}"

    @property
    def default(self):
        return _DEFAULTS[self.name]


# The counters a client's reattach retries leave unused (jvpn/client_reattach.py
# retry_skip: at most 2^24 a retry, and a retry at most every 2 s once backed
# off: jvpn/config.py RETRY_CAP_MS, jittered down to half) count toward
# reject_after_messages as sealed messages do. Over the longest key life
# (keys.reject_after_ms, at most 7 days) they stay under 302,400 x 2^24 <
# 2^43: with this floor, at most half the limit goes to skips, and an
# outage's retries alone never expire an epoch's keys (review r14b C: the
# old floor, 32, expired them at the first retry). The client cannot adapt
# its skips instead: it is not told the gateway's policy.
REJECT_AFTER_MESSAGES_MIN = 1 << 44

SPEC = [
    Field("session", "max_lifetime_ms", 60_000, 7 * 24 * H),
    Field("session", "transport_lost_ttl_ms", 1_000, 3_600_000),
    Field("volatility", "heartbeat_volatile_ms", 100, 300_000),
    Field("volatility", "loss_window_ms", 100, 300_000),
    Field("volatility", "loss_volatile_threshold", 0.01, 1.0, kind=float),
    Field("volatility", "max_consecutive_drops", 1, 1000),
    Field("volatility", "volatile_to_degraded_ms", 100, 600_000),
    Field("switching", "max_switches_per_min", 1, 600),
    Field("switching", "switch_cooldown_ms", 0, 600_000),
    Field("switching", "recovery_window_ms", 100, 600_000),
    Field("switching", "switch_improvement_factor", 1.0, 10.0, kind=float),
    Field("transport", "max_candidate_count", 1, 16),
    Field("transport", "enforce_hysteresis", 0, 1, kind=bool),
    Field("transport", "probe_interval_ms", 100, 60_000),
    Field("security", "reattach_proof_max_age_ms", 100, 120_000),
    Field("security", "replay_window_size", 16, 65_536),
    Field("security", "recovery_expiry_terminates", 0, 1, kind=bool),
    Field("keys", "rekey_after_ms", 100, 7 * 24 * H),
    Field("keys", "reject_after_ms", 200, 7 * 24 * H),
    Field("keys", "rekey_after_messages", 16, 1 << 62),
    Field("keys", "reject_after_messages", REJECT_AFTER_MESSAGES_MIN, (1 << 63) - 1),
    Field("keys", "rekey_overlap_ms", 0, 600_000),
    Field("keys", "max_rekey_attempts", 1, 1000),
    Field("keys", "expiry_terminates", 0, 1, kind=bool),
]

# Fields that were parsed but meant nothing, removed (issue 9): the client's
# keepalive interval is the client's own setting, and every check is strict.
# An old policy file that sets one still loads and the value is ignored; any
# other unknown field is refused (a typo must not pass silently).
RETIRED = frozenset({"volatility.heartbeat_interval_ms", "security.strict_validation"})


def default_policy() -> Policy:
    return Policy()


def load_policy(path: Path) -> Policy:
    return load_policy_file(path)[0]


def load_policy_file(path: Path, text: str | None = None) -> tuple[Policy, dict[str, int]]:
    """The policy in ``path`` and the line of every field it sets
    (``section.name`` -> line; fields it leaves out have their default).
    ``text``: the file as the caller read and checked it (jvpn.files.read_config)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig") if text is None else text
    except FileNotFoundError:
        raise PolicyError(f"{path}: no such policy file", str(path)) from None
    _refuse_cut_short(path, text)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        line = _toml_error_line(str(e))
        where = f"{path}:{line}" if line else f"{path}"
        raise PolicyError(f"{where}: not valid TOML: {e}", str(path), line) from None
    lines = key_lines(text)
    policy = policy_from_dict(data, str(path), lines)
    _refuse_no_field(path, data)
    return policy, {k: n for k, n in lines.items() if k in _FIELD_KEYS or k == "version"}


def _refuse_cut_short(path: Path, text: str) -> None:
    """Every field being optional, a truncated file would load as the
    defaults of what it lost without a word (8 h sessions where the file
    said 1 h). A last line without its newline is a file cut while being
    written: refused before its cut value is read (docs/decisions.md)."""
    if text and not text.endswith("\n"):
        last = len(text.splitlines())
        raise PolicyError(f"{path}:{last}: the file does not end with a newline: cut short "
                          "while being written? (end its last line with a newline)",
                          str(path), last)


def _refuse_no_field(path: Path, data: dict) -> None:
    """An empty file (a full disk, a copy cut at its start) sets nothing:
    refused rather than taken for "the defaults, on purpose"."""
    if not any(isinstance(data.get(f.section), dict) and f.name in data[f.section]
               for f in SPEC):
        raise PolicyError(f"{path}: no policy field set: remove `Policy =` for the "
                          "defaults, or set the fields", str(path))


def _toml_error_line(message: str) -> int | None:
    m = re.search(r"\(at line ([0-9]+),", message)
    return int(m.group(1)) if m else None


_HEADER = re.compile(r"\[\s*([A-Za-z0-9_.\s\"-]+?)\s*\]")
_KEY = re.compile(r"([A-Za-z0-9_.\s\"-]+?)\s*=")


def key_lines(text: str) -> dict[str, int]:
    """Where each key and table of a TOML text is: ``section.name`` (and
    ``section``) -> line number. tomllib gives values, not positions; this
    scan only has to find the simple spellings a policy file uses (tables,
    dotted keys); a key it misses is reported without a line."""
    out: dict[str, int] = {}
    table = ""
    for n, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        header = _HEADER.fullmatch(line.split("#", 1)[0].strip())
        if header:
            table = _dotted(header.group(1))
            out.setdefault(table, n)
            continue
        key = _KEY.match(line)
        if key and not line.startswith("#"):
            full = ".".join(p for p in (table, _dotted(key.group(1))) if p)
            out.setdefault(full, n)
            out.setdefault(full.split(".", 1)[0], n)
    return out


def _dotted(key: str) -> str:
    return ".".join(part.strip().strip('"') for part in key.split("."))


_FIELD_KEYS = frozenset(f.key for f in SPEC)


def policy_from_dict(data: dict, origin: str = "policy",
                     lines: dict[str, int] | None = None) -> Policy:
    """Every field is optional: absent ones take their default from ``Policy``."""
    where = _Where(origin, lines or {})
    known_sections = {f.section for f in SPEC}
    for key, value in data.items():
        if key == "version":
            continue
        if key not in known_sections or not isinstance(value, dict):
            raise where.error(key, f"unknown section or key (known: version, "
                                   f"{', '.join(sorted(known_sections))})")
        for name in value:
            known = any(f.section == key and f.name == name for f in SPEC)
            if not known and f"{key}.{name}" not in RETIRED:
                fields_here = ", ".join(f.name for f in SPEC if f.section == key)
                raise where.error(f"{key}.{name}", f"unknown field (known in [{key}]: "
                                                   f"{fields_here})")
    version = data.get("version", _DEFAULTS["version"])
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise where.error("version", f"must be a positive integer, got {version!r}")
    values = {f.name: _field_value(data, f, where) for f in SPEC}
    _check_key_lifecycle(values, where)
    _check_probe_budget(values, where)
    return Policy(version=version, **values)


def _check_key_lifecycle(v: dict, where: _Where) -> None:
    """The key timers must nest: a rekey starts before the keys are refused,
    and the previous epoch is gone before the next rekey may start (a key
    ring holds two epochs)."""
    if v["reject_after_ms"] <= v["rekey_after_ms"]:
        raise where.error("keys.reject_after_ms", f"{v['reject_after_ms']} must be greater "
                          f"than keys.rekey_after_ms ({v['rekey_after_ms']})")
    if v["reject_after_messages"] <= v["rekey_after_messages"]:
        raise where.error("keys.reject_after_messages", "must be greater than "
                          f"keys.rekey_after_messages ({v['rekey_after_messages']})")
    if v["rekey_overlap_ms"] >= v["rekey_after_ms"]:
        raise where.error("keys.rekey_overlap_ms", f"{v['rekey_overlap_ms']} must be less "
                          f"than keys.rekey_after_ms ({v['rekey_after_ms']})")


# The probes a gateway answers per session and second (2 per candidate per
# probe interval, jvpn/gateway/probes.py) stay within the gate's per-session
# probe bucket (jvpn/gate/config.py session_probe_pps, 10/s by default): a
# bucket of its own, so probes never starve the session's reattach.
MAX_PROBES_PER_S = 10


def probe_rate(max_candidate_count: int, probe_interval_ms: int) -> float:
    """Probes a second the gateway answers for one session at most."""
    return 2 * max_candidate_count * 1000 / probe_interval_ms


def _check_probe_budget(v: dict, where: _Where) -> None:
    rate = probe_rate(v["max_candidate_count"], v["probe_interval_ms"])
    if rate > MAX_PROBES_PER_S:
        least = 2 * v["max_candidate_count"] * 1000 // MAX_PROBES_PER_S
        raise where.error("transport.probe_interval_ms", f"{v['probe_interval_ms']} with "
                          f"transport.max_candidate_count {v['max_candidate_count']} lets "
                          f"a session's probes take {rate:g}/s, more than {MAX_PROBES_PER_S}/s "
                          f"(the gate's per-session probe budget): at least {least}")


@dataclass(frozen=True)
class _Where:
    """Builds errors that name the policy file and the line of a field."""

    origin: str
    lines: dict[str, int]

    def error(self, key: str, message: str) -> PolicyError:
        line = self.lines.get(key, self.lines.get(key.split(".", 1)[0]))
        place = f"{self.origin}:{line}" if line else self.origin
        return PolicyError(f"{place}: {key}: {message}", self.origin, line, key)


def _field_value(data: dict, f: Field, where: _Where):
    section = data.get(f.section, {})
    if f.name not in section:
        return f.default
    v = section[f.name]
    if f.kind is bool:
        if not isinstance(v, bool):
            raise where.error(f.key, f"must be true or false, got {v!r}")
        return v
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise where.error(f.key, f"must be a number, got {v!r}")
    if f.kind is int and not isinstance(v, int):
        raise where.error(f.key, f"must be an integer, got {v!r}")
    if not f.lo <= v <= f.hi:
        raise where.error(f.key, f"{v} is out of range [{f.lo}, {f.hi}]")
    return f.kind(v)
