"""`jvpn-xdp client up`: the client agent in the foreground."""

from __future__ import annotations

import signal
import sys
import threading

import click


@click.group(help="Run the client agent.")
def client():
    pass


@client.command("up", help="Handshake, bring up the TUN device and keep the session across "
                           "path changes (reattach). Exits non-zero if the gateway refuses a "
                           "reattach for good: no new session is started silently.")
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False),
              help="Client config file (see README, Configuration files).")
@click.option("--events-file", type=click.Path(dir_okay=False), default=None,
              help="Append events (JSON lines) to this file.")
@click.option("--echo-events", is_flag=True, help="Also print every event on stdout.")
@click.pass_obj
def client_up(app, config_path: str, events_file: str | None, echo_events: bool):
    from jvpn.client import Client, ClientError
    from jvpn.config import load_client_config
    from jvpn.errors import JvpnError
    from jvpn.events import EventLog

    app.require_root()
    cfg = load_client_config(config_path)
    events = EventLog("client", events_file, echo=sys.stdout if echo_events else None)
    agent = Client(private_key=cfg.private_key, gateway_public=cfg.gateway_public_key,
                   endpoint=cfg.endpoint, events=events, tun_name=cfg.tun_name,
                   keepalive_ms=cfg.keepalive_ms, tun_mtu=cfg.tun_mtu, path_mtu=cfg.path_mtu)
    try:
        a = agent.up()
    except ClientError as e:
        raise JvpnError(str(e)) from e
    app.err.print(f"jvpn client up: session {a.session_id:016x}, inner {a.client_inner}")
    stopped = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: (stopped.set(), agent.down()))
    failed = agent.wait()
    agent.down()
    events.close()
    if agent.drops.total:
        app.err.print(f"jvpn client: dropped {agent.drops.total} datagrams that did not come "
                      f"from the gateway {agent.endpoint[0]}:{agent.endpoint[1]}", markup=False)
    if failed and not stopped.is_set():
        raise JvpnError(f"the gateway refused the session ({failed}); run `client up` again "
                        "for a new handshake")
