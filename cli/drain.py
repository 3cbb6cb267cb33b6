"""`jvpn-xdp drain [--off]`: the running gateway refuses new sessions (or
admits them again); the existing ones go on until they move or end."""

from __future__ import annotations

import click

from jvpn_cli.terminate import SOCKET_HELP


@click.command(help="Refuse new sessions on the running gateway: handshakes get no answer "
                    "(a HandshakeRejected event, reason DRAINING), while existing sessions "
                    "keep passing traffic, reattach and move until they end. --off admits "
                    "new sessions again. A runtime state: a restarted gateway admits.")
@click.option("--off", is_flag=True, help="Admit new sessions again.")
@click.option("--socket", "socket_path", metavar="PATH", help=SOCKET_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_obj
def drain(app, off: bool, socket_path: str | None, as_json: bool):
    result = app.ask_daemon("drain", socket_path, on=not off)
    if as_json:
        app.emit_json(result)
        return
    state = "draining: new sessions refused" if result["draining"] else "admitting new sessions"
    app.say(f"{state}; {result['sessions']} session(s) served", markup=False)
