"""``DNS =`` on the client: set at ``client up``, put back at down.

Three backends, chosen when the client starts (:func:`choose_backend`):

- ``resolvectl`` when systemd-resolved runs: per-link servers and search
  domains on the TUN, plus the routing domain ``~.`` when DNS gives servers
  (every query goes to them, not also to the uplink's servers: the
  exclusivity ``resolvconf -x`` and the file backend have); ``resolvectl
  revert`` at down;
- ``resolvconf`` when installed: ``resolvconf -a <tun> -m 0 -x`` (this
  interface's servers, exclusively), ``resolvconf -d <tun> -f`` at down;
- otherwise /etc/resolv.conf itself (:class:`FileBackend`), with the
  previous file kept next to it as ``resolv.conf.jvpn-backup``.

The file backend survives a crash: the backup is written (atomically, temp
file + rename) before resolv.conf is replaced (the same way), so at any
moment either resolv.conf is untouched or the backup holds it. The file we
write starts with a marker naming the client's pid and its start (boot id and
start time: a pid alone is reused). At the next ``up``, a
backup left behind is handled before anything else:

- resolv.conf carries our marker of a process that is gone: the backup is
  put back (that crashed run's DNS is undone), then we go on;
- resolv.conf is byte-for-byte the backup (a crash between the two steps):
  the backup is removed;
- our marker of a process still running: refused (another client owns DNS);
- anything else (someone rewrote resolv.conf since the crash): refused with
  the two file names; we do not guess which one the operator wants.

A resolv.conf that is a bind mount (containers) cannot be renamed over: it is
then rewritten in place (still after the backup is safe).
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import stat
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import psutil

from jvpn.config import ClientDns
from jvpn.errors import JvpnError

RESOLV_CONF = Path("/etc/resolv.conf")
RESOLVED_DIR = Path("/run/systemd/resolve")  # present while systemd-resolved runs
BACKUP_SUFFIX = ".jvpn-backup"
MARKER = "# jvpn-xdp client"  # first line we write: "MARKER pid N (start S), TUN X"
_MARKER_PID = re.compile(re.escape(MARKER) + r" pid ([0-9]+)(?: \(start ([0-9a-f:-]+)\))?")
BOOT_ID = Path("/proc/sys/kernel/random/boot_id")
_KEPT = ("nameserver", "search", "domain", "options", "sortlist")


class DnsError(JvpnError):
    key = "DNS"  # the config key `client up` names with the file (jvpn.config_sources.keyed)


class Backend(Protocol):
    name: str

    def apply(self) -> None: ...

    def restore(self) -> None: ...


Runner = Callable[..., subprocess.CompletedProcess]


def _run(run: Runner, argv: list[str], stdin: str | None = None) -> None:
    try:
        done = run(argv, input=stdin, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise DnsError(f"DNS: {' '.join(argv)}: {e}") from None
    if done.returncode != 0:
        why = (done.stderr or done.stdout or "").strip().replace("\n", "; ")
        raise DnsError(f"DNS: {' '.join(argv)} failed (exit {done.returncode}): {why}")


class ResolvectlBackend:
    name = "resolvectl"

    def __init__(self, iface: str, dns: ClientDns, run: Runner = subprocess.run):
        self.iface, self.dns, self.run = iface, dns, run

    def apply(self) -> None:
        try:
            if self.dns.servers:
                _run(self.run, ["resolvectl", "dns", self.iface, *self.dns.servers])
            # "~." (routing-only, every name): with servers, systemd-resolved sends
            # every query to this link only, as resolvconf -x and the file backend
            # do; without it the uplink's servers were asked too, in clear
            domains = [*self.dns.search, *(["~."] if self.dns.servers else [])]
            if domains:
                _run(self.run, ["resolvectl", "domain", self.iface, *domains])
        except DnsError:
            try:  # all or nothing: servers without their domains are not left behind
                self.restore()
            except DnsError:
                pass
            raise

    def restore(self) -> None:
        _run(self.run, ["resolvectl", "revert", self.iface])


class ResolvconfBackend:
    name = "resolvconf"

    def __init__(self, iface: str, dns: ClientDns, run: Runner = subprocess.run):
        self.iface, self.dns, self.run = iface, dns, run

    def apply(self) -> None:
        _run(self.run, ["resolvconf", "-a", self.iface, "-m", "0", "-x"],
             stdin=resolv_lines(self.dns))

    def restore(self) -> None:
        _run(self.run, ["resolvconf", "-d", self.iface, "-f"])


def resolv_lines(dns: ClientDns, previous: str = "") -> str:
    """resolv.conf lines for ``dns``. What DNS does not give (no server, no
    search domain) and the ``options`` lines are kept from ``previous``."""
    old = [ln.strip() for ln in previous.splitlines()]
    old = [ln for ln in old if ln.split(" ", 1)[0] in _KEPT]
    out = ([f"nameserver {s}" for s in dns.servers] if dns.servers
           else [ln for ln in old if ln.startswith("nameserver")])
    if dns.search:
        out.append("search " + " ".join(dns.search))
    else:
        out += [ln for ln in old if ln.startswith(("search", "domain"))]
    out += [ln for ln in old if ln.startswith(("options", "sortlist"))]
    return "".join(f"{ln}\n" for ln in out)


class FileBackend:
    """resolv.conf rewritten, with a crash-safe backup (module docstring)."""

    name = "file"

    def __init__(self, iface: str, dns: ClientDns, path: Path = RESOLV_CONF,
                 pid_alive: Callable[[int], bool] | None = None,
                 start_of: Callable[[int], str | None] | None = None):
        self.iface, self.dns, self.path = iface, dns, Path(path)
        self.backup = self.path.with_name(self.path.name + BACKUP_SUFFIX)
        self.pid_alive = pid_alive or psutil.pid_exists
        self.start_of = start_of or process_start
        self.recovered = False  # a crashed run's backup was put back at apply

    def apply(self) -> None:
        try:
            if os.path.lexists(self.backup):
                self._stale_backup()
            previous = self._read(self.path)
            self._save_backup()
        except OSError as e:
            raise DnsError(f"DNS: {self.path}: {e.strerror or e}") from None
        start = self.start_of(os.getpid())
        me = f"pid {os.getpid()}" + (f" (start {start})" if start else "")
        text = f"{MARKER} {me}, TUN {self.iface}; the previous file is " \
               f"{self.backup.name}\n" + resolv_lines(self.dns, previous)
        try:
            _replace(self.path, text.encode(), self._mode())
        except OSError as e:
            self._undo_failed_write(e)

    def _undo_failed_write(self, e: OSError) -> None:
        """resolv.conf is unchanged after a failed rename (no backup left), but
        a failed in-place write (bind mount) may have truncated it: then the
        backup is put back, and kept if even that fails."""
        why = e.strerror or str(e)
        try:
            if self._same_as_backup():
                os.unlink(self.backup)
            else:
                _put_back(self.backup, self.path)
        except OSError as e2:
            raise DnsError(f"DNS: {self.path}: {why}; the previous file is still "
                           f"{self.backup} (putting it back failed: {e2.strerror or e2})"
                           ) from None
        raise DnsError(f"DNS: {self.path}: {why}") from None

    def restore(self) -> None:
        if not os.path.lexists(self.backup):
            raise DnsError(f"DNS: {self.backup} is gone: {self.path} was not put back")
        try:
            _put_back(self.backup, self.path)
        except OSError as e:
            raise DnsError(f"DNS: putting {self.backup} back as {self.path}: "
                           f"{e.strerror or e}") from None

    # ------------------------------------------------------------ crash recovery
    def _stale_backup(self) -> None:
        current = self._read(self.path)
        m = _MARKER_PID.match(current)
        if m and self._running(int(m.group(1)), m.group(2)):
            raise DnsError(f"DNS: {self.path} is set by another running jvpn client (pid "
                           f"{m.group(1)}): stop it first, or use DNS in one client only")
        if m:
            _put_back(self.backup, self.path)
            self.recovered = True
        elif self._same_as_backup():
            os.unlink(self.backup)
        else:
            raise DnsError(f"DNS: {self.backup} was left by a jvpn client that did not stop "
                           f"cleanly, and {self.path} was changed since: keep the one you "
                           f"want as {self.path}, remove {self.backup}, then run `client up` "
                           "again")

    def _running(self, pid: int, start: str | None) -> bool:
        """The process that wrote the marker still runs: its pid is alive and
        (when the marker has it) started when the marker says. A pid alone is
        reused: after a reboot by another daemon, or by any local user who
        forks until he holds it, and DNS was refused for good."""
        if pid == os.getpid() or not self.pid_alive(pid):
            return False
        return start is None or self.start_of(pid) == start

    def _same_as_backup(self) -> bool:
        if os.path.islink(self.backup) or os.path.islink(self.path):
            return (os.path.islink(self.backup) and os.path.islink(self.path)
                    and os.readlink(self.backup) == os.readlink(self.path))
        return self._read(self.backup) == self._read(self.path)

    # ------------------------------------------------------------ files
    @staticmethod
    def _read(path: Path) -> str:
        try:
            return path.read_text(errors="replace")
        except FileNotFoundError:
            return ""  # an absent resolv.conf is saved (and comes back) as an empty one

    def _mode(self) -> int:
        try:
            return stat.S_IMODE(os.stat(self.path).st_mode) & 0o644 or 0o644
        except FileNotFoundError:
            return 0o644

    def _save_backup(self) -> None:
        if os.path.islink(self.path):  # e.g. to a resolver's own file: keep the link
            tmp = _tmp_name(self.backup)
            os.symlink(os.readlink(self.path), tmp)
            os.replace(tmp, self.backup)
            _sync_dir(self.backup)
            return
        _replace(self.backup, self._read(self.path).encode(), self._mode())


def process_start(pid: int) -> str | None:
    """``<boot id>:<start time in clock ticks>`` of a process: unique across
    reboots and pid reuse; None if unknown. Read here, not through psutil:
    its create_time() adds the boot time from the wall clock, which moves when
    the clock is stepped, and a marker must compare equal for the process's
    whole life."""
    try:
        boot = BOOT_ID.read_text().strip()
        stat_line = Path(f"/proc/{pid}/stat").read_text()
        start = stat_line.rsplit(")", 1)[1].split()[19]  # field 22, after comm
    except (OSError, IndexError):
        return None
    return f"{boot}:{start}" if re.fullmatch(r"[0-9a-f-]+", boot) and start.isdigit() else None


def _tmp_name(path: Path) -> Path:
    tmp = path.with_name(f".{path.name}.jvpn-tmp")
    if os.path.lexists(tmp):
        os.unlink(tmp)  # a crashed run's; the folder is root's (/etc)
    return tmp


def _sync_dir(path: Path) -> None:
    fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _replace(path: Path, data: bytes, mode: int) -> None:
    """``path`` holds ``data``, switched atomically (temp file + rename);
    in place when ``path`` is a mount point (EBUSY)."""
    tmp = _tmp_name(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    try:
        os.write(fd, data)
        os.fchmod(fd, mode)
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.replace(tmp, path)
    except OSError as e:
        os.unlink(tmp)
        if e.errno != errno.EBUSY:
            raise
        _write_in_place(path, data)
    _sync_dir(path)


def _write_in_place(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_TRUNC | os.O_NOFOLLOW)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def _put_back(backup: Path, path: Path) -> None:
    """The backup becomes ``path`` again (a rename: file or symlink as it was)."""
    try:
        os.replace(backup, path)
    except OSError as e:
        if e.errno != errno.EBUSY:
            raise
        _write_in_place(path, backup.read_bytes())
        os.unlink(backup)
    _sync_dir(path)


def choose_backend(iface: str, dns: ClientDns, *, resolv_conf: Path = RESOLV_CONF,
                   resolved_dir: Path = RESOLVED_DIR,
                   which: Callable[[str], str | None] = shutil.which,
                   run: Runner = subprocess.run) -> Backend:
    """The backend this system uses (module docstring), decided now."""
    if resolved_dir.is_dir() and which("resolvectl"):
        return ResolvectlBackend(iface, dns, run)
    if which("resolvconf"):
        return ResolvconfBackend(iface, dns, run)
    return FileBackend(iface, dns, resolv_conf)
