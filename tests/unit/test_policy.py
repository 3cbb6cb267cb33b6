"""Policy validation: defaults, mandatory fields, ranges, unknown fields."""

import pytest

from jvpn.policy import (
    CANDIDATE_PATH,
    SPEC,
    Policy,
    PolicyError,
    default_policy,
    load_policy,
    policy_from_dict,
)

MANDATORY = {
    "version": 3,
    "session": {"max_lifetime_ms": 28_800_000, "transport_lost_ttl_ms": 15_000},
    "volatility": {"loss_volatile_threshold": 0.2},
    "switching": {"max_switches_per_min": 8, "recovery_window_ms": 8_000},
    "security": {"reattach_proof_max_age_ms": 5_000},
}


def test_defaults_are_the_seed():
    p = default_policy()
    assert (p.max_lifetime_ms, p.transport_lost_ttl_ms,
            p.heartbeat_volatile_ms, p.max_switches_per_min, p.switch_cooldown_ms,
            p.recovery_window_ms, p.reattach_proof_max_age_ms) == (
        8 * 3_600_000, 15_000, 2_000, 8, 1_500, 8_000, 5_000)


def test_minimal_file_loads(tmp_path):
    f = tmp_path / "policy.toml"
    f.write_text("""version = 2
[session]
max_lifetime_ms = 3600000
transport_lost_ttl_ms = 15000
[volatility]
loss_volatile_threshold = 0.2
[switching]
max_switches_per_min = 4
recovery_window_ms = 8000
[security]
reattach_proof_max_age_ms = 5000
""")
    p = load_policy(f)
    assert p.version == 2 and p.max_switches_per_min == 4 and p.switch_cooldown_ms == 1_500


@pytest.mark.parametrize("field", [f for f in SPEC if f.mandatory], ids=lambda f: f.key)
def test_missing_mandatory_field_is_named(field):
    data = {k: dict(v) if isinstance(v, dict) else v for k, v in MANDATORY.items()}
    del data[field.section][field.name]
    with pytest.raises(PolicyError, match=field.key.replace(".", r"\.")):
        policy_from_dict(data)


@pytest.mark.parametrize("section,name,value", [
    ("switching", "max_switches_per_min", 0), ("switching", "max_switches_per_min", 10_000),
    ("session", "transport_lost_ttl_ms", -1), ("volatility", "loss_volatile_threshold", 2.0),
    ("switching", "switch_cooldown_ms", "fast"), ("transport", "enforce_hysteresis", 1),
    ("session", "max_lifetime_ms", 1.5e7),
])
def test_out_of_range_or_wrong_type_is_named(section, name, value):
    data = {k: dict(v) if isinstance(v, dict) else v for k, v in MANDATORY.items()}
    data.setdefault(section, {})[name] = value
    with pytest.raises(PolicyError, match=rf"{section}\.{name}"):
        policy_from_dict(data)


def test_unknown_field_and_bad_files(tmp_path):
    with pytest.raises(PolicyError, match=r"unknown field session\.max_lifetime"):
        policy_from_dict({**MANDATORY, "session": {"max_lifetime": 1}})
    with pytest.raises(PolicyError, match="no such policy file"):
        load_policy(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("version = [")
    with pytest.raises(PolicyError, match="not valid TOML"):
        load_policy(bad)
    with pytest.raises(PolicyError, match="version"):
        policy_from_dict({k: v for k, v in MANDATORY.items() if k != "version"})


def test_every_default_has_one_home_on_the_dataclass():
    assert Policy() == default_policy()
    assert {f.name for f in SPEC} == set(Policy().as_dict()) - {"version"}
    assert all(f.default == getattr(Policy(), f.name) for f in SPEC)
    assert CANDIDATE_PATH <= {f.name for f in SPEC}


def test_removed_fields_still_load_and_typos_do_not():
    """heartbeat_interval_ms and strict_validation meant nothing and were
    removed: an old file that sets them loads (ignored), a typo is refused."""
    old = {**MANDATORY, "volatility": {**MANDATORY["volatility"], "heartbeat_interval_ms": 500},
           "security": {**MANDATORY["security"], "strict_validation": True}}
    p = policy_from_dict(old)
    assert not hasattr(p, "heartbeat_interval_ms") and not hasattr(p, "strict_validation")
    with pytest.raises(PolicyError, match=r"unknown field security\.strict_validaton"):
        policy_from_dict({**MANDATORY, "security": {"strict_validaton": True}})
