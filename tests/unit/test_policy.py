"""Policy validation: defaults (every field optional), ranges, unknown fields,
and errors that name the policy file's own line."""

import pytest

from jvpn.policy import (
    SPEC,
    Policy,
    PolicyError,
    default_policy,
    load_policy,
    load_policy_file,
    policy_from_dict,
)

SAMPLE = {
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


@pytest.mark.parametrize("field", SPEC, ids=lambda f: f.key)
def test_every_field_is_optional(field):
    """A file that leaves one field out gets that field's default (issue 12:
    six fields with defaults used to be mandatory once a file was given)."""
    data = {k: dict(v) if isinstance(v, dict) else v for k, v in SAMPLE.items()}
    data.get(field.section, {}).pop(field.name, None)
    assert getattr(policy_from_dict(data), field.name) == field.default


def test_one_field_is_enough_the_rest_are_defaults(tmp_path):
    f = tmp_path / "policy.toml"
    f.write_text("[session]\ntransport_lost_ttl_ms = 20000\n")
    assert load_policy(f) == Policy(transport_lost_ttl_ms=20_000)


FULL = ("version = 3\n[session]\nmax_lifetime_ms = 3600000\n"
        "[security]\nreattach_proof_max_age_ms = 500\n")


@pytest.mark.parametrize("text", ["", "\n", "# nothing set: every default\n", "version = 3\n",
                                  "version = 3\n[session]\n", "[session]\n[switching]\n"],
                         ids=["empty", "newline", "comment", "version", "cut-at-line",
                              "empty-tables"])
def test_a_file_that_sets_no_field_is_refused(tmp_path, text):
    """Every field is optional: an empty or truncated file (a full disk, a
    copy cut short) would have loaded as the defaults without a word."""
    f = tmp_path / "policy.toml"
    f.write_text(text)
    with pytest.raises(PolicyError) as e:
        load_policy(f)
    assert str(e.value) == (f"{f}: no policy field set: remove `Policy =` for the defaults, "
                            "or set the fields")


@pytest.mark.parametrize("cut", [len(FULL) - 1, len(FULL) - 5, FULL.index("reattach") + 3,
                                 FULL.index("max_lifetime_ms = 36") + 19])
def test_a_file_cut_mid_line_is_refused(tmp_path, cut):
    f = tmp_path / "policy.toml"
    f.write_text(FULL[:cut])
    with pytest.raises(PolicyError) as e:
        load_policy(f)
    assert "does not end with a newline" in str(e.value) and f"{f}:" in str(e.value)
    f.write_text(FULL)
    assert load_policy(f).max_lifetime_ms == 3_600_000


@pytest.mark.parametrize("text,line,needles", [
    ("version = 2\n[session]\n# a comment\nmax_lifetime_ms = 5\n", 4,
     ["session.max_lifetime_ms", "out of range"]),
    ("[security]\nreplay_window_size = 128\nreplay_windw = 1\n", 3,
     ["security.replay_windw", "unknown field", "replay_window_size"]),
    ("[session]\n[securty]\nreplay_window_size = 1\n", 2, ["securty", "unknown section"]),
    ("\nsecurity.replay_window_size = 5\n", 2, ["security.replay_window_size", "range"]),
    ("[transport]\nenforce_hysteresis = 1\n", 2,
     ["transport.enforce_hysteresis", "true or false"]),
    ("version = 0\n", 1, ["version", "positive integer"]),
    ("[session]\nmax_lifetime_ms = 1\nmax_lifetime_ms = 2\n", 3, ["not valid TOML"]),
])
def test_errors_name_the_policy_file_line(tmp_path, text, line, needles):
    f = tmp_path / "policy.toml"
    f.write_text(text)
    with pytest.raises(PolicyError) as err:
        load_policy(f)
    message = str(err.value)
    assert message.startswith(f"{f}:{line}: "), message
    assert err.value.line == line and "\n" not in message
    for needle in needles:
        assert needle in message


def test_load_policy_file_gives_the_lines_of_the_fields_it_sets(tmp_path):
    f = tmp_path / "policy.toml"
    f.write_text("version = 4\n\n[switching]\nmax_switches_per_min = 9\n")
    policy, lines = load_policy_file(f)
    assert policy == Policy(version=4, max_switches_per_min=9)
    assert lines == {"version": 1, "switching.max_switches_per_min": 4}


@pytest.mark.parametrize("section,name,value", [
    ("switching", "max_switches_per_min", 0), ("switching", "max_switches_per_min", 10_000),
    ("session", "transport_lost_ttl_ms", -1), ("volatility", "loss_volatile_threshold", 2.0),
    ("switching", "switch_cooldown_ms", "fast"), ("transport", "enforce_hysteresis", 1),
    ("session", "max_lifetime_ms", 1.5e7),
])
def test_out_of_range_or_wrong_type_is_named(section, name, value):
    data = {k: dict(v) if isinstance(v, dict) else v for k, v in SAMPLE.items()}
    data.setdefault(section, {})[name] = value
    with pytest.raises(PolicyError, match=rf"{section}\.{name}"):
        policy_from_dict(data)


def test_unknown_field_and_bad_files(tmp_path):
    with pytest.raises(PolicyError, match=r"session\.max_lifetime: unknown field"):
        policy_from_dict({**SAMPLE, "session": {"max_lifetime": 1}})
    with pytest.raises(PolicyError, match="no such policy file"):
        load_policy(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("version = [\n")
    with pytest.raises(PolicyError, match="not valid TOML"):
        load_policy(bad)
    assert policy_from_dict({k: v for k, v in SAMPLE.items() if k != "version"}).version == 1


def test_every_default_has_one_home_on_the_dataclass():
    assert Policy() == default_policy()
    assert {f.name for f in SPEC} == set(Policy().as_dict()) - {"version"}
    assert all(f.default == getattr(Policy(), f.name) for f in SPEC)


def test_removed_fields_still_load_and_typos_do_not():
    """heartbeat_interval_ms and strict_validation meant nothing and were
    removed: an old file that sets them loads (ignored), a typo is refused."""
    old = {**SAMPLE, "volatility": {**SAMPLE["volatility"], "heartbeat_interval_ms": 500},
           "security": {**SAMPLE["security"], "strict_validation": True}}
    p = policy_from_dict(old)
    assert not hasattr(p, "heartbeat_interval_ms") and not hasattr(p, "strict_validation")
    with pytest.raises(PolicyError, match=r"security\.strict_validaton: unknown field"):
        policy_from_dict({**SAMPLE, "security": {"strict_validaton": True}})


def test_an_inline_table_error_names_the_tables_line(tmp_path):
    """The line scan does not follow inline tables: the error names the
    table's line, never another one."""
    f = tmp_path / "policy.toml"
    f.write_text("version = 1\n\nsession = { max_lifetime_ms = 5 }\n")
    with pytest.raises(PolicyError) as err:
        load_policy(f)
    assert str(err.value).startswith(f"{f}:3: session.max_lifetime_ms: 5 is out of range")


def test_commented_keys_do_not_move_the_line(tmp_path):
    f = tmp_path / "policy.toml"
    f.write_text("[security]\n# replay_window_size = 64\nreplay_window_size = 8  # too small\n")
    with pytest.raises(PolicyError) as err:
        load_policy(f)
    assert err.value.line == 3


def test_probe_budget_stays_within_the_gates_session_probe_budget():
    """Probes a gateway answers per session (2 per candidate per interval)
    must fit the gate's per-session probe bucket (its default rate is
    MAX_PROBES_PER_S): 16 candidates every 100 ms would take 320/s."""
    from jvpn.gate.config import GateConfig  # noqa: PLC0415
    from jvpn.policy import MAX_PROBES_PER_S  # noqa: PLC0415

    assert GateConfig().session_probe_pps == MAX_PROBES_PER_S
    assert policy_from_dict({"transport": {"max_candidate_count": 5,
                                           "probe_interval_ms": 1000}}).max_candidate_count == 5
    with pytest.raises(PolicyError, match=r"transport\.probe_interval_ms: 100 with "
                                          r"transport\.max_candidate_count 16 .* at least 3200"):
        policy_from_dict({"transport": {"max_candidate_count": 16, "probe_interval_ms": 100}})


def test_reject_after_messages_leaves_room_for_the_clients_retry_skips():
    """Review r14b C: the counters a client's reattach retries skip count
    toward reject_after_messages. The floor covers twice what retries at
    the cap can skip over the longest key life, so an outage's retries
    alone never expire the keys; 32 (the old floor) expired them at the
    first retry."""
    from jvpn.client_reattach import RETRY_SKIP_MAX, retry_skip  # noqa: PLC0415
    from jvpn.config import RETRY_CAP_MS  # noqa: PLC0415
    from jvpn.policy import REJECT_AFTER_MESSAGES_MIN  # noqa: PLC0415

    [longest_life] = [f.hi for f in SPEC if f.key == "keys.reject_after_ms"]
    retries = longest_life // (RETRY_CAP_MS // 2) + 1  # a retry every 2 s at the fastest
    assert retry_skip(1) > 32 and max(map(retry_skip, range(1, 40))) == RETRY_SKIP_MAX
    assert 2 * retries * RETRY_SKIP_MAX <= REJECT_AFTER_MESSAGES_MIN
    with pytest.raises(PolicyError, match=r"keys\.reject_after_messages"):
        policy_from_dict({"keys": {"rekey_after_messages": 16, "reject_after_messages": 32}})
    p = policy_from_dict({"keys": {"rekey_after_messages": 16,
                                   "reject_after_messages": REJECT_AFTER_MESSAGES_MIN}})
    assert p.reject_after_messages == REJECT_AFTER_MESSAGES_MIN
