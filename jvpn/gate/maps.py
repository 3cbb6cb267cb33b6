"""The only module that imports bcc: compile, load, attach, detach, pin, and
typed access to the pinned maps of a gateway's XDP program.

Layouts come from jvpn/abi.py (mirrors of bpf/include/jvpn_abi.h, checked by
tests/test_abi.py). Map access goes through the bpf syscall wrappers of
libbcc on pinned file descriptors, so any process (the CLI, a restarted
daemon) can read and write the maps without recompiling the program.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import shutil
import socket
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from jvpn.errors import (
    AlreadyAttached,
    BccMissing,
    JvpnError,
    LoadFailed,
    NoSuchInterface,
    NotAttached,
    NotRoot,
)
from jvpn.gate import abi
from jvpn.gate.config import GateConfig
from jvpn.gate.sources import bpf_dir

BPF_DIR = bpf_dir()
PROGRAM_SOURCE = BPF_DIR / "jvpn_xdp.c"
INCLUDE_DIR = BPF_DIR / "include"
ENTRY = "jvpn_xdp"

XDP_FLAGS_SKB_MODE = 1 << 1
XDP_FLAGS_DRV_MODE = 1 << 2
MODES = {"native": XDP_FLAGS_DRV_MODE, "generic": XDP_FLAGS_SKB_MODE}

# pinned file name -> C map name
PINS = {
    "sessions": "jvpn_sessions",
    "session_rt": "jvpn_session_rt",
    "config": "jvpn_config",
    "global": "jvpn_global",
    "src_rl": "jvpn_src_rl",
    "counters": "jvpn_counters",
    "events": "jvpn_events",
}


def pin_root() -> Path:
    return Path(os.environ.get("JVPN_PIN_ROOT", "/sys/fs/bpf/jvpn"))


def run_dir() -> Path:
    return Path(os.environ.get("JVPN_RUN_DIR", "/run/jvpn"))


def pin_dir(ifname: str) -> Path:
    return pin_root() / ifname


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


def require_root() -> None:
    if os.geteuid() != 0:
        raise NotRoot("this needs root (BPF maps and XDP): run it with sudo")


def require_interface(ifname: str) -> int:
    try:
        return socket.if_nametoindex(ifname)
    except OSError:
        raise NoSuchInterface(f"no such network interface: {ifname!r}") from None


# ---------------------------------------------------------------- compile/load


@dataclass
class BuildOptions:
    """Compile-time tunables, passed to clang as -D, never templated in."""

    replay_bits: int = abi.REPLAY_BITS
    max_sessions: int = 65536
    max_sources: int = 65536
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
            f"-DJVPN_EVENT_PAGES={self.event_pages}",
        ]
        if self.test_clock:
            flags.append("-DJVPN_TEST_CLOCK=1")
        return flags


class Program:
    """The jvpn XDP program compiled and loaded, its maps pinned in ``pins``.

    Maps that already exist at ``pins`` are reused (bcc's BPF_TABLE_PINNED),
    so reloading the program keeps sessions and replay windows.
    """

    def __init__(self, pins: Path, options: BuildOptions | None = None,
                 source: Path = PROGRAM_SOURCE):
        bcc = _bcc()
        self.pins = Path(pins)
        self.options = options or BuildOptions()
        try:
            self.pins.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise LoadFailed(f"cannot create {self.pins} ({e.strerror}): is bpffs mounted at "
                             "/sys/fs/bpf in this mount namespace?") from e
        cflags = self.options.cflags(self.pins)
        try:
            self.bpf = bcc.BPF(src_file=str(source).encode(), cflags=cflags)
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


# ---------------------------------------------------------------- pinned maps


BPF_F_LOCK = 4  # update under the value's bpf_spin_lock (the kernel may hold it)


class PinnedMap:
    """A pinned BPF map opened by path, keys and values as ctypes types."""

    def __init__(self, path: Path, key_type, value_type, percpu: bool = False):
        self.path = Path(path)
        self.key_type = key_type
        self.value_type = value_type
        self.percpu = percpu
        fd = _lib().bpf_obj_get(str(self.path).encode())
        if fd < 0:
            raise NotAttached(f"cannot open {self.path}: is jvpn attached to this interface?")
        self.fd = fd
        self._ncpu = len(_bcc().utils.get_possible_cpus()) if percpu else 1
        self._stride = (ctypes.sizeof(value_type) + 7) // 8 * 8

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def _value_buf(self):
        return (ctypes.c_uint8 * (self._stride * self._ncpu))()

    def lookup(self, key):
        buf = self._value_buf()
        if _lib().bpf_lookup_elem(self.fd, ctypes.byref(key), buf) != 0:
            return None
        if not self.percpu:
            return self.value_type.from_buffer_copy(buf)
        return [self.value_type.from_buffer_copy(buf, i * self._stride) for i in range(self._ncpu)]

    def update(self, key, value, flags: int = 0) -> None:
        if self.percpu:
            raise JvpnError("per-CPU maps are written by the XDP program only")
        if _lib().bpf_update_elem(self.fd, ctypes.byref(key), ctypes.byref(value), flags) != 0:
            err = ctypes.get_errno()
            raise JvpnError(f"update of {self.path} failed: {os.strerror(err) if err else 'error'}")

    def delete(self, key) -> bool:
        return _lib().bpf_delete_elem(self.fd, ctypes.byref(key)) == 0

    def keys(self) -> Iterator:
        key = self.key_type()
        nxt = self.key_type()
        if _lib().bpf_get_next_key(self.fd, None, ctypes.byref(nxt)) != 0:
            return
        while True:
            yield self.key_type.from_buffer_copy(nxt)
            ctypes.memmove(ctypes.byref(key), ctypes.byref(nxt), ctypes.sizeof(key))
            if _lib().bpf_get_next_key(self.fd, ctypes.byref(key), ctypes.byref(nxt)) != 0:
                return

    def items(self) -> Iterator:
        for k in self.keys():
            v = self.lookup(k)
            if v is not None:
                yield k, v


class GateMaps:
    """Typed accessors for one gateway interface's pinned maps."""

    def __init__(self, pins: Path, replay_bits: int = abi.REPLAY_BITS):
        self.pins = Path(pins)
        self.replay_bits = replay_bits
        if not self.pins.is_dir():
            raise NotAttached(f"no jvpn maps pinned at {self.pins}: attach first")
        u64, i32 = ctypes.c_uint64, ctypes.c_int
        self.sessions = self.runtime = self.config = self.glob = None
        self.sources = self.counters = self.test_clock = None
        try:
            self._open(u64, i32, replay_bits)
        except BaseException:
            self.close()
            raise

    def _open(self, u64, i32, replay_bits: int) -> None:
        self.sessions = PinnedMap(self.pins / "sessions", u64, abi.Session)
        self.runtime = PinnedMap(self.pins / "session_rt", u64, abi.session_rt_type(replay_bits))
        self.config = PinnedMap(self.pins / "config", i32, abi.Config)
        self.glob = PinnedMap(self.pins / "global", i32, abi.Global)
        self.sources = PinnedMap(self.pins / "src_rl", abi.SrcKey, abi.SrcRl)
        self.counters = PinnedMap(self.pins / "counters", i32, abi.Counter, percpu=True)
        test_clock = self.pins / "test_clock"
        self.test_clock = PinnedMap(test_clock, i32, u64) if test_clock.exists() else None

    def close(self) -> None:
        for m in (self.sessions, self.runtime, self.config, self.glob, self.sources,
                  self.counters, self.test_clock):
            if m is not None:
                m.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- sessions: the daemon is the only writer --
    def put_session(self, session_id: int, session: abi.Session) -> None:
        """One element replacement: readers see the old or the new binding."""
        self.sessions.update(ctypes.c_uint64(session_id), session)

    def get_session(self, session_id: int) -> abi.Session | None:
        return self.sessions.lookup(ctypes.c_uint64(session_id))

    def remove_session(self, session_id: int) -> None:
        """Binding first, then the runtime state it no longer guards."""
        self.sessions.delete(ctypes.c_uint64(session_id))
        self.runtime.delete(ctypes.c_uint64(session_id))

    def get_runtime(self, session_id: int):
        return self.runtime.lookup(ctypes.c_uint64(session_id))

    def seed_runtime(self, session_id: int, c2s_floor: int) -> None:
        """A session new on this gateway: its window counts every counter
        below max(``c2s_floor``, what this map already saw) as seen, so
        nothing a previous owner accepted can be replayed here."""
        from jvpn.replay import seed_floor  # noqa: PLC0415

        key = ctypes.c_uint64(session_id)
        old = self.runtime.lookup(key)
        top = max(c2s_floor, int(old.replay_top) if old is not None else 0)
        if not top:
            return
        rt = abi.session_rt_type(self.replay_bits)()
        seed_floor(rt, top, self.replay_bits)
        self.runtime.update(key, rt, BPF_F_LOCK if old is not None else 0)

    def list_sessions(self) -> list[tuple[int, abi.Session]]:
        return [(k.value, v) for k, v in self.sessions.items()]

    # -- config --
    def write_config(self, cfg: abi.Config) -> None:
        self.config.update(ctypes.c_int(0), cfg)

    def read_config(self) -> abi.Config:
        return self.config.lookup(ctypes.c_int(0))

    def set_test_clock(self, now_ns: int) -> None:
        if self.test_clock is None:
            raise JvpnError("this program was not built with the test clock")
        self.test_clock.update(ctypes.c_int(0), ctypes.c_uint64(now_ns))

    # -- counters: summed over CPUs --
    def read_counters(self) -> dict[str, dict[str, int]]:
        out = {}
        for slot in range(abi.C_MAX):
            per_cpu = self.counters.lookup(ctypes.c_int(slot)) or []
            out[abi.COUNTER_NAMES[slot]] = {
                "packets": sum(c.packets for c in per_cpu),
                "bytes": sum(c.bytes for c in per_cpu),
            }
        return out


# ---------------------------------------------------------------- attach state


@dataclass
class Attachment:
    ifname: str
    ifindex: int
    mode: str
    ports: list[int]
    pin_dir: str
    replay_bits: int
    attached_at: float
    note: str = ""

    @classmethod
    def path(cls, ifname: str) -> Path:
        return run_dir() / f"{ifname}.json"

    def save(self) -> None:
        run_dir().mkdir(parents=True, exist_ok=True)
        self.path(self.ifname).write_text(json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def load(cls, ifname: str) -> Attachment:
        try:
            return cls(**json.loads(cls.path(ifname).read_text()))
        except FileNotFoundError:
            raise NotAttached(f"jvpn is not attached to {ifname}") from None
        except (ValueError, TypeError) as e:
            raise JvpnError(f"{cls.path(ifname)} is unreadable ({e}): run detach") from e

    @classmethod
    def all(cls) -> list[Attachment]:
        if not run_dir().is_dir():
            return []
        out = []
        for p in sorted(run_dir().glob("*.json")):
            try:
                out.append(cls.load(p.stem))
            except JvpnError:
                continue
        return out


@dataclass
class Owners:
    """Written by the gateway daemon next to the attachment record: its node
    id, its lease (the fence of its own elements) and the owners of its
    standby elements. Read by `jvpn-xdp sessions`."""

    node: str
    lease: int
    remote: dict

    @classmethod
    def path(cls, ifname: str) -> Path:
        return run_dir() / f"{ifname}.owners.json"

    def save(self, ifname: str) -> None:
        run_dir().mkdir(parents=True, exist_ok=True)
        tmp = self.path(ifname).with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2) + "\n")
        tmp.replace(self.path(ifname))  # readers see the old or the new file

    @classmethod
    def load(cls, ifname: str) -> Owners | None:
        try:
            return cls(**json.loads(cls.path(ifname).read_text()))
        except (OSError, ValueError, TypeError):
            return None  # no daemon has run here (yet)


def xdp_prog_id(ifname: str) -> int | None:
    """The id of the XDP program on a link (any mode), from netlink."""
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        links = ipr.get_links(ifname=ifname)
        if not links:
            return None
        xdp = links[0].get_attr("IFLA_XDP")
        if not xdp:
            return None
        return xdp.get_attr("IFLA_XDP_PROG_ID")


def pinned_prog_id(pins: Path) -> int | None:
    """The id of the program pinned at ``pins``/prog by attach (None: none
    is pinned there): the program whose maps these are."""
    fd = _lib().bpf_obj_get(str(Path(pins) / "prog").encode())
    if fd < 0:
        return None
    try:
        info = (ctypes.c_uint8 * 16)()  # struct bpf_prog_info begins: u32 type, u32 id
        size = ctypes.c_uint32(ctypes.sizeof(info))
        if _lib().bpf_obj_get_info_by_fd(fd, info, ctypes.byref(size)) != 0:
            return None
        return int.from_bytes(bytes(info[4:8]), "little")
    finally:
        os.close(fd)


def attach(ifname: str, config: GateConfig, mode: str = "native",
           options: BuildOptions | None = None) -> Attachment:
    """Compile, load, configure and attach the gate to ``ifname``.

    Native (driver) mode first; if the driver refuses, generic (skb) mode,
    with the reason recorded in ``Attachment.note``.
    """
    require_root()
    ifindex = require_interface(ifname)
    if mode not in MODES:
        raise JvpnError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    if Attachment.path(ifname).exists() or xdp_prog_id(ifname):
        raise AlreadyAttached(f"an XDP program is already attached to {ifname}: detach it first")
    options = options or BuildOptions()
    if not config.ns_per_jiffy:
        config = replace(config, ns_per_jiffy=measure_ns_per_jiffy())
    prog = Program(pin_dir(ifname), options)
    try:
        with prog.maps() as maps:
            maps.write_config(config.to_abi())
        used, note = _attach_with_fallback(ifname, prog, mode)
        prog._pin("prog", prog.prog_fd)
    except BaseException:
        _unpin(pin_dir(ifname))
        raise
    finally:
        prog.close()
    att = Attachment(ifname=ifname, ifindex=ifindex, mode=used, ports=list(config.ports),
                     pin_dir=str(pin_dir(ifname)), replay_bits=options.replay_bits,
                     attached_at=time.time(), note=note)
    att.save()
    return att


def _attach_with_fallback(ifname: str, prog: Program, mode: str) -> tuple[str, str]:
    bcc = _bcc()
    try:
        bcc.BPF.attach_xdp(ifname, prog.fn, MODES[mode])
        return mode, ""
    except Exception as e:
        if mode == "generic":
            raise LoadFailed(f"attaching XDP (generic) to {ifname} failed: {e}") from e
        first = str(e)
    try:
        bcc.BPF.attach_xdp(ifname, prog.fn, MODES["generic"])
    except Exception as e:
        raise LoadFailed(f"attaching XDP to {ifname} failed: native: {first}; generic: {e}") from e
    return "generic", f"native mode refused by the driver ({first}); running in generic mode"


def detach(ifname: str) -> None:
    require_root()
    try:
        att = Attachment.load(ifname)
    except NotAttached:
        att = None
    if att is None and not pin_dir(ifname).exists():
        raise NotAttached(f"jvpn is not attached to {ifname}")
    if _interface_exists(ifname):
        bcc = _bcc()
        modes = [att.mode] if att else []
        for m in modes + [m for m in MODES if m not in modes]:
            try:
                bcc.BPF.remove_xdp(ifname, MODES[m])
            except Exception:  # noqa: BLE001 - bcc raises bare Exception; try every mode
                continue
        if xdp_prog_id(ifname):
            raise JvpnError(f"an XDP program is still attached to {ifname} after detach "
                            "(not jvpn's?): pins kept; remove it with `ip link set dev "
                            f"{ifname} xdp off`")
    _unpin(pin_dir(ifname))
    Attachment.path(ifname).unlink(missing_ok=True)


def _interface_exists(ifname: str) -> bool:
    try:
        socket.if_nametoindex(ifname)
        return True
    except OSError:
        return False


def _unpin(pins: Path) -> None:
    if pins.is_dir():
        shutil.rmtree(pins, ignore_errors=True)


def unpin(pins: Path) -> None:
    """Remove a pin directory (tests and detach)."""
    _unpin(Path(pins))


class EventReader:
    """The XDP program's security events from the pinned ring buffer, read by
    any process (the daemon, `jvpn-xdp events --xdp`)."""

    def __init__(self, pins: Path):
        bcc = _bcc()
        path = Path(pins) / "events"
        self.fd = _lib().bpf_obj_get(str(path).encode())
        if self.fd < 0:
            raise NotAttached(f"cannot open {path}: is jvpn attached?")
        self._got: list = []

        def _cb(_ctx, data, size):
            self._got.append(abi.Event.from_buffer_copy(ctypes.string_at(data, size)))
            return 0

        self._cb = bcc.libbcc._RINGBUF_CB_TYPE(_cb)  # keep a reference: C holds the pointer
        self._rb = _lib().bpf_new_ringbuf(self.fd, self._cb, None)
        if not self._rb:
            os.close(self.fd)
            raise JvpnError(f"cannot open the ring buffer {path}")

    def poll(self, timeout_ms: int = 200) -> list:
        _lib().bpf_poll_ringbuf(self._rb, timeout_ms)
        got, self._got = self._got, []
        return got

    def close(self) -> None:
        if self._rb:
            _lib().bpf_free_ringbuf(self._rb)
            self._rb = None
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
