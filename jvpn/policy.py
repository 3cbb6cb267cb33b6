"""The session policy: the seed's fields and defaults, loaded from TOML and
validated before anything starts. A missing mandatory field, an unknown
field or an out-of-range value is refused with a message naming the file and
the field. Defaults live on ``Policy`` only.

    version = 1
    [session]
    max_lifetime_ms = 28800000
    transport_lost_ttl_ms = 15000
    ...
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, fields
from pathlib import Path


class PolicyError(ValueError):
    pass


H = 3_600_000
NOT_YET = "parsed and validated, not enforced yet (issue 14)"


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
    The candidate-path fields (``CANDIDATE_PATH``) are NOT_YET."""

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
    reattach_proof_max_age_ms: int = 5_000
    replay_window_size: int = 128
    recovery_expiry_terminates: bool = False  # what recovery-window expiry leads to

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
    mandatory: bool = False
    kind: type = int

    @property
    def key(self) -> str:
        return f"{self.section}.{self.name}"

    @property
    def default(self):
        return _DEFAULTS[self.name]


SPEC = [
    Field("session", "max_lifetime_ms", 60_000, 7 * 24 * H, mandatory=True),
    Field("session", "transport_lost_ttl_ms", 1_000, 3_600_000, mandatory=True),
    Field("volatility", "heartbeat_volatile_ms", 100, 300_000),
    Field("volatility", "loss_window_ms", 100, 300_000),
    Field("volatility", "loss_volatile_threshold", 0.01, 1.0, mandatory=True, kind=float),
    Field("volatility", "max_consecutive_drops", 1, 1000),
    Field("volatility", "volatile_to_degraded_ms", 100, 600_000),
    Field("switching", "max_switches_per_min", 1, 600, mandatory=True),
    Field("switching", "switch_cooldown_ms", 0, 600_000),
    Field("switching", "recovery_window_ms", 100, 600_000, mandatory=True),
    Field("switching", "switch_improvement_factor", 1.0, 10.0, kind=float),
    Field("transport", "max_candidate_count", 1, 16),
    Field("transport", "enforce_hysteresis", 0, 1, kind=bool),
    Field("security", "reattach_proof_max_age_ms", 100, 120_000, mandatory=True),
    Field("security", "replay_window_size", 16, 65_536),
    Field("security", "recovery_expiry_terminates", 0, 1, kind=bool),
]

# The seed's candidate-path model (transport selection, issue 14): NOT_YET.
CANDIDATE_PATH = frozenset({
    "loss_window_ms", "loss_volatile_threshold", "max_consecutive_drops",
    "switch_improvement_factor", "max_candidate_count", "enforce_hysteresis"})

# Fields that were parsed but meant nothing, removed (issue 9): the client's
# keepalive interval is the client's own setting, and every check is strict.
# An old policy file that sets one still loads and the value is ignored; any
# other unknown field is refused (a typo must not pass silently).
RETIRED = frozenset({"volatility.heartbeat_interval_ms", "security.strict_validation"})


def default_policy() -> Policy:
    return Policy()


def load_policy(path: Path) -> Policy:
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise PolicyError(f"{path}: no such policy file") from None
    except tomllib.TOMLDecodeError as e:
        raise PolicyError(f"{path}: not valid TOML: {e}") from None
    return policy_from_dict(data, str(path))


def policy_from_dict(data: dict, origin: str = "policy") -> Policy:
    known_sections = {f.section for f in SPEC}
    for key, value in data.items():
        if key == "version":
            continue
        if key not in known_sections or not isinstance(value, dict):
            raise PolicyError(f"{origin}: unknown section or key {key!r}")
        for name in value:
            known = any(f.section == key and f.name == name for f in SPEC)
            if not known and f"{key}.{name}" not in RETIRED:
                raise PolicyError(f"{origin}: unknown field {key}.{name}")
    version = data.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise PolicyError(f"{origin}: 'version' must be a positive integer")
    values = {f.name: _field_value(data, f, origin) for f in SPEC}
    return Policy(version=version, **values)



def _field_value(data: dict, f: Field, origin: str):
    section = data.get(f.section, {})
    if f.name not in section:
        if f.mandatory:
            raise PolicyError(f"{origin}: mandatory field {f.key} is missing")
        return f.default
    v = section[f.name]
    if f.kind is bool:
        if not isinstance(v, bool):
            raise PolicyError(f"{origin}: {f.key} must be true or false, got {v!r}")
        return v
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise PolicyError(f"{origin}: {f.key} must be a number, got {v!r}")
    if f.kind is int and not isinstance(v, int):
        raise PolicyError(f"{origin}: {f.key} must be an integer, got {v!r}")
    if not f.lo <= v <= f.hi:
        raise PolicyError(f"{origin}: {f.key} = {v} is out of range [{f.lo}, {f.hi}]")
    return f.kind(v)
