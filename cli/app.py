"""The object every command gets as ``ctx.obj``: consoles, JSON output and the
checks and look-ups the commands share.

Nothing here imports bcc: jvpn.gate.loader does that lazily, so ``--help`` and the
commands' argument errors work on a machine without it.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Any

import click
import psutil
from rich.console import Console

from jvpn.errors import JvpnError, NotAttached
from jvpn.gate import attach as gate_attach
from jvpn.gate import loader, paths, pins, records
from jvpn.gate.paths import GatePaths
from jvpn.gateway import operator

DEFAULT_PIN_ROOT = str(paths.DEFAULT_PIN_ROOT)
DEFAULT_RUN_DIR = str(paths.DEFAULT_RUN_DIR)
BPF_FS = "bpf"


class App:
    """Shared state of one ``jvpn-xdp`` invocation."""

    def __init__(self, pin_root: str = DEFAULT_PIN_ROOT, run_dir: str = DEFAULT_RUN_DIR):
        # Every gate function gets these explicitly; nothing reads them back
        # from os.environ (the group's options read JVPN_PIN_ROOT/JVPN_RUN_DIR).
        self.paths = GatePaths(Path(pin_root), Path(run_dir))
        self.console = Console(highlight=False)
        self.err = Console(stderr=True, highlight=False)

    @property
    def pin_root(self) -> Path:
        return self.paths.pin_root

    @property
    def run_dir(self) -> Path:
        return self.paths.run_dir

    # ------------------------------------------------------------ output
    def emit_json(self, data: Any) -> None:
        """Valid JSON on stdout and nothing else (no rich markup or wrapping)."""
        click.echo(json.dumps(data, indent=2, sort_keys=False))

    def say(self, *args, **kwargs) -> None:
        self.console.print(*args, **kwargs)

    def warn_line(self, message: str) -> None:
        """A note on stderr (stdout stays clean for --json)."""
        self.err.print(message, markup=False, highlight=False)

    def warn(self, message: str) -> None:
        self.err.print(f"warning: {message}", markup=False)

    # ------------------------------------------------------------ checks
    def require_root(self) -> None:
        gate_attach.require_root()

    def require_bcc(self) -> None:
        loader.require_bcc()

    def require_maps_access(self) -> None:
        """Root first, then bcc: the order the operator has to fix them in."""
        self.require_root()
        self.require_bcc()

    def require_bpffs(self) -> None:
        """The pin root must sit on a bpf filesystem, or pinning fails with a
        bare OS error (e.g. under `ip netns exec`, which remounts /sys and so
        hides /sys/fs/bpf: use `nsenter --net=/run/netns/NAME` instead)."""
        fstype = mount_fstype(self.pin_root)
        if fstype != BPF_FS:
            where = f"on {fstype}" if fstype else "on no known mount"
            raise JvpnError(
                f"pin root {self.pin_root} is {where}, not on a bpf filesystem: "
                "mount one (mount -t bpf bpf /sys/fs/bpf) or choose --pin-root under it"
            )

    # ------------------------------------------------------------ look-ups
    def attachments(self, ifname: str | None) -> list[records.Attachment]:
        """The attachment of ``ifname``, or every one; NotAttached when none
        (NoSuchInterface when ``ifname`` names no interface and no record)."""
        if ifname is not None:
            if (not records.Attachment.path(ifname, self.paths).exists()
                    and not interface_exists(ifname)):
                gate_attach.require_interface(ifname)  # raises NoSuchInterface
            return [records.Attachment.load(ifname, self.paths)]
        found = records.Attachment.all(self.paths)
        if not found:
            raise NotAttached(
                f"jvpn is not attached to any interface (no records in {self.run_dir}): "
                "run `jvpn-xdp attach IFACE` first"
            )
        return found

    def open_maps(self, att: records.Attachment) -> pins.GateMaps:
        return pins.GateMaps(Path(att.pin_dir), att.replay_bits)

    def operator_socket(self, given: str | None = None) -> Path:
        """The running gateway's operator socket: ``--socket`` if given, else
        the run dir's (the daemon's default, ControlSocket unset)."""
        return Path(given) if given else operator.default_path(self.run_dir)

    def ask_daemon(self, op: str, socket_path: str | None = None, *,
                   timeout_s: float | None = None, **args):
        """One operation on the running gateway (jvpn/operator.py): its
        result, or a JvpnError with one line (NoDaemon when none runs)."""
        from jvpn import operator as operator_client  # noqa: PLC0415

        wait = {} if timeout_s is None else {"timeout_s": timeout_s}
        return operator_client.call(self.operator_socket(socket_path), op, **wait, **args)


def interface_exists(ifname: str) -> bool:
    try:
        socket.if_nametoindex(ifname)
        return True
    except OSError:
        return False


def mount_fstype(path: Path) -> str | None:
    """File system type of the mount that holds ``path`` (or would, for a path
    not made yet), from this process's mount table (psutil reads
    /proc/self/mounts: this mount namespace's)."""
    path = Path(os.path.realpath(path))
    best, fstype = -1, None
    try:
        mounts = psutil.disk_partitions(all=True)
    except OSError:
        return None
    for m in mounts:
        mp = Path(m.mountpoint)
        # ">=": of stacked mounts on one point, the later (listed last) is on top
        if (path == mp or mp in path.parents) and len(mp.parts) >= best:
            best, fstype = len(mp.parts), m.fstype
    return fstype


def session_id_hex(sid: int) -> str:
    return f"{sid:016x}"
