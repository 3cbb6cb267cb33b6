"""`jvpn-xdp gateway up|down`: the gateway daemon in the foreground."""

from __future__ import annotations

import signal
import sys
import threading

import click

from jvpn_cli.gateway_check import gateway_check


@click.group(help="Run the gateway daemon (handshakes, reattach, tunnel).")
def gateway():
    pass


@gateway.command("up", help="Run the gateway daemon in the foreground until SIGTERM/SIGINT. "
                            "If the config names an XdpInterface, `jvpn-xdp attach` it first: "
                            "the daemon writes bindings into its pinned maps and listens on that "
                            "interface only; if the gate is detached or replaced while it runs, "
                            "it stops and exits 1. Otherwise the same checks run in the daemon "
                            "(userspace gate). Refused, naming the holder, when another gateway "
                            "has the same StateDir or ListenPort. With Store = "
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
    from jvpn.gateway.build import build_gateway, claim_instance

    app.require_root()
    cfg = load_gateway_config(config_path)
    # the lock comes before anything else opens; it is released at exit
    with claim_instance(cfg, config_path, app.paths):
        gw = build_gateway(cfg, tun_name=tun_name, echo=sys.stdout if echo_events else None,
                           paths=app.paths)
        stop = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
        # the gateway's one fatal path (a thread ended, the gate is gone) stops us too
        gw.start(on_fatal=lambda _line: stop.set())
        gate = f"xdp on {cfg.xdp_interface}" if cfg.xdp_interface else "userspace"
        app.err.print(f"jvpn gateway up on :{cfg.listen_port}, inner {cfg.address}, "
                      f"gate: {gate}, events: {cfg.events_file}")
        stop.wait()
        try:
            gw.stop()
            gw.store.close()
            gw.events.close()
        finally:
            if gw.fatal:  # one line on stderr, exit 1: the service manager restarts us
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



gateway.add_command(gateway_check)  # cli/gateway_check.py
