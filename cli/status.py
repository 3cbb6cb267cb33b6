"""`jvpn-xdp status`: every recorded attachment and whether it is still live."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from typing import Any

import click
from rich.table import Table

from jvpn.errors import JvpnError
from jvpn.gate import attach as gate_attach
from jvpn.gate import loader, records
from jvpn_cli.app import App


@click.command(short_help="Show every attachment.")
@click.option("--json", "as_json", is_flag=True,
              help="Print a JSON list, one object per attachment ([] when none).")
@click.pass_obj
def status(app: App, as_json: bool) -> None:
    """Show every attachment recorded in RUN_DIR: interface, XDP mode, ports,
    pin directory and whether it still exists, the id of the XDP program on
    the link now (none: something detached it; "not jvpn's": someone
    replaced it), the number of sessions in the pinned map and when it was
    attached.

    The records are root's (RUN_DIR 0700, each record 0600): without root,
    status says so instead of listing nothing, unless RUN_DIR is yours; the
    session count and the check that the link's program is jvpn's need root
    (the count is "?" with the reason). Prints "nothing attached" when there
    is no record. A record made
    in another network namespace is shown as such (prog id "elsewhere", and
    how to enter that namespace): its link cannot be seen from here.
    """
    rows = [_describe(app, att) for att in records.Attachment.all(app.paths)]
    if as_json:
        app.emit_json(rows)
        return
    if not rows:
        app.say("nothing attached")
        return
    table = Table(title="jvpn XDP attachments")
    for col in ("iface", "mode", "ports", "prog id", "pin dir", "sessions", "attached at"):
        table.add_column(col, overflow="fold")  # wrap, never cut a path or an id
    notes = []
    for r in rows:
        pin = r["pin_dir"] + {True: "", False: " (missing)", None: " (?)"}[r["pinned"]]
        prog = "elsewhere" if r["elsewhere"] else str(r["prog_id"]) if r["prog_id"] else "none"
        if _replaced(r):
            prog += " (not jvpn's)"
        sessions = "?" if r["sessions"] is None else str(r["sessions"])
        sessions += f"/{r['max_sessions']}"
        table.add_row(r["ifname"], r["mode"], ",".join(map(str, r["ports"])), prog, pin,
                      sessions, _when(r["attached_at"]))
        if r["elsewhere"]:
            notes.append(r["elsewhere"])  # not ours to judge, nor to detach, from here
        elif not r["prog_id"]:
            notes.append(f"{r['ifname']}: no XDP program on the link (detached by someone "
                         "else, or the interface is gone): run `jvpn-xdp detach` to clean up")
        elif _replaced(r):
            notes.append(f"{r['ifname']}: the XDP program on the link (id {r['prog_id']}) is "
                         f"not jvpn's (id {r['pinned_prog_id']}): someone replaced it, and "
                         "nothing checks sessions there; `jvpn-xdp detach` removes jvpn's "
                         "pins and record and leaves that program on the link")
        if r["sessions_error"]:
            notes.append(f"{r['ifname']}: sessions unknown: {r['sessions_error']}")
        if r["note"]:
            notes.append(f"{r['ifname']}: {r['note']}")
    app.say(table)
    for n in notes:
        app.say(n, markup=False)


def _describe(app: App, att: records.Attachment) -> dict[str, Any]:
    elsewhere = att.foreign()
    # the link of another namespace cannot be asked from here (the name may
    # be another interface's here): no program id, no advice to detach
    prog_id = None if elsewhere else _prog_id(att)
    pinned = _is_dir(Path(att.pin_dir))
    pinned_prog = _pinned_prog_id(att) if prog_id and pinned else None
    sessions, why = None, None
    if pinned is None:
        why = f"cannot look into {att.pin_dir}: run as root"
    elif pinned:
        try:
            app.require_maps_access()
            with app.open_maps(att) as gm:
                sessions = len(gm.list_sessions())
        except JvpnError as e:
            why = str(e)
    else:
        why = f"pin directory {att.pin_dir} is gone"
    return {
        "ifname": att.ifname,
        "ifindex": att.ifindex,
        "mode": att.mode,
        "ports": list(att.ports),
        "pin_dir": att.pin_dir,
        "pinned": pinned,
        "prog_id": prog_id,
        "pinned_prog_id": pinned_prog,  # None: none pinned, or not root (cannot be read)
        "netns_inode": att.netns_inode or None,
        "netns_name": att.netns_name or None,
        "elsewhere": elsewhere,
        "sessions": sessions,
        "sessions_error": why,
        "replay_bits": att.replay_bits,
        "max_sessions": att.max_sessions,
        "attached_at": att.attached_at,
        "note": att.note,
    }


def _prog_id(att: records.Attachment) -> int | None:
    """The program on the recorded link: None when the name now names
    another interface (made again: the program went with the old one)."""
    try:
        if att.ifindex and socket.if_nametoindex(att.ifname) != att.ifindex:
            return None
    except OSError:
        return None
    return gate_attach.xdp_prog_id(att.ifname)


def _pinned_prog_id(att: records.Attachment) -> int | None:
    """The id of the program jvpn pinned (root and bcc only; else None)."""
    if os.geteuid() != 0:
        return None
    try:
        return loader.pinned_prog_id(Path(att.pin_dir))
    except JvpnError:  # bcc missing: the maps' count says so already
        return None


def _replaced(row: dict[str, Any]) -> bool:
    """The link runs a program, jvpn pinned one, and they differ."""
    return bool(row["prog_id"] and row["pinned_prog_id"]
                and row["prog_id"] != row["pinned_prog_id"])


def _is_dir(path: Path) -> bool | None:
    """None when it cannot be told (bpffs is root-only)."""
    try:
        return path.is_dir()
    except PermissionError:
        return None


def _when(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))
