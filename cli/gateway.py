"""`jvpn-xdp gateway up|down`: the gateway daemon in the foreground."""

from __future__ import annotations

import signal
import sys
import threading

import click


@click.group(help="Run the gateway daemon (handshakes, reattach, tunnel).")
def gateway():
    pass


@gateway.command("up", help="Run the gateway daemon in the foreground until SIGTERM/SIGINT. "
                            "If the config names an XdpInterface, `jvpn-xdp attach` it first: "
                            "the daemon writes bindings into its pinned maps; otherwise the same "
                            "checks run in the daemon (userspace gate). With Store = "
                            "etcd://HOST:PORT it joins a cluster: one owner per session, "
                            "handoffs through etcd (docs/cluster.md).")
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False),
              help="Gateway config file (see README, Configuration files).")
@click.option("--tun", "tun_name", default="jvpn-gw", show_default=True,
              help="Name of the (persistent) TUN device.")
@click.option("--echo-events", is_flag=True, help="Also print every event on stdout.")
@click.pass_obj
def gateway_up(app, config_path: str, tun_name: str, echo_events: bool):
    from jvpn.config import load_gateway_config
    from jvpn.errors import JvpnError
    from jvpn.gateway.build import build_gateway

    app.require_root()
    cfg = load_gateway_config(config_path)
    gw = build_gateway(cfg, tun_name=tun_name, echo=sys.stdout if echo_events else None,
                       paths=app.paths)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    gw.start(on_fatal=lambda _line: stop.set())  # a thread that ended stops us too
    app.err.print(f"jvpn gateway up on :{cfg.listen_port}, inner {cfg.address}, "
                  f"gate: {'xdp on ' + cfg.xdp_interface if cfg.xdp_interface else 'userspace'}"
                  f", events: {cfg.events_file}")
    stop.wait()
    try:
        gw.stop()
        gw.store.close()
        gw.events.close()
    finally:
        if gw.fatal:  # one line, exit 1: the service manager restarts us
            raise JvpnError(gw.fatal)


@gateway.command("down", help="Remove the gateway's persistent TUN device (sessions stay in "
                              "the store; bindings stay in the pinned maps).")
@click.option("--tun", "tun_name", default="jvpn-gw", show_default=True)
@click.pass_obj
def gateway_down(app, tun_name: str):
    from jvpn.tunnel import Tun

    app.require_root()
    Tun(tun_name).destroy()
    app.console.print(f"removed {tun_name}")

