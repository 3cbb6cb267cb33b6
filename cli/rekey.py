"""`jvpn-xdp rekey SESSION_ID | --peer NAME|PUBKEY`: ask the running gateway
for a rekey of a session (or of every session of a peer) now, through its
operator socket (issue 13; docs/protocol.md "Rekey")."""

from __future__ import annotations

import click

from jvpn_cli.terminate import SOCKET_HELP, refused


@click.command(help="Force a rekey of a session of the running gateway now, or of every "
                    "session of a peer (--peer: its Name or base64 public key), whatever "
                    "the age of its keys. The gateway flags its next replies with a rekey "
                    "request and the client runs the exchange: new keys from a fresh "
                    "ephemeral key exchange (forward secrecy), the same session. A "
                    "KeyRotated event with the new key_epoch follows once the client uses "
                    "them (`jvpn-xdp events`; `sessions` shows the epoch and the key age, "
                    "and `sessions --json` rekey_requested until the new keys are committed). "
                    "Exit 1 if a session was not marked: unknown, awaiting its revocation, "
                    "or in a cluster owned by another gateway (named: rekey it there).")
@click.argument("session_id", required=False, metavar="[SESSION_ID]")
@click.option("--peer", metavar="NAME|PUBKEY", help="Every session of this peer.")
@click.option("--socket", "socket_path", metavar="PATH", help=SOCKET_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_obj
def rekey(app, session_id: str | None, peer: str | None, socket_path: str | None,
          as_json: bool):
    if (session_id is None) == (peer is None):
        raise click.UsageError("give a SESSION_ID or --peer NAME|PUBKEY (one of them)")
    args = {"peer": peer} if peer is not None else {"session": session_id}
    result = app.ask_daemon("rekey", socket_path, **args)
    if as_json:
        app.emit_json(result)
    else:
        app.say(summary(result), markup=False, soft_wrap=True)  # one line, for scripts
    refused("session(s) not marked for a rekey", result.get("failed", []))


def summary(result: dict) -> str:
    """One line: which sessions will rekey (and from which epoch, for one)."""
    marked = result.get("rekey_requested", [])
    who = f" of peer {result['peer']}" if "peer" in result else ""
    epoch = ""
    if "key_epoch" in result:  # one session: where it stands now
        epoch = f" (key epoch {result['key_epoch']}, {result.get('state', '?')}"
        epoch += f"{_WHEN.get(result.get('state'), '')})"
    return (f"rekey requested for {len(marked)} session(s){who}: "
            f"{', '.join(marked) or 'none served here'}{epoch}")


# states in which the rekey waits for something else first (docs/protocol.md "Rekey")
_WHEN = {"RECOVERING": ": it starts once the reattach is done",
         "DEGRADED": ": a rekey from the bound transport brings it back if its keys expired"}
