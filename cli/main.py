"""`jvpn-xdp`: the gate (attach, inspect, detach), the gateway and client
daemons, keys, the demo and the benchmarks of jvpn.

One command per module (cli/<command>.py); this module only builds the group,
passes an :class:`App` down in ``ctx.obj`` and turns operator errors
(:class:`jvpn.errors.JvpnError`) into one ``error: ...`` line with exit code 1.
"""

from __future__ import annotations

import errno
import sys
from collections.abc import Sequence

import click

from jvpn import logs
from jvpn.config import DEFAULT_LOG_LEVEL
from jvpn.errors import JvpnError
from jvpn.logs import LEVELS
from jvpn_cli.app import DEFAULT_PIN_ROOT, DEFAULT_RUN_DIR, App
from jvpn_cli.attach import attach
from jvpn_cli.bench import bench
from jvpn_cli.client import client
from jvpn_cli.demo import demo
from jvpn_cli.detach import detach
from jvpn_cli.drain import drain
from jvpn_cli.events import events
from jvpn_cli.gateway import gateway
from jvpn_cli.health import health
from jvpn_cli.keygen import keygen, pubkey
from jvpn_cli.rekey import rekey
from jvpn_cli.sessions import sessions
from jvpn_cli.stats import stats
from jvpn_cli.status import status
from jvpn_cli.terminate import terminate
from jvpn_cli.top import top

EXIT_INTERRUPTED = 130


class CliError(click.ClickException):
    """An operator error, shown as one line on stderr."""

    exit_code = 1

    def show(self, file=None) -> None:
        # under systemd, the journal files it as an error (jvpn/logs.py)
        prefix = logs.journal_prefix() if file is None else ""
        # escaped: a file name or a peer's text in the message cannot add a line
        click.echo(f"{prefix}error: {logs.one_line(self.format_message())}", err=True,
                   file=file)


class JvpnGroup(click.Group):
    """A group whose commands' JvpnErrors (and OS errors such as a refused
    mkdir) become :class:`CliError`, also under click's CliRunner."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except JvpnError as e:
            raise CliError(str(e)) from None
        except OSError as e:
            if e.errno == errno.EPIPE:
                raise
            raise CliError(str(e)) from None


@click.group(cls=JvpnGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--pin-root",
    envvar="JVPN_PIN_ROOT",
    default=DEFAULT_PIN_ROOT,
    show_default=True,
    show_envvar=True,
    metavar="DIR",
    help="bpffs directory holding one pin directory per attached interface.",
)
@click.option(
    "--run-dir",
    envvar="JVPN_RUN_DIR",
    default=DEFAULT_RUN_DIR,
    show_default=True,
    show_envvar=True,
    metavar="DIR",
    help="Directory of the attachment records (<iface>.json).",
)
@click.option(
    "--log-level",
    envvar="JVPN_LOG_LEVEL",
    default=DEFAULT_LOG_LEVEL,
    show_default=True,
    show_envvar=True,
    type=click.Choice(LEVELS, case_sensitive=False),
    help="The least severe log lines written to stderr (with a journald priority prefix "
         "when stderr is the journal).",
)
@click.version_option(package_name="jvpn", prog_name="jvpn-xdp")
@click.pass_context
def cli(ctx: click.Context, pin_root: str, run_dir: str, log_level: str) -> None:
    """jvpn: a session-centric VPN gateway with an XDP gate.

    \b
    The gate:       attach, detach
    Inspect:        status, sessions, stats, events, health, top
    Run:            gateway up|down|check|reload, client up|check
    Operate:        terminate, rekey, drain
    Keys:           keygen, pubkey
    Show, measure:  demo, bench xdp|tunnel|reattach|flood|handoff|failover|handshake|scale

    The gate is compiled and loaded through bcc; its maps are pinned under
    the pin root so that every command here (a separate process) reads the
    live sessions and counters. attach, detach, sessions and stats need root
    and bcc; status works without them but then cannot count sessions.
    gateway, client, demo and bench need root (TUN devices, namespaces).
    """
    logs.setup(log_level)
    ctx.obj = App(pin_root=pin_root, run_dir=run_dir)


for _command in (attach, detach, status, sessions, stats, events, gateway, client, bench, demo,
                 keygen, pubkey, terminate, rekey, drain, health, top):
    cli.add_command(_command)


def main(argv: Sequence[str] | None = None) -> None:
    """Console-script entry point: never a traceback for an operator error."""
    try:
        rv = cli.main(args=list(argv) if argv is not None else None, prog_name="jvpn-xdp",
                      standalone_mode=False)
    except (click.exceptions.Abort, KeyboardInterrupt):
        click.echo("interrupted", err=True)
        sys.exit(EXIT_INTERRUPTED)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except JvpnError as e:  # raised outside a command (e.g. while parsing)
        click.echo(f"{logs.journal_prefix()}error: {logs.one_line(str(e))}", err=True)
        sys.exit(1)
    sys.exit(rv if isinstance(rv, int) else 0)


if __name__ == "__main__":
    main()
