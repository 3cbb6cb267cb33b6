"""The session policy: the seed's fields and defaults, loaded from TOML and
validated before anything starts. A missing mandatory field or an
out-of-range value is refused with a message naming the file and the field.

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
from typing import Any


class PolicyError(ValueError):
    pass


@dataclass(frozen=True)
class Field:
    section: str
    name: str
    default: Any
    lo: float
    hi: float
    mandatory: bool = False
    kind: type = int

    @property
    def key(self) -> str:
        return f"{self.section}.{self.name}"


H = 3_600_000
SPEC = [
    Field("session", "max_lifetime_ms", 8 * H, 60_000, 7 * 24 * H, mandatory=True),
    Field("session", "transport_lost_ttl_ms", 15_000, 1_000, 3_600_000, mandatory=True),
    Field("volatility", "heartbeat_interval_ms", 500, 50, 60_000),
    Field("volatility", "heartbeat_volatile_ms", 2_000, 100, 300_000),
    Field("volatility", "loss_window_ms", 2_000, 100, 300_000),
    Field("volatility", "loss_volatile_threshold", 0.20, 0.01, 1.0, mandatory=True, kind=float),
    Field("volatility", "max_consecutive_drops", 3, 1, 1000),
    Field("volatility", "volatile_to_degraded_ms", 4_000, 100, 600_000),
    Field("switching", "max_switches_per_min", 8, 1, 600, mandatory=True),
    Field("switching", "switch_cooldown_ms", 1_500, 0, 600_000),
    Field("switching", "recovery_window_ms", 8_000, 100, 600_000, mandatory=True),
    Field("switching", "switch_improvement_factor", 1.10, 1.0, 10.0, kind=float),
    Field("transport", "max_candidate_count", 3, 1, 16),
    Field("transport", "enforce_hysteresis", True, 0, 1, kind=bool),
    Field("security", "reattach_proof_max_age_ms", 5_000, 100, 120_000, mandatory=True),
    Field("security", "replay_window_size", 128, 16, 65_536),
    Field("security", "strict_validation", True, 0, 1, kind=bool),
    Field("security", "recovery_expiry_terminates", False, 0, 1, kind=bool),
]


@dataclass(frozen=True)
class Policy:
    version: int
    max_lifetime_ms: int
    transport_lost_ttl_ms: int
    heartbeat_interval_ms: int
    heartbeat_volatile_ms: int
    loss_window_ms: int
    loss_volatile_threshold: float
    max_consecutive_drops: int
    volatile_to_degraded_ms: int
    max_switches_per_min: int
    switch_cooldown_ms: int
    recovery_window_ms: int
    switch_improvement_factor: float
    max_candidate_count: int
    enforce_hysteresis: bool
    reattach_proof_max_age_ms: int
    replay_window_size: int
    strict_validation: bool
    recovery_expiry_terminates: bool  # what recovery-window expiry leads to

    def as_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def default_policy() -> Policy:
    return Policy(version=1, **{f.name: f.default for f in SPEC})


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
            if not any(f.section == key and f.name == name for f in SPEC):
                raise PolicyError(f"{origin}: unknown field {key}.{name}")
    version = data.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise PolicyError(f"{origin}: 'version' must be a positive integer")
    values = {f.name: _field_value(data, f, origin) for f in SPEC}
    if values["heartbeat_volatile_ms"] <= values["heartbeat_interval_ms"]:
        raise PolicyError(f"{origin}: volatility.heartbeat_volatile_ms must exceed "
                          "volatility.heartbeat_interval_ms")
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
