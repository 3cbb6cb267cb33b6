"""examples/policy.toml and the README's policy table cannot drift from the
Policy dataclass: the example parses to the default policy, names every
field once with its range, and the README lists every field with the same
default and range."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from jvpn.policy import SPEC, Field, Policy, load_policy_file

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "policy.toml"


def toml_spelling(value) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def range_spelling(f: Field) -> str:
    return "true or false" if f.kind is bool else f"{f.lo}..{f.hi}"


def test_the_example_is_the_default_policy_and_sets_every_field():
    policy, lines = load_policy_file(EXAMPLE)
    assert policy == Policy()
    assert set(lines) == {f.key for f in SPEC} | {"version"}


@pytest.mark.parametrize("f", SPEC, ids=lambda f: f.key)
def test_the_example_states_each_fields_range(f):
    _, lines = load_policy_file(EXAMPLE)
    line = EXAMPLE.read_text().splitlines()[lines[f.key] - 1]
    expected = f"{f.name} = {toml_spelling(f.default)}  # "
    assert line.startswith(expected), line
    rng = range_spelling(f)
    assert (f"# {rng} " if f.kind is bool else f"# range {rng} ") in line, line


def readme_rows() -> dict[str, list[str]]:
    rows = {}
    for line in (ROOT / "README.md").read_text().splitlines():
        m = re.match(r"\| `([a-z_.]+)` \| (.+)", line)
        if m:
            rows[m.group(1)] = [c.strip() for c in m.group(2).split("|")]
    return rows


@pytest.mark.parametrize("f", SPEC, ids=lambda f: f.key)
def test_the_readme_gives_each_fields_default_and_range(f):
    row = readme_rows().get(f.key)
    assert row is not None, f"README has no policy table row for {f.key}"
    assert row[:2] == [toml_spelling(f.default), range_spelling(f)], row


def test_the_readme_gives_the_version_default():
    assert readme_rows()["version"][0] == str(Policy().version)
