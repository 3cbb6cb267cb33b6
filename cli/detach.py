"""`jvpn-xdp detach IFACE`: remove the gate, its pins and its record."""

from __future__ import annotations

import click

from jvpn import ifname as ifnames
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
              "namespace is gone, or that is missing or unreadable: remove its record "
              "and pins (no link is touched).")
@click.pass_obj
def detach(app: App, iface: str, force: bool) -> None:
    """Remove jvpn's XDP program from IFACE (whichever mode it runs in),
    delete its pinned maps (PIN_ROOT/IFACE: sessions and counters are lost)
    and its records (RUN_DIR/IFACE.json, RUN_DIR/IFACE.owners.json). Only the
    program jvpn pinned is taken off the link: another program found there
    (someone replaced jvpn's) is kept, with a warning naming its id. Works on
    a record whose interface is gone. Refused for a record made in another
    network namespace (run it there; with --force, a record whose namespace
    is gone loses its record and pins), for a missing or unreadable record
    (with --force: pins and records go, no link is touched), and while a
    gateway uses the gate (RUN_DIR/IFACE.inuse.lock) unless --force. Needs
    root and bcc.
    """
    ifnames.check(iface)  # before any path is made of it ("", ".", "..")
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
    done = gate_attach.detach(iface, app.paths, force=force)
    _report(app, iface, done)


def _report(app: App, iface: str, done: gate_attach.Detached) -> None:
    if done.link_touched:
        app.say(f"detached jvpn from {iface}; removed {app.paths.pin_dir(iface)}",
                markup=False)
    else:
        app.say(f"removed the pins ({app.paths.pin_dir(iface)}) and records of {iface} "
                "(no link was touched: no readable record said which program was jvpn's)",
                markup=False)
    if done.user:
        app.warn(f"a gateway was using the gate ({done.user}): it stops now")
    if done.left:
        app.warn(f"an XDP program (id {done.left}) is on {iface} and was kept: it is not the one "
                 "jvpn pinned (someone replaced it), or jvpn cannot tell; if it should go: "
                 f"ip link set dev {iface} xdp off")
