"""docs/cli.md is the commands' own --help (regenerated here: stale fails),
and shell completion works through click's _JVPN_XDP_COMPLETE variable."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import click
import pytest

from jvpn_cli import reference
from jvpn_cli.main import cli

DOC = Path(__file__).resolve().parents[2] / "docs" / "cli.md"
REGENERATE = ".venv/bin/python -m jvpn_cli.reference > docs/cli.md"


def every_command_path(group: click.Group, prefix: str = "jvpn-xdp") -> set[str]:
    out = {prefix}
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            out |= every_command_path(command, f"{prefix} {name}")
        else:
            out.add(f"{prefix} {name}")
    return out


def test_docs_cli_md_is_current():
    assert DOC.read_text() == reference.markdown(), f"docs/cli.md is stale: run `{REGENERATE}`"


def test_the_reference_has_every_command_and_option():
    text = reference.markdown()
    for path in every_command_path(cli):
        assert f"\n## `{path}`\n" in text, path
    assert "--config" in text and "gateway check" in text and "--json" in text


def run_cli(env: dict[str, str]) -> subprocess.CompletedProcess:
    """The installed entry point's code (jvpn_cli.main:main) in a fresh interpreter."""
    return subprocess.run([sys.executable, "-c", "from jvpn_cli.main import main; main()"],
                          env={**os.environ, **env}, capture_output=True, text=True,
                          timeout=60, check=False)


@pytest.mark.parametrize("shell,needle", [("bash", "complete -o nosort -F _jvpn_xdp_completion"),
                                          ("zsh", "compdef _jvpn_xdp_completion"),
                                          ("fish", "complete --no-files --command")])
def test_completion_scripts_are_produced(shell, needle):
    r = run_cli({"_JVPN_XDP_COMPLETE": f"{shell}_source"})
    assert r.returncode == 0, r.stderr
    assert needle in r.stdout


def test_completion_completes_commands_and_options():
    r = run_cli({"_JVPN_XDP_COMPLETE": "bash_complete", "COMP_WORDS": "jvpn-xdp gateway ch",
                 "COMP_CWORD": "2"})
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["plain,check"]
    r = run_cli({"_JVPN_XDP_COMPLETE": "bash_complete",
                 "COMP_WORDS": "jvpn-xdp gateway check --js", "COMP_CWORD": "3"})
    assert r.stdout.split() == ["plain,--json"]
