"""The top-level help's overview names every command and subcommand that
exists, and nothing else, so it cannot drift from the CLI again."""

from __future__ import annotations

import re

import click

from jvpn_cli.main import cli

OVERVIEW_LINE = re.compile(r"^\s*[A-Z][a-z, ]+:\s+(.+)$")


def overview_names() -> set[str]:
    """Every 'word' and 'group sub|sub' named in the overview lines."""
    names = set()
    for line in cli.help.splitlines():
        m = OVERVIEW_LINE.match(line)
        if not m:
            continue
        for item in m.group(1).split(","):
            group, _, subs = item.strip().partition(" ")
            names.add(group)
            names.update(f"{group} {sub}" for sub in subs.split("|") if sub)
    return names


def existing_names() -> set[str]:
    names = set()
    for name, command in cli.commands.items():
        names.add(name)
        if isinstance(command, click.Group):
            names.update(f"{name} {sub}" for sub in command.commands)
    return names


def test_overview_matches_the_commands():
    assert overview_names() == existing_names()
