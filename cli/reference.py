"""The command reference, docs/cli.md, generated from the commands
themselves: every command's `--help` as the operator sees it, at 80
columns, one section per command. tests/cli/test_cli_reference.py fails
when docs/cli.md is stale; regenerate it with

    .venv/bin/python -m jvpn_cli.reference > docs/cli.md

Not imported by jvpn_cli.main (it imports main, to walk the commands)."""

from __future__ import annotations

import click

WIDTH = 80
PROG = "jvpn-xdp"

HEAD = f"""# `{PROG}` command reference

Generated from the commands' own `--help` by
`.venv/bin/python -m jvpn_cli.reference > docs/cli.md` (a test fails when
this file is stale). `{PROG} COMMAND --help` prints the same.

## Shell completion

click generates it; load it once per shell, or install it for everyone:

    eval "$(_JVPN_XDP_COMPLETE=bash_source {PROG})"        # ~/.bashrc (bash >= 4.4)
    eval "$(_JVPN_XDP_COMPLETE=zsh_source {PROG})"         # ~/.zshrc
    _JVPN_XDP_COMPLETE=fish_source {PROG} > ~/.config/fish/completions/{PROG}.fish
    _JVPN_XDP_COMPLETE=bash_source {PROG} > /etc/bash_completion.d/{PROG}  # system-wide

It completes command and option names, and file names where an option takes a file.
"""


def _walk(command: click.Command, ctx: click.Context):
    """(context, command) for ``command`` and every subcommand, depth first."""
    yield ctx, command
    if isinstance(command, click.Group):
        for name in sorted(command.commands):
            sub = command.commands[name]
            if sub.hidden:
                continue
            child = click.Context(sub, info_name=name, parent=ctx, terminal_width=WIDTH,
                                  max_content_width=WIDTH)
            yield from _walk(sub, child)


def markdown(root: click.Command | None = None) -> str:
    """docs/cli.md: the head, then one section per command."""
    if root is None:
        from jvpn_cli.main import cli  # noqa: PLC0415 - main must not import this module

        root = cli
    # the root's context settings (-h as --help), as `jvpn-xdp` itself makes its context
    top = click.Context(root, info_name=PROG, terminal_width=WIDTH, max_content_width=WIDTH,
                        **root.context_settings)
    parts = [HEAD]
    for ctx, command in _walk(root, top):
        parts.append(f"\n## `{ctx.command_path}`\n\n```\n{command.get_help(ctx)}\n```\n")
    return "".join(parts)


if __name__ == "__main__":
    click.echo(markdown(), nl=False)
