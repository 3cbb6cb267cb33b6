"""`jvpn-xdp attach IFACE`: compile, load, configure and attach the gate."""

from __future__ import annotations

from dataclasses import asdict

import click
from rich.markup import escape

from jvpn.gate import abi, records
from jvpn.gate import attach as gate_attach
from jvpn.gate.config import GateConfig
from jvpn.gate.loader import DEFAULT_MAX_REMOTE, BuildOptions
from jvpn_cli.app import App
from jvpn_cli.progress import progress


@click.command(short_help="Attach the XDP gate to an interface.")
@click.argument("iface")
@click.option(
    "--port",
    "ports",
    type=click.IntRange(1, 65535),
    multiple=True,
    metavar="PORT",
    callback=lambda _ctx, _param, value: _check_ports(value),
    help=f"UDP port the gate owns (repeatable, at most {abi.MAX_PORTS}; "
    f"default {abi.DEFAULT_PORT}). Other UDP ports and non-UDP traffic pass untouched.",
)
@click.option(
    "--mode",
    type=click.Choice(sorted(gate_attach.MODES)),
    default="native",
    show_default=True,
    help="XDP mode to try. If the driver refuses native mode, generic mode is used "
    "and the output says so.",
)
@click.option(
    "--handshake-rate",
    type=click.FloatRange(min=0),
    default=GateConfig.global_control_pps,
    show_default=True,
    metavar="PER_SEC",
    help="Handshake initiations per second the whole gateway passes (unauthenticated; "
    "each source prefix has its own smaller budget too). 0: unlimited.",
)
@click.option(
    "--control-rate",
    type=click.FloatRange(min=0),
    default=GateConfig.authed_control_pps,
    show_default=True,
    metavar="PER_SEC",
    help="Authenticated control messages (reattach, path response, terminate) per second "
    "the whole gateway passes. A budget of its own: a handshake flood cannot spend it. "
    "0: unlimited.",
)
@click.option(
    "--session-control-rate",
    type=click.FloatRange(min=0),
    default=GateConfig.session_control_pps,
    show_default=True,
    metavar="PER_SEC",
    help="Authenticated control messages per second and session (path probes excepted). "
    "0: unlimited.",
)
@click.option(
    "--session-probe-rate",
    type=click.FloatRange(min=0),
    default=GateConfig.session_probe_pps,
    show_default=True,
    metavar="PER_SEC",
    help="Path probes per second and session: a budget of their own, so probes never "
    "starve the session's reattach. 0: unlimited.",
)
@click.option(
    "--probe-rate",
    type=click.FloatRange(min=0),
    default=GateConfig.global_probe_pps,
    show_default=True,
    metavar="PER_SEC",
    help="Path probes per second the whole gateway passes: a budget of their own, not "
    "--control-rate's, so many clients' probes never starve another session's reattach. "
    "Sized for about 10 000 multi-homed clients probing once or twice a second. "
    "0: unlimited.",
)
@click.option(
    "--max-sessions",
    type=click.IntRange(*abi.MAX_SESSIONS_RANGE),
    default=abi.DEFAULT_MAX_SESSIONS,
    show_default=True,
    metavar="N",
    help="Sessions the gate holds: the size of its sessions and runtime maps (about "
    "800 bytes of kernel memory each, allocated at attach). A gateway's MaxSessions "
    "may not exceed it. Maps of another size already pinned: detach, then attach.",
)
@click.option(
    "--max-remote-sessions",
    type=click.IntRange(1, 1 << 26),
    default=DEFAULT_MAX_REMOTE,
    show_default=True,
    help="Sessions other gateways of a cluster own that this one stands by for (the "
    "remote sessions map: 48 bytes and the hash's own per live entry, allocated as used).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the attachment record as JSON.")
@click.pass_obj
def attach(app: App, iface: str, ports: list[int], mode: str, handshake_rate: float,
           control_rate: float, session_control_rate: float, session_probe_rate: float,
           probe_rate: float, max_sessions: int, max_remote_sessions: int, as_json: bool) -> None:
    """Compile and load the gate, write its config and attach it to IFACE.

    The maps are pinned in PIN_ROOT/IFACE and the attachment is recorded in
    RUN_DIR/IFACE.json (with its network namespace and ifindex), which the
    other commands read. Refused when IFACE has a record already, also one
    made in another network namespace (pins and records are keyed by name:
    give each namespace its own --pin-root and --run-dir). On a terminal,
    shows its stages (compiling, loading, attaching, pinning) on stderr.
    Needs root and bcc.
    """
    app.require_maps_access()
    gate_attach.require_interface(iface)
    app.require_bpffs()
    config = GateConfig(ports=ports, global_control_pps=handshake_rate,
                        authed_control_pps=control_rate,
                        session_control_pps=session_control_rate,
                        session_probe_pps=session_probe_rate, global_probe_pps=probe_rate)
    with progress(app.err, f"attaching the jvpn gate to {iface}") as step:
        options = BuildOptions(max_sessions=max_sessions, max_remote=max_remote_sessions)
        att = gate_attach.attach(iface, config, mode, options=options, paths=app.paths,
                                 progress=step)
    if as_json:
        app.emit_json(asdict(att))
        if att.note:
            app.warn(att.note)
        return
    app.say(f"attached jvpn XDP gate to [bold]{escape(att.ifname)}[/bold] "
            f"(ifindex {att.ifindex})")
    app.say(f"  mode:    {att.mode}")
    app.say(f"  netns:   {att.netns()}", markup=False)
    app.say(f"  ports:   {', '.join(str(p) for p in att.ports)} (UDP)")
    app.say(f"  max sessions: {att.max_sessions}")
    app.say(f"  pin dir: {att.pin_dir}", markup=False)
    app.say(f"  record:  {records.Attachment.path(att.ifname, app.paths)}", markup=False)
    prog_id = gate_attach.xdp_prog_id(att.ifname)
    if prog_id:
        app.say(f"  prog id: {prog_id}")
    if att.note:
        app.say(f"  note:    {att.note}", markup=False)


def _check_ports(ports: tuple[int, ...]) -> list[int]:
    if not ports:
        return [abi.DEFAULT_PORT]
    if len(ports) > abi.MAX_PORTS:
        raise click.BadParameter(
            f"at most {abi.MAX_PORTS} ports, got {len(ports)}", param_hint="'--port'"
        )
    seen = set()
    for p in ports:
        if p in seen:
            raise click.BadParameter(f"port {p} is given twice", param_hint="'--port'")
        seen.add(p)
    return list(ports)
