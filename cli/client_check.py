"""`jvpn-xdp client check`: validate a client config and print the
effective configuration. No root, no TUN, no socket; an Endpoint host name
is resolved, as `client up` would, and the answer shown."""

from __future__ import annotations

import click

from jvpn.errors import JvpnError


@click.command("check", help="Validate the client config (and the key file it names) without "
                             "root, TUN or socket, and print the effective configuration: "
                             "every key with its value and the FILE:LINE that set it, or "
                             "'default'. The private key is never printed (its public key is). "
                             "An Endpoint host name is resolved now, as `client up` does. "
                             "Stops at the first error with one line FILE:LINE: Key: message, "
                             "and exits 1.")
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False),
              help="Client config file (see README, Configuration files).")
@click.option("--events-file", type=click.Path(dir_okay=False), default=None,
              help="The events file `client up` would be given: checked as it opens it "
                   "(absent, or a regular file of root's with one link; never a symlink).")
@click.option("--json", "as_json", is_flag=True,
              help="Print the effective configuration (or the error) as JSON.")
@click.pass_obj
def client_check(app, config_path: str, events_file: str | None, as_json: bool):
    from pathlib import Path

    from jvpn.config import load_client_config
    from jvpn.config_preflight import DAEMON_UID, check_events_path
    from jvpn.config_report import client_report, client_rows, text_lines

    try:
        cfg = load_client_config(config_path)
        if events_file is not None:
            check_events_path(f"--events-file {events_file}", Path(events_file), DAEMON_UID)
    except JvpnError as e:
        if as_json:
            app.emit_json({"config": config_path, "valid": False, "error": str(e)})
        raise
    if as_json:
        app.emit_json(client_report(cfg))
        return
    rows = client_rows(cfg)
    split = next(i for i, r in enumerate(rows) if r.key == "PublicKey" and
                 r.note == "the gateway's")
    click.echo(f"# {cfg.sources.path}: valid")
    for line in ["[Interface]", *text_lines(rows[:split], cfg.sources.path), "", "[Peer]",
                 *text_lines(rows[split:], cfg.sources.path)]:
        click.echo(line)
