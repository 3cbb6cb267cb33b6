"""The only module that imports bcc: compile and load the gate (and small
stand-alone probes), and measure the kernel's tick.

Layouts come from jvpn/gate/abi.py (mirrors of bpf/include/jvpn_abi.h).
"""

from __future__ import annotations

import ctypes
import errno
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from jvpn.errors import BccMissing, LoadFailed
from jvpn.gate import abi
from jvpn.gate.sources import bpf_dir

if TYPE_CHECKING:
    from jvpn.gate.pins import GateMaps

BPF_DIR = bpf_dir()
PROGRAM_SOURCE = BPF_DIR / "jvpn_xdp.c"
INCLUDE_DIR = BPF_DIR / "include"
ENTRY = "jvpn_xdp"
# the remote sessions map's default capacity: 4x the default sessions map,
# at 48 bytes (plus the hash's own) per live entry (no prealloc)
DEFAULT_MAX_REMOTE = 262144


def _bcc():
    try:
        import bcc
    except ImportError as e:
        raise BccMissing(
            "bcc is not importable (Debian package python3-bpfcc): run `sudo make setup`, "
            "or use the venv it makes (.venv/bin/jvpn-xdp)"
        ) from e
    return bcc


def _lib():
    return _bcc().libbcc.lib


def require_bcc() -> None:
    """Raise BccMissing (a clear message) if bcc cannot be imported."""
    _bcc()


# ---------------------------------------------------------------- compile/load


@dataclass
class BuildOptions:
    """Compile-time tunables, passed to clang as -D, never templated in."""

    replay_bits: int = abi.REPLAY_BITS
    max_sessions: int = abi.DEFAULT_MAX_SESSIONS  # the sessions and runtime maps' size
    max_sources: int = 65536
    # others' sessions (jvpn_remote): a cluster holds more than one sessions map
    max_remote: int = DEFAULT_MAX_REMOTE
    max_remote_buckets: int = 16384  # their control buckets (LRU)
    event_pages: int = 64
    test_clock: bool = False

    def cflags(self, pins: Path) -> list[str]:
        if self.replay_bits < 128 or self.replay_bits & (self.replay_bits - 1):
            raise LoadFailed(f"replay_bits must be a power of two >= 128, got {self.replay_bits}")
        flags = [
            f"-I{INCLUDE_DIR}",
            f'-DJVPN_PIN_DIR="{pins}"',
            f"-DJVPN_REPLAY_BITS={self.replay_bits}",
            f"-DJVPN_MAX_SESSIONS={self.max_sessions}",
            f"-DJVPN_MAX_SOURCES={self.max_sources}",
            f"-DJVPN_MAX_REMOTE={self.max_remote}",
            f"-DJVPN_MAX_REMOTE_BUCKETS={self.max_remote_buckets}",
            f"-DJVPN_EVENT_PAGES={self.event_pages}",
        ]
        if self.test_clock:
            flags.append("-DJVPN_TEST_CLOCK=1")
        return flags


def check_max_sessions(n: int) -> None:
    """One line for a capacity outside what an operator may attach (tests
    build smaller maps through BuildOptions directly)."""
    low, high = abi.MAX_SESSIONS_RANGE
    if not low <= n <= high:
        raise LoadFailed(f"max sessions must be {low}..{high}, got {n}")


def _mkdir_failed(pins: Path, e: OSError) -> str:
    """Why a pin directory could not be made: bpffs refuses some names with
    EPERM even to root (paths.py encodes the ones we know of); only a missing
    or read-only place is likely a bpffs that is not mounted."""
    if e.errno in (errno.EPERM, errno.EACCES) and os.geteuid() == 0:
        dotted = " (it takes no name with a '.': choose a --pin-root without one)" \
            if "." in str(pins) else ""
        return f"cannot create {pins} ({e.strerror}): the bpf filesystem refuses the name{dotted}"
    return (f"cannot create {pins} ({e.strerror}): is bpffs mounted at /sys/fs/bpf in "
            "this mount namespace?")


class Program:
    """The jvpn XDP program compiled and loaded, its maps pinned in ``pins``.

    Maps that already exist at ``pins`` are reused (bcc's BPF_TABLE_PINNED),
    so reloading the program keeps sessions and replay windows.
    """

    def __init__(self, pins: Path, options: BuildOptions | None = None,
                 source: Path = PROGRAM_SOURCE, progress=None):
        bcc = _bcc()
        progress = progress or (lambda _stage: None)
        self.pins = Path(pins)
        self.options = options or BuildOptions()
        try:
            self.pins.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise LoadFailed(_mkdir_failed(self.pins, e)) from e
        cflags = self.options.cflags(self.pins)
        from jvpn.gate.pins import stale_layout  # noqa: PLC0415 - pins imports this module

        stale = stale_layout(self.pins, self.options.replay_bits, self.options.max_sessions)
        if stale is not None:
            raise LoadFailed(f"the maps pinned at {self.pins} have another layout ({stale}): "
                             "detach (jvpn-xdp detach), then attach again")
        try:
            progress("compiling")
            self.bpf = bcc.BPF(src_file=str(source).encode(), cflags=cflags)
            progress("loading")
            self.fn = self.bpf.load_func(ENTRY.encode(), bcc.BPF.XDP)
        except Exception as e:  # bcc raises bare Exception with the compiler's text on stderr
            raise LoadFailed(f"compiling/loading {source} failed: {e}") from e
        self._pin("events", self.bpf[b"jvpn_events"].map_fd)

    @property
    def prog_fd(self) -> int:
        return self.fn.fd

    def _pin(self, name: str, fd: int) -> None:
        path = self.pins / name
        if path.exists():
            path.unlink()
        if _lib().bpf_obj_pin(fd, str(path).encode()) != 0:
            raise LoadFailed(f"cannot pin {path}: {os.strerror(ctypes.get_errno() or errno.EIO)}")

    def drain_events(self) -> list:
        """Security events waiting in the ring buffer (this process's view)."""
        got = []
        if not getattr(self, "_ring_open", False):
            def _on_event(_ctx, data, size):
                got_now.append(abi.Event.from_buffer_copy(ctypes.string_at(data, size)))

            got_now: list = []
            self._ring_sink = got_now
            self.bpf[b"jvpn_events"].open_ring_buffer(_on_event)
            self._ring_open = True
        self.bpf.ring_buffer_consume()
        got, self._ring_sink[:] = list(self._ring_sink), []
        return got

    def maps(self) -> GateMaps:
        from jvpn.gate.pins import GateMaps  # noqa: PLC0415 - pins imports this module

        return GateMaps(self.pins, self.options.replay_bits)

    def close(self) -> None:
        self.bpf.cleanup()


def load_plain(text: str, entry: str = "xdp_main") -> tuple[object, int]:
    """Compile a small stand-alone XDP program (the benchmark's baseline and
    test probes); returns (bpf object, prog fd)."""
    bcc = _bcc()
    try:
        b = bcc.BPF(text=text.encode(), cflags=[f"-I{INCLUDE_DIR}"])
        fn = b.load_func(entry.encode(), bcc.BPF.XDP)
    except Exception as e:
        raise LoadFailed(f"compiling {entry} failed: {e}") from e
    return b, fn.fd


JIFFIES_PROBE = """
#include <uapi/linux/bpf.h>
BPF_ARRAY(jiffies, __u64, 1);
int xdp_main(struct xdp_md *ctx)
{
	int zero = 0;
	__u64 *j = jiffies.lookup(&zero);

	if (j)
		*j = bpf_jiffies64();
	return XDP_PASS;
}
"""
KNOWN_HZ = (100, 250, 300, 1000)


def measure_ns_per_jiffy(interval_s: float = 0.25) -> int:
    """The kernel's tick length, measured: the gate's clock is jiffies times
    this (reading jiffies is a load; the coarse ktime helper is a call)."""
    from jvpn.gate import testrun

    b, fd = load_plain(JIFFIES_PROBE)
    try:
        table = b[b"jiffies"]
        frame = bytes(14) + bytes(50)
        testrun.run(fd, frame)
        j0, t0 = table[ctypes.c_int(0)].value, time.monotonic()
        time.sleep(interval_s)
        testrun.run(fd, frame)
        j1, t1 = table[ctypes.c_int(0)].value, time.monotonic()
    finally:
        b.cleanup()
    hz = (j1 - j0) / (t1 - t0)
    best = min(KNOWN_HZ, key=lambda k: abs(k - hz))
    if abs(best - hz) > best * 0.2:
        raise LoadFailed(f"could not measure the kernel tick (got {hz:.0f} Hz)")
    return 1_000_000_000 // best


def pinned_prog_id(pins: Path) -> int | None:
    """The id of the program pinned at ``pins``/prog by attach (None: none
    is pinned there): the program whose maps these are."""
    fd = _lib().bpf_obj_get(str(Path(pins) / "prog").encode())
    if fd < 0:
        return None
    try:
        return prog_fd_id(fd)
    finally:
        os.close(fd)


def prog_fd_id(fd: int) -> int | None:
    """The id of the BPF program a descriptor refers to (None: unknown)."""
    info = (ctypes.c_uint8 * 16)()  # struct bpf_prog_info begins: u32 type, u32 id
    size = ctypes.c_uint32(ctypes.sizeof(info))
    if _lib().bpf_obj_get_info_by_fd(fd, info, ctypes.byref(size)) != 0:
        return None
    return int.from_bytes(bytes(info[4:8]), "little")
