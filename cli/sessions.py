"""`jvpn-xdp sessions [IFACE]`: the sessions in the pinned maps, as the XDP
program sees them (binding from the sessions map, traffic and replay state
from the runtime map the program writes)."""

from __future__ import annotations

from typing import Any

import click
from rich.table import Table

from jvpn.gate import abi, pins, records
from jvpn_cli.app import App, session_id_hex


@click.command(short_help="List the sessions the gate knows.")
@click.argument("iface", required=False)
@click.option("--json", "as_json", is_flag=True,
              help='Print JSON: {"IFACE": [session, ...], ...}.')
@click.pass_obj
def sessions(app: App, iface: str | None, as_json: bool) -> None:
    """List the sessions in the pinned maps of IFACE (default: every attached
    interface): session id (hex), state (REMOTE: a standby for a session
    another gateway of the cluster owns), owner (the gateway that serves it:
    this one when the element's fence is this daemon's lease; "stale" for an
    element under an older lease), version, fence, bound transport
    address ("-" when unbound), and from the runtime state the XDP program
    keeps: packets and bytes received and the highest counter accepted ("-"
    before the first authentic packet). Needs root and bcc.
    """
    app.require_maps_access()
    out: dict[str, list[dict[str, Any]]] = {}
    for att in app.attachments(iface):
        owners = records.Owners.load(att.ifname, app.paths)
        with app.open_maps(att) as gm:
            out[att.ifname] = [_row(gm, sid, s, owners) for sid, s in sorted(gm.list_sessions())]
    if as_json:
        app.emit_json(out)
        return
    for ifname, rows in out.items():
        if not rows:
            app.say(f"{ifname}: no sessions", markup=False)
            continue
        table = Table(title=f"jvpn sessions on {ifname}")
        # ids and addresses are never cut, even in a narrow or piped console
        table.add_column("session id", no_wrap=True, min_width=16)
        table.add_column("state", no_wrap=True)
        table.add_column("owner", no_wrap=True)
        table.add_column("version", overflow="fold")
        table.add_column("fence", overflow="fold")
        table.add_column("bound to", no_wrap=True,
                         min_width=max(len(r["bound"]) for r in rows))
        for col in ("rx packets", "rx bytes", "highest counter"):
            table.add_column(col, justify="right", overflow="fold")
        for r in rows:
            table.add_row(r["session_id"], r["state"], r["owner"] or "-", str(r["version"]),
                          str(r["fence"]),
                          r["bound"], _dash(r["rx_packets"]), _dash(r["rx_bytes"]),
                          _dash(r["highest_counter"]))
        app.say(table)


def _owner(sid: int, s: abi.Session, owners: records.Owners | None) -> str | None:
    if owners is None:
        return None  # no gateway daemon has described these maps
    if s.state == abi.STATE_REMOTE:
        return owners.remote.get(f"{sid:016x}")
    return owners.node if s.fence == owners.lease else "stale"


def _row(gm: pins.GateMaps, sid: int, s: abi.Session,
         owners: records.Owners | None = None) -> dict[str, Any]:
    family = s.bind_family
    if family == abi.AF_NONE:
        addr, port, bound = None, None, "-"
    else:
        addr, port = abi.words_addr(s.bind_addr, family), abi.word_port(s.bind_port)
        bound = f"[{addr}]:{port}" if family == abi.AF_INET6 else f"{addr}:{port}"
    rt = gm.get_runtime(sid)
    top = rt.replay_top if rt is not None else 0
    return {
        "session_id": session_id_hex(sid),
        "state": abi.STATE_NAMES.get(s.state, f"UNKNOWN({s.state})"),
        "owner": _owner(sid, s, owners),
        "version": s.version,
        "fence": s.fence,
        "bound": bound,
        "bind_addr": addr,
        "bind_port": port,
        "rx_packets": rt.rx_packets if rt is not None else None,
        "rx_bytes": rt.rx_bytes if rt is not None else None,
        "highest_counter": top - 1 if top else None,
    }


def _dash(value: int | None) -> str:
    return "-" if value is None else str(value)
