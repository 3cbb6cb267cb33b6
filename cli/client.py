"""`jvpn-xdp client up`: the client agent in the foreground."""

from __future__ import annotations

import logging
import sys

import click

from jvpn import sdnotify
from jvpn.service import defer_reopen, prompt_packet_threads, reopen_on_signal
from jvpn_cli.client_check import client_check

log = logging.getLogger("jvpn.client")


@click.group(help="Run the client agent.")
def client():
    pass


@client.command("up", help="Handshake, bring up the TUN device and keep the session across "
                           "path changes (reattach). Exits non-zero with one line when the "
                           "session ends: the gateway ended it, refused a reattach for good, or "
                           "gave no authenticated answer for OrphanTimeout (default 20 s). No "
                           "new session is started silently. SIGTERM/SIGINT: the gateway is "
                           "told (an authenticated TERMINATE), then exit 0.")
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False),
              help="Client config file (see README, Configuration files).")
@click.option("--events-file", type=click.Path(dir_okay=False), default=None,
              help="Append events (JSON lines) to this file.")
@click.option("--echo-events", is_flag=True, help="Also print every event on stdout.")
@click.pass_obj
def client_up(app, config_path: str, events_file: str | None, echo_events: bool):
    from jvpn.client import ClientError
    from jvpn.client_dns import DnsError
    from jvpn.client_hooks import HookFailed
    from jvpn.client_lifecycle import Lifecycle, Signals, client_steps
    from jvpn.codes import EventType, Reason
    from jvpn.config import load_client_config
    from jvpn.config_sources import keyed
    from jvpn.errors import JvpnError
    from jvpn.tunnel import TunBusy

    reopen_asked = defer_reopen()  # first: a SIGUSR1 (logrotate) must not end a start
    prompt_packet_threads()  # a packet never waits 5 ms for the GIL (jvpn/service.py)
    app.require_root()
    cfg = load_client_config(config_path, resolve=_resolving(progress_printer(app)))
    events = _event_log(events_file, echo_events)
    if cfg.endpoint_name:
        events.emit(EventType.ENDPOINT_RESOLVED, Reason.OK, name=cfg.endpoint_name,
                    address=cfg.endpoint[0], port=cfg.endpoint[1])
        log.info("jvpn client: %s is %s (resolved once, now)", cfg.endpoint_name,
                 cfg.endpoint[0])
    try:
        agent = _agent(app, cfg, events)
    except ClientError as e:
        events.close()
        raise JvpnError(keyed(cfg.sources, e)) from e
    dns = _dns_backend(cfg)

    def report(step: str, e: Exception) -> None:  # a failed undo: said, and the rest go on
        log.warning("jvpn client: %s: %s", step, e)
        events.emit(EventType.CLIENT_STEP_FAILED, Reason.TEARDOWN_FAILED, step=step,
                    detail=str(e))

    signals = Signals(agent.stop)
    reopen_on_signal(events, asked=reopen_asked)  # SIGUSR1: logrotate moved the events file
    life = Lifecycle(client_steps(cfg, agent, dns), report, signals.stopped.is_set)
    try:
        life.up()
    except (ClientError, DnsError, HookFailed) as e:  # named with the key's file and line
        raise JvpnError(keyed(cfg.sources, e)) from e
    except TunBusy as e:  # the config's Name chose the TUN
        raise JvpnError(f"{cfg.sources.where('Name')}: {e}") from None
    try:  # whatever happens now (a print to a terminal gone: EIO), the undos run
        _announce_up(agent, dns)
        failed = agent.wait()
        sdnotify.notify_stopping("stopping")
    finally:
        life.down()
        events.close()
    if agent.drops.total:
        log.warning("jvpn client: dropped %d datagrams that did not come from the gateway "
                    "%s:%d", agent.drops.total, agent.endpoint[0], agent.endpoint[1])
    if failed and not signals.stopped.is_set():
        raise JvpnError(f"{agent.ended or failed}; run `client up` again for a new session")


def _agent(app, cfg, events):
    """The client agent for ``cfg``; its outer socket is marked from the
    start (full tunnel: jvpn.client_routes)."""
    from jvpn.client import Client
    from jvpn.client_routes import plan

    return Client(private_key=cfg.private_key, gateway_public=cfg.gateway_public_key,
                  endpoint=cfg.endpoint, events=events, tun_name=cfg.tun_name,
                  keepalive_ms=cfg.keepalive_ms, tun_mtu=cfg.tun_mtu, path_mtu=cfg.path_mtu,
                  orphan_timeout_ms=cfg.orphan_timeout_ms,
                  route_plan=plan(cfg.allowed_ips, cfg.fwmark, cfg.table),
                  progress=progress_printer(app), reconnect=cfg.reconnect,
                  notice=log.warning,  # a new session: said at the default log level
                  policy=cfg.policy)  # transport selection's (Policy =)


def _resolving(progress):
    """The config loader's resolver, saying on a terminal that it resolves."""
    from jvpn.config import resolve_host

    if progress is None:
        return resolve_host

    def resolve(host: str, port: int) -> str:
        progress(f"resolving {host}")
        return resolve_host(host, port)
    return resolve


def progress_printer(app):
    """Progress lines on a terminal (handshake attempt k/n, TUN and routes);
    nothing when stderr is not one (a service's journal gets the result only)."""
    if not sys.stderr.isatty():
        return None
    return lambda line: app.err.print(f"jvpn client: {line}", markup=False)


client.add_command(client_check)  # cli/client_check.py


def _announce_up(agent, dns) -> None:
    """The session is up: said on stderr, and to systemd (READY=1)."""
    a = agent.assignment
    log.info("jvpn client up: session %016x, inner %s", a.session_id, a.client_inner)
    sdnotify.notify_ready(f"session {a.session_id:016x}, inner {a.client_inner}")
    if getattr(dns, "recovered", False):
        log.warning("jvpn client: put back %s from a run that did not stop cleanly", dns.path)


def _event_log(events_file: str | None, echo_events: bool):
    """The client's event log; a file that cannot be opened is one line naming the option."""
    from jvpn.config_sources import describe
    from jvpn.errors import JvpnError
    from jvpn.events import EventLog

    try:
        return EventLog("client", events_file, echo=sys.stdout if echo_events else None)
    except (OSError, JvpnError) as e:  # not a bare errno
        raise JvpnError(f"--events-file {events_file}: {describe(e, events_file)}") from None


def _dns_backend(cfg):
    """The DNS backend for ``DNS =`` (None without it); a refusal names the DNS line."""
    from jvpn.client_dns import DnsError, choose_backend
    from jvpn.config_sources import keyed

    if not (cfg.dns.servers or cfg.dns.search):
        return None
    try:
        return choose_backend(cfg.tun_name, cfg.dns)
    except DnsError as e:
        raise DnsError(keyed(cfg.sources, e)) from e
