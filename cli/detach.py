"""`jvpn-xdp detach IFACE`: remove the gate, its pins and its record."""

from __future__ import annotations

import click

from jvpn.errors import JvpnError
from jvpn.gate import attach as gate_attach
from jvpn.gate import records
from jvpn_cli.app import App, interface_exists


def _orphaned(app: App, iface: str) -> bool:
    try:
        att = records.Attachment.load(iface, app.paths)
    except JvpnError:
        return False
    return att.foreign() is not None and att.orphaned()


@click.command(short_help="Detach the XDP gate from an interface.")
@click.argument("iface")
@click.option("--force", is_flag=True,
              help="Detach even while a gateway uses the gate (that gateway then stops "
              "and exits 1: nothing may pass unchecked). For a record whose network "
              "namespace is gone: remove its record and pins (no link is touched).")
@click.pass_obj
def detach(app: App, iface: str, force: bool) -> None:
    """Remove the XDP program from IFACE (whichever mode it runs in), delete
    its pinned maps (PIN_ROOT/IFACE: sessions and counters are lost) and its
    records (RUN_DIR/IFACE.json, RUN_DIR/IFACE.owners.json). Works on a record
    whose interface is gone. Refused for a record made in another network
    namespace (run it there; with --force, a record whose namespace is gone
    loses its record and pins), and while a gateway uses the gate (RUN_DIR/
    IFACE.inuse.lock) unless --force. Needs root and bcc.
    """
    app.require_maps_access()
    if force and _orphaned(app, iface):
        gate_attach.forget(iface, app.paths)
        app.say(f"removed the record and pins of {iface}: its network namespace is gone "
                "(no link was touched)", markup=False)
        return
    recorded = (records.Attachment.path(iface, app.paths).exists()
                or app.paths.pin_dir(iface).exists())
    if not recorded and not interface_exists(iface):
        gate_attach.require_interface(iface)  # raises NoSuchInterface
    # raises NotAttached when there is nothing of ours
    user = gate_attach.detach(iface, app.paths, force=force)
    app.say(f"detached jvpn from {iface}; removed {app.paths.pin_dir(iface)}", markup=False)
    if user:
        app.warn(f"a gateway was using the gate ({user}): it stops now")
    left = gate_attach.xdp_prog_id(iface) if interface_exists(iface) else None
    if left:
        app.warn(f"an XDP program (id {left}) is still attached to {iface}: not one jvpn "
                 "could remove (ip link set dev IFACE xdp off)")
