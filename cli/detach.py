"""`jvpn-xdp detach IFACE`: remove the gate, its pins and its record."""

from __future__ import annotations

import click

from jvpn.gate import attach as gate_attach
from jvpn.gate import records
from jvpn_cli.app import App, interface_exists


@click.command(short_help="Detach the XDP gate from an interface.")
@click.argument("iface")
@click.pass_obj
def detach(app: App, iface: str) -> None:
    """Remove the XDP program from IFACE (whichever mode it runs in), delete
    its pinned maps (PIN_ROOT/IFACE: sessions and counters are lost) and its
    record (RUN_DIR/IFACE.json). Works on a record whose interface is gone.
    Needs root and bcc.
    """
    app.require_maps_access()
    recorded = (records.Attachment.path(iface, app.paths).exists()
                or app.paths.pin_dir(iface).exists())
    if not recorded and not interface_exists(iface):
        gate_attach.require_interface(iface)  # raises NoSuchInterface
    gate_attach.detach(iface, app.paths)  # raises NotAttached when there is nothing of ours
    app.say(f"detached jvpn from {iface}; removed {app.paths.pin_dir(iface)}", markup=False)
    left = gate_attach.xdp_prog_id(iface) if interface_exists(iface) else None
    if left:
        app.warn(f"an XDP program (id {left}) is still attached to {iface}: not one jvpn "
                 "could remove (ip link set dev IFACE xdp off)")
