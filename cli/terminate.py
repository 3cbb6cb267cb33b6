"""`jvpn-xdp terminate SESSION_ID | --peer NAME|PUBKEY`: end sessions of the
running gateway now, through its operator socket."""

from __future__ import annotations

import click

SOCKET_HELP = "The gateway's operator socket (default: <run dir>/gateway.sock; ControlSocket)."


@click.command(help="End a session of the running gateway now, or every session of a peer "
                    "(--peer: its Name or base64 public key). The binding leaves the gate at "
                    "once, the client gets an authenticated TERMINATE and exits naming the "
                    "reason, and the SessionTerminated event carries OPERATOR_TERMINATED. "
                    "In a cluster, a session another gateway owns is refused, naming that "
                    "gateway: terminate it there.")
@click.argument("session_id", required=False, metavar="[SESSION_ID]")
@click.option("--peer", metavar="NAME|PUBKEY", help="Every session of this peer.")
@click.option("--socket", "socket_path", metavar="PATH", help=SOCKET_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_obj
def terminate(app, session_id: str | None, peer: str | None, socket_path: str | None,
              as_json: bool):
    if (session_id is None) == (peer is None):
        raise click.UsageError("give a SESSION_ID or --peer NAME|PUBKEY (one of them)")
    args = {"peer": peer} if peer is not None else {"session": session_id}
    result = app.ask_daemon("terminate", socket_path, **args)
    if as_json:
        app.emit_json(result)
        return
    ended = result.get("terminated", [])
    who = f" of peer {result['peer']}" if "peer" in result else ""
    app.say(f"terminated {len(ended)} session(s){who}: {', '.join(ended) or 'none served here'}",
            markup=False)
    for line in result.get("failed", []):
        app.warn(f"not terminated (the store refused; it goes on): {line}")
