"""Typed access to the pinned maps of a gateway's XDP program.

Map access goes through the bpf syscall wrappers of libbcc on pinned file
descriptors, so any process (the CLI, a restarted daemon) can read and write
the maps without recompiling the program.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Iterator
from pathlib import Path

from jvpn.errors import JvpnError, NotAttached
from jvpn.gate import abi, loader

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


BPF_F_LOCK = 4  # update under the value's bpf_spin_lock (the kernel may hold it)


class PinnedMap:
    """A pinned BPF map opened by path, keys and values as ctypes types."""

    def __init__(self, path: Path, key_type, value_type, percpu: bool = False):
        self.path = Path(path)
        self.key_type = key_type
        self.value_type = value_type
        self.percpu = percpu
        fd = loader._lib().bpf_obj_get(str(self.path).encode())
        if fd < 0:
            raise NotAttached(f"cannot open {self.path}: is jvpn attached to this interface?")
        self.fd = fd
        self._ncpu = len(loader._bcc().utils.get_possible_cpus()) if percpu else 1
        self._stride = (ctypes.sizeof(value_type) + 7) // 8 * 8

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def _value_buf(self):
        return (ctypes.c_uint8 * (self._stride * self._ncpu))()

    def lookup(self, key):
        buf = self._value_buf()
        if loader._lib().bpf_lookup_elem(self.fd, ctypes.byref(key), buf) != 0:
            return None
        if not self.percpu:
            return self.value_type.from_buffer_copy(buf)
        return [self.value_type.from_buffer_copy(buf, i * self._stride) for i in range(self._ncpu)]

    def update(self, key, value, flags: int = 0) -> None:
        if self.percpu:
            raise JvpnError("per-CPU maps are written by the XDP program only")
        lib = loader._lib()
        if lib.bpf_update_elem(self.fd, ctypes.byref(key), ctypes.byref(value), flags) != 0:
            err = ctypes.get_errno()
            raise JvpnError(f"update of {self.path} failed: {os.strerror(err) if err else 'error'}")

    def delete(self, key) -> bool:
        return loader._lib().bpf_delete_elem(self.fd, ctypes.byref(key)) == 0

    def keys(self) -> Iterator:
        key = self.key_type()
        nxt = self.key_type()
        if loader._lib().bpf_get_next_key(self.fd, None, ctypes.byref(nxt)) != 0:
            return
        while True:
            yield self.key_type.from_buffer_copy(nxt)
            ctypes.memmove(ctypes.byref(key), ctypes.byref(nxt), ctypes.sizeof(key))
            if loader._lib().bpf_get_next_key(self.fd, ctypes.byref(key), ctypes.byref(nxt)) != 0:
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
