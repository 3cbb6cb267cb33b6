"""`jvpn-xdp gateway up|down`: the gateway daemon in the foreground."""

from __future__ import annotations

import contextlib
import logging
import sys

import click

from jvpn_cli.gateway_check import gateway_check
from jvpn_cli.terminate import refused, timeout_option

log = logging.getLogger("jvpn.gateway")


@click.group(help="Run the gateway daemon (handshakes, reattach, tunnel).")
def gateway():
    pass


@gateway.command("up", help="Run the gateway daemon in the foreground until SIGTERM/SIGINT "
                            "(SIGHUP reloads the peers file and the policy: `gateway reload`). "
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
    from jvpn import sdnotify
    from jvpn.config import load_gateway_config
    from jvpn.errors import JvpnError
    from jvpn.gateway.build import build_gateway, claim_instance
    from jvpn.gateway.reload import Reloader
    from jvpn.gateway.signals import Signals
    from jvpn.gateway.start_errors import naming_settings
    from jvpn.service import defer_reopen, prompt_packet_threads, reopen_on_signal

    signals = Signals().install()  # before anything: a SIGHUP must never kill us
    reopen_asked = defer_reopen()  # nor a SIGUSR1 (logrotate) while we start
    prompt_packet_threads()  # a packet never waits 5 ms for the GIL (jvpn/service.py)
    app.require_root()
    cfg = load_gateway_config(config_path)
    # the lock comes before anything else opens; it is released at exit. A port
    # taken, a StateDir that is a file, a busy TUN: one line naming the setting
    with naming_settings(cfg, tun_name), claim_instance(cfg, config_path, app.paths), \
            _metrics(cfg) as metrics:
        gw = build_gateway(cfg, tun_name=tun_name, echo=sys.stdout if echo_events else None,
                           paths=app.paths)
        if metrics is not None:
            metrics.attach(gw, tun_name)
        reopen_on_signal(gw.events, asked=reopen_asked)  # SIGUSR1: logrotate moved the events file
        # SIGHUP reloads: RELOADING=1 ... READY=1 around it (systemd)
        gw.reloader = Reloader(gw, config_path, cfg, notify=sdnotify)
        # the gateway's one fatal path (a thread ended, the gate is gone) stops us too
        gw.start(on_fatal=lambda _line: signals.request_stop())
        gate = f"xdp on {cfg.xdp_interface}" if cfg.xdp_interface else "userspace"
        log.info("jvpn gateway up on :%d, inner %s, gate: %s, events: %s%s", cfg.listen_port,
                 cfg.address, gate, cfg.events_file,
                 f", metrics: {metrics.url}" if metrics is not None else "")
        # socket bound, gate checked, store open, threads running: ready (systemd)
        sdnotify.notify_ready(f"up on :{cfg.listen_port}, gate: {gate}")
        signals.run(reload=lambda: _reload(gw))
        sdnotify.notify_stopping("stopping")
        try:
            gw.stop()
            gw.store.close()
            gw.events.close()
        finally:
            if gw.fatal:  # one line on stderr, exit 1: the service manager restarts us
                raise JvpnError(gw.fatal)


def _reload(gw) -> None:
    """SIGHUP: peers and policy, then the events file reopened (a logrotate
    postrotate may reload rather than send SIGUSR1)."""
    gw.reloader.reload_from_signal()
    gw.events.reopen()


@contextlib.contextmanager
def _metrics(cfg):
    """The Prometheus endpoint (MetricsListen), bound before the gateway is
    built: a taken port stops the start before anything else opens."""
    if cfg.metrics_listen is None:
        yield None
        return
    from jvpn.gateway.metrics import MetricsServer  # noqa: PLC0415 - only with MetricsListen

    server = MetricsServer(cfg.metrics_listen, where=cfg.sources.where("MetricsListen"),
                           per_peer=cfg.metrics_peers)
    try:
        yield server
    finally:
        server.close()


@gateway.command("down", help="Remove the gateway's persistent TUN device (sessions stay in "
                              "the store; bindings stay in the pinned maps). Without such a "
                              "device: says so and exits 0. Refused while a gateway runs on it.")
@click.option("--tun", "tun_name", default="jvpn-gw", show_default=True)
@click.pass_obj
def gateway_down(app, tun_name: str):
    from jvpn.errors import JvpnError
    from jvpn.tunnel import Tun, TunBusy, tun_exists

    app.require_root()
    exists = tun_exists(tun_name)  # Tun() would make the device it is asked to remove
    if exists is None:
        app.console.print(f"no TUN device {tun_name}: nothing to remove")
        return
    if not exists:
        raise JvpnError(f"--tun {tun_name}: {tun_name} is not a TUN device: not removed")
    try:
        Tun(tun_name).destroy()
    except TunBusy as e:
        raise JvpnError(f"--tun {tun_name}: {e}: stop the gateway first") from None
    app.console.print(f"removed {tun_name}")



@gateway.command("reload", help="Re-read the running gateway's peers file and policy and apply "
                                "them at once (what SIGHUP does), or refuse with the error and "
                                "keep the running configuration. A removed peer's sessions end "
                                "(PEER_REVOKED); exit 1 if the store refused any of those ends "
                                "(they are retried). Other keys need a restart: a reload that "
                                "changes one is refused, naming it.")
@click.option("--socket", "socket_path", metavar="PATH",
              help="The gateway's operator socket (default: <run dir>/gateway.sock).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@timeout_option
@click.pass_obj
def gateway_reload(app, socket_path: str | None, as_json: bool, timeout_s: float):
    from jvpn.gateway.reload import summary

    result = app.ask_daemon("reload", socket_path, timeout_s=timeout_s)
    if as_json:
        app.emit_json(result)
    else:
        app.say(f"reloaded: {summary(result)}", markup=False)
    # applied, but a revoked peer's session goes on until the store takes its end
    refused("revocation(s) failed, the store refused (the sessions go on; the gateway "
            "retries every timer tick)", result.get("revoke_failed", []))


gateway.add_command(gateway_check)  # cli/gateway_check.py
