"""`jvpn-xdp stats [IFACE]`: the gate's per-reason counters, summed over CPUs."""

from __future__ import annotations

import click
from rich.table import Table

from jvpn_cli.app import App


@click.command(short_help="Show the per-reason packet counters.")
@click.argument("iface", required=False)
@click.option("--all", "show_all", is_flag=True, help="Also show counters that are zero.")
@click.option("--json", "as_json", is_flag=True,
              help='Print JSON with every counter: {"IFACE": {"NAME": {"packets": N, '
              '"bytes": N}}}.')
@click.pass_obj
def stats(app: App, iface: str | None, show_all: bool, as_json: bool) -> None:
    """Show the XDP gate's counters of IFACE (default: every attached
    interface): packets and bytes per verdict reason (pass_*, drop_*) and the
    security events sent or suppressed, summed over CPUs. Counters are read
    from the pinned map, live. Needs root and bcc.
    """
    app.require_maps_access()
    out: dict[str, dict[str, dict[str, int]]] = {}
    for att in app.attachments(iface):
        with app.open_maps(att) as gm:
            out[att.ifname] = gm.read_counters()
    if as_json:
        app.emit_json(out)
        return
    for ifname, counters in out.items():
        shown = {k: v for k, v in counters.items() if show_all or v["packets"] or v["bytes"]}
        if not shown:
            app.say(f"{ifname}: all counters are zero (--all lists them)", markup=False)
            continue
        table = Table(title=f"jvpn XDP counters on {ifname}")
        table.add_column("counter")
        table.add_column("packets", justify="right")
        table.add_column("bytes", justify="right")
        for name, v in shown.items():
            style = "red" if name.startswith("drop_") and v["packets"] else None
            table.add_row(name, str(v["packets"]), str(v["bytes"]), style=style)
        app.say(table)
