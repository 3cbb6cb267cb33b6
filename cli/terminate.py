"""`jvpn-xdp terminate SESSION_ID | --peer NAME|PUBKEY`: end sessions of the
running gateway now, through its operator socket."""

from __future__ import annotations

import click

from jvpn.errors import JvpnError
from jvpn.operator import ACTION_TIMEOUT_S

SOCKET_HELP = "The gateway's operator socket (default: <run dir>/gateway.sock; ControlSocket)."


def timeout_option(command):
    """``--timeout SECONDS`` of the commands that wait for the store, once per session."""
    return click.option(
        "--timeout", "timeout_s", type=click.FloatRange(min=0.1), default=ACTION_TIMEOUT_S,
        show_default=True, metavar="SECONDS",
        help="How long to wait for the gateway's answer. The gateway goes on after it: "
             "a slower operation may still complete (see `jvpn-xdp events`).")(command)


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
@timeout_option
@click.pass_obj
def terminate(app, session_id: str | None, peer: str | None, socket_path: str | None,
              as_json: bool, timeout_s: float):
    if (session_id is None) == (peer is None):
        raise click.UsageError("give a SESSION_ID or --peer NAME|PUBKEY (one of them)")
    args = {"peer": peer} if peer is not None else {"session": session_id}
    result = app.ask_daemon("terminate", socket_path, timeout_s=timeout_s, **args)
    if as_json:
        app.emit_json(result)
    else:
        ended = result.get("terminated", [])
        who = f" of peer {result['peer']}" if "peer" in result else ""
        app.say(f"terminated {len(ended)} session(s){who}: "
                f"{', '.join(ended) or 'none served here'}", markup=False)
    refused("session(s) not terminated (they go on)",
            result.get("failed", []))


def refused(what: str, failed: list[str]) -> None:
    """Exit 1 with one line when any of it was not done (--json has each,
    with its cause: the store refused, owned by another gateway, ...)."""
    if not failed:
        return
    more = f"; and {len(failed) - 1} more (--json)" if len(failed) > 1 else ""
    raise JvpnError(f"{len(failed)} {what}: {failed[0]}{more}")
