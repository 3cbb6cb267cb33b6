"""Typed access to the pinned maps of a gateway's XDP program.

Map access goes through the bpf syscall wrappers of libbcc on pinned file
descriptors, so any process (the CLI, a restarted daemon) can read and write
the maps without recompiling the program.
"""

from __future__ import annotations

import ctypes
import errno
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from jvpn.errors import JvpnError, NotAttached
from jvpn.gate import abi, loader
from jvpn.gate.element import GateFull, enforced_top


@dataclass(frozen=True)
class MapSpec:
    """One map of jvpn_xdp.c as pinned: its C name, BPF map type, key and value
    (ctypes mirrors; the session_rt value is sized by the build's replay_bits).
    tests/bpf/test_abi.py checks every entry against the C source."""

    c_name: str
    kind: str  # the BPF_TABLE_PINNED type ("hash", "array", ...) or "ringbuf"
    key: type | None
    value: type
    replay_sized: bool = False
    session_sized: bool = False  # JVPN_MAX_SESSIONS elements (attach --max-sessions)

    def value_type(self, replay_bits: int = abi.REPLAY_BITS) -> type:
        return abi.session_rt_type(replay_bits) if self.replay_sized else self.value

    @property
    def percpu(self) -> bool:
        return self.kind.startswith("percpu")


# The one registry: pinned file name -> map (and the writer, docs/xdp.md).
PINS = {
    "sessions": MapSpec("jvpn_sessions", "hash", ctypes.c_uint64, abi.Session,
                        session_sized=True),  # daemon
    "session_rt": MapSpec("jvpn_session_rt", "array", ctypes.c_uint32, abi.SessionRt,
                          replay_sized=True, session_sized=True),  # XDP
    "config": MapSpec("jvpn_config", "array", ctypes.c_int, abi.Config),  # attach
    "fence": MapSpec("jvpn_fence", "array", ctypes.c_int, abi.Fence),  # daemon
    "remote": MapSpec("jvpn_remote", "hash", ctypes.c_uint64, abi.Remote),  # daemon
    "remote_rl": MapSpec("jvpn_remote_rl", "lru_hash", ctypes.c_uint64, abi.RemoteRl),  # XDP
    "global": MapSpec("jvpn_global", "array", ctypes.c_int, abi.Global),  # XDP
    "src_rl": MapSpec("jvpn_src_rl", "lru_hash", abi.SrcKey, abi.SrcRl),  # XDP
    "counters": MapSpec("jvpn_counters", "percpu_array", ctypes.c_int, abi.Counter),  # XDP
    "events": MapSpec("jvpn_events", "ringbuf", None, abi.Event),  # XDP
    "test_clock": MapSpec("jvpn_test_clock", "array", ctypes.c_int, ctypes.c_uint64),  # tests
}


def _map_info(path: Path) -> tuple[int, int] | None:
    """(value_size, max_entries) of a pinned map, from the kernel."""
    fd = loader._lib().bpf_obj_get(str(path).encode())
    if fd < 0:
        return None
    try:
        info = (ctypes.c_uint32 * 32)()
        size = ctypes.c_uint32(ctypes.sizeof(info))
        if loader._lib().bpf_obj_get_info(fd, info, ctypes.byref(size)) != 0:
            return None
        return int(info[3]), int(info[4])  # type, id, key_size, value_size, max_entries
    finally:
        os.close(fd)


def stale_layout(pins: Path, replay_bits: int = abi.REPLAY_BITS,
                 max_sessions: int | None = None) -> str | None:
    """Why maps already pinned at ``pins`` cannot be reused by this build
    (another jvpn_abi.h: e.g. the session element grew for issue 13's key
    phases, a verdict was added; or another ``max_sessions``, when given:
    an attach), else None. The verifier would refuse the program on them
    with a bare "Permission denied"; bcc would reuse maps of another size."""
    for name, spec in PINS.items():
        info = _map_info(Path(pins) / name) if spec.kind != "ringbuf" else None
        if info is None:
            continue
        want = ctypes.sizeof(spec.value_type(replay_bits))
        if info[0] != want:
            return f"{name}: {info[0]}-byte values, this build's are {want}"
        if name == "counters" and info[1] != abi.C_MAX:
            return f"counters: {info[1]} slots, this build counts {abi.C_MAX}"
        if spec.session_sized and max_sessions is not None and info[1] != max_sessions:
            return f"{name}: {info[1]} elements, --max-sessions {max_sessions} asks another"
    if (Path(pins) / "sessions").exists() and not (Path(pins) / "remote").exists():
        return "no remote sessions map (made before issue 15)"
    return None


# what a kernel (or map type) without BPF_MAP_*_BATCH answers: EINVAL,
# EOPNOTSUPP, and the kernel's internal ENOTSUPP (524) that leaks to users
NO_BATCH = (errno.EINVAL, errno.EOPNOTSUPP, 524)


_INT_CODES = {1: "B", 2: "H", 4: "I", 8: "Q"}


def _field_code(kind, size: int) -> str:
    """The struct code that reads a simple ctypes field's bytes as ctypes
    does: its size's integer code, lower case for a signed one, ``d``/``f``
    for a float (review k19r2 F1: by size alone, -1 read as 2**32 - 1).
    ctypes' own code cannot be used as is: with "=" struct's ``L`` is 4
    bytes, ctypes' c_ulong 8."""
    code = getattr(kind, "_type_", None)
    if code in ("d", "f"):
        return code
    if not isinstance(code, str) or code.lower() not in "bhilq" or size not in _INT_CODES:
        raise TypeError(f"{kind.__name__}: no integer or float field")
    unsigned = _INT_CODES[size]
    return unsigned if code.isupper() else unsigned.lower()


def value_layout(ctype, names: tuple[str, ...]) -> struct.Struct:
    """A struct.Struct that reads the fields NAMES (in their byte order) of
    a ctypes structure's bytes as ctypes reads them (native byte order):
    an int for an integer field (signed as it is), a float for a float,
    bytes for an array; the rest skipped (TypeError for any other kind)."""
    kinds = dict(ctype._fields_)
    fmt, at = "=", 0
    for name in names:
        field = getattr(ctype, name)
        if field.offset < at:
            raise ValueError(f"{name}: the names must be in the fields' byte order")
        array = issubclass(kinds[name], ctypes.Array)
        fmt += f"{field.offset - at}x" + (f"{field.size}s" if array
                                          else _field_code(kinds[name], field.size))
        at = field.offset + field.size
    return struct.Struct(fmt + f"{ctypes.sizeof(ctype) - at}x")


def _plain_key(key):
    """A key as the batch calls give it: an integer key type's as an int."""
    return key.value if isinstance(key, ctypes._SimpleCData) else key


def _copied(item, kind):
    """An element of a reused batch buffer as a value of its own (plain ints
    are copies already; a structure would alias the buffer)."""
    return item if isinstance(item, int) else kind.from_buffer_copy(item)


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
        self._buf_type = ctypes.c_uint8 * (self._stride * self._ncpu)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def _value_buf(self):
        return self._buf_type()

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
            raise self._update_failed(ctypes.get_errno())

    def update_batch(self, keys: list, values: list) -> None:
        """Many elements in one BPF_MAP_UPDATE_BATCH (the kernel's own loop:
        a restart's million elements in seconds, not a million syscalls);
        ``keys``: the key type's values or plain ints (an integer key type);
        single updates on a kernel without it. A full map raises GateFull
        after the elements that fit are written."""
        if not keys:
            return
        if self.percpu:
            raise JvpnError("per-CPU maps are written by the XDP program only")
        n = len(keys)
        karr, varr = (self.key_type * n)(*keys), (self.value_type * n)(*values)
        count = ctypes.c_uint32(n)
        lib = loader._lib()
        if lib.bpf_update_batch(self.fd, ctypes.byref(karr), ctypes.byref(varr),
                                ctypes.byref(count)) == 0:
            return
        err = ctypes.get_errno()
        if err not in NO_BATCH:
            raise self._update_failed(err, written=count.value)
        size = ctypes.sizeof(self.key_type)
        for i, v in enumerate(values):  # each key where the array holds it (ints or ctypes)
            if lib.bpf_update_elem(self.fd, ctypes.byref(karr, i * size), ctypes.byref(v),
                                   0) != 0:
                raise self._update_failed(ctypes.get_errno())

    def _update_failed(self, err: int, written: int | None = None) -> JvpnError:
        if err == errno.E2BIG:  # a hash map at max_entries
            return GateFull(f"{self.path} is full ({self.max_entries()} elements): "
                            "attach with a larger --max-sessions")
        done = f" after {written} elements" if written else ""
        return JvpnError(f"update of {self.path} failed{done}: "
                         f"{os.strerror(err) if err else 'error'}")

    def items_batch(self, chunk: int = 4096) -> Iterator:
        """Every (key, value), ``chunk`` elements per BPF_MAP_LOOKUP_BATCH
        (items() on a kernel without it). Not a snapshot: an element written
        meanwhile may or may not be seen, as with items()."""
        if self.percpu:
            yield from self.items()
            return
        keys, values = (self.key_type * chunk)(), (self.value_type * chunk)()
        for count in self._lookup_batches(keys, values, chunk):
            if count is None:  # keyed as the batches key: an integer key type's by ints
                yield from ((_plain_key(k), v) for k, v in self.items())
                return
            for i in range(count):
                yield _copied(keys[i], self.key_type), _copied(values[i], self.value_type)

    def keys_batch(self, chunk: int = 4096) -> Iterator:
        """Every key, read in batches as items_batch reads, no value copied
        (a restart's look for stale elements wants the ids only: issue 15).
        An integer key type's keys as ints, with batches or without."""
        if self.percpu:
            yield from map(_plain_key, self.keys())
            return
        simple = issubclass(self.key_type, ctypes._SimpleCData)
        keys, values = (self.key_type * chunk)(), (self.value_type * chunk)()
        for count in self._lookup_batches(keys, values, chunk):
            if count is None:
                yield from map(_plain_key, self.keys())
                return
            if simple:
                yield from keys[:count]  # plain values, copies already
            else:
                yield from (self.key_type.from_buffer_copy(keys[i]) for i in range(count))

    def fields_batch(self, layout: struct.Struct, chunk: int = 4096) -> Iterator[tuple]:
        """Every (key, fields): the value's fields that ``layout`` (from
        :func:`value_layout`) reads, unpacked from the batch buffer itself,
        no structure copied per element (a million at the CLI: issue 15).
        Integer keys only; as items_batch otherwise."""
        size = ctypes.sizeof(self.value_type)
        if self.percpu or layout.size != size:
            raise JvpnError(f"{self.path}: fields of {layout.size} bytes, values of {size}")
        keys, values = (self.key_type * chunk)(), (ctypes.c_uint8 * (size * chunk))()
        for count in self._lookup_batches(keys, values, chunk):
            if count is None:
                for k, v in self.items():
                    yield k.value, layout.unpack(bytes(v))
                return
            unpacked = layout.iter_unpack(memoryview(values)[:count * size])
            yield from zip(keys[:count], unpacked, strict=True)

    def _lookup_batches(self, keys, values, chunk: int) -> Iterator[int | None]:
        """BPF_MAP_LOOKUP_BATCH into ``keys`` and ``values``: each batch's
        count once it is in them; None first if the kernel has no batches."""
        token, first = ctypes.c_uint32(0), True
        lib = loader._lib()
        while True:
            count = ctypes.c_uint32(chunk)
            rc = lib.bpf_lookup_batch(self.fd, None if first else ctypes.byref(token),
                                      ctypes.byref(token), ctypes.byref(keys),
                                      ctypes.byref(values), ctypes.byref(count))
            err = ctypes.get_errno() if rc else 0
            if rc and err != errno.ENOENT:
                if first and err in NO_BATCH:
                    yield None
                    return
                raise JvpnError(f"batch lookup of {self.path} failed: {os.strerror(err)}")
            yield count.value
            if rc:  # ENOENT: the last batch
                return
            first = False

    def delete(self, key) -> bool:
        return loader._lib().bpf_delete_elem(self.fd, ctypes.byref(key)) == 0

    def max_entries(self) -> int:
        """The map's capacity, from the kernel (struct bpf_map_info)."""
        info = (ctypes.c_uint32 * 32)()
        size = ctypes.c_uint32(ctypes.sizeof(info))
        if loader._lib().bpf_obj_get_info(self.fd, info, ctypes.byref(size)) != 0:
            raise JvpnError(f"cannot read the map info of {self.path}")
        return int(info[4])  # type, id, key_size, value_size, max_entries

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


# what `jvpn-xdp sessions` reads of an element (GateMaps.session_fields),
# in the structure's byte order; bind_addr: its 16 bytes as the map holds them
SESSION_FIELDS = ("version", "fence", "bind_addr", "bind_port", "bind_family", "state",
                  "rt_slot", "rt_gen")
SESSION_LAYOUT = value_layout(abi.Session, SESSION_FIELDS)
RUNTIME_FIELDS = ("session_id", "gen", "replay_top", "rx_packets", "rx_bytes")


class GateMaps:
    """Typed accessors for one gateway interface's pinned maps."""

    def __init__(self, pins: Path, replay_bits: int = abi.REPLAY_BITS):
        self.pins = Path(pins)
        self.replay_bits = replay_bits
        if not self.pins.is_dir():
            raise NotAttached(f"no jvpn maps pinned at {self.pins}: attach first")
        # maps pinned by another build (an upgrade without detach + attach):
        # read with this build's layout, every field past the change would be
        # another one (issue 14's probe bucket, issue 13's key phases)
        stale = stale_layout(self.pins, replay_bits)
        if stale is not None:
            raise NotAttached(f"the maps pinned at {self.pins} were made by another build "
                              f"({stale}): detach (jvpn-xdp detach), then attach again")
        self._open: list[PinnedMap] = []
        try:
            self.sessions = self._pinned("sessions")
            self.runtime = self._pinned("session_rt")
            self.config = self._pinned("config")
            self.fence = self._pinned("fence")
            self.remote = self._pinned("remote")
            self.remote_buckets = self._pinned("remote_rl")
            self.glob = self._pinned("global")
            self.sources = self._pinned("src_rl")
            self.counters = self._pinned("counters")
            has_clock = (self.pins / "test_clock").exists()
            self.test_clock = self._pinned("test_clock") if has_clock else None
        except BaseException:
            self.close()
            raise

    def _pinned(self, name: str) -> PinnedMap:
        spec = PINS[name]
        m = PinnedMap(self.pins / name, spec.key, spec.value_type(self.replay_bits), spec.percpu)
        self._open.append(m)
        return m

    def close(self) -> None:
        for m in self._open:
            m.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- sessions: the daemon is the only writer --
    def put_session(self, session_id: int, session: abi.Session) -> None:
        """One element replacement: readers see the old or the new binding."""
        self.sessions.update(ctypes.c_uint64(session_id), session)

    def put_sessions(self, elements: list[tuple[int, abi.Session]]) -> None:
        """Many elements, BPF_MAP_UPDATE_BATCH (jvpn/gate/batch.py); each one
        replaced whole, as put_session."""
        self.sessions.update_batch([sid for sid, _ in elements],  # ints: no c_uint64 each
                                   [element for _, element in elements])

    def get_session(self, session_id: int) -> abi.Session | None:
        return self.sessions.lookup(ctypes.c_uint64(session_id))

    def remove_session(self, session_id: int) -> None:
        """The element only: its runtime slot is XDP's, re-initialized when an
        element with another (session id, generation) names it."""
        self.sessions.delete(ctypes.c_uint64(session_id))

    # -- remote: the daemon is the only writer (sessions other gateways own) --
    def put_remote(self, session_id: int, entry: abi.Remote) -> None:
        self.remote.update(ctypes.c_uint64(session_id), entry)

    def get_remote(self, session_id: int) -> abi.Remote | None:
        return self.remote.lookup(ctypes.c_uint64(session_id))

    def remove_remote(self, session_id: int) -> None:
        self.remote.delete(ctypes.c_uint64(session_id))

    def remote_ids(self) -> set[int]:
        return {k.value for k in self.remote.keys()}

    # -- session_rt: XDP is the only writer; read here --
    def runtime_slot(self, slot: int):
        return self.runtime.lookup(ctypes.c_uint32(slot))

    def get_runtime(self, session_id: int):
        """The runtime XDP keeps for this session's element, or None (no
        element, or no packet since the element named its slot/generation)."""
        s = self.get_session(session_id)
        rt = self.runtime_slot(s.rt_slot) if s is not None else None
        if rt is None or rt.session_id != session_id or rt.gen != s.rt_gen:
            return None
        return rt

    def counter_top(self, session_id: int) -> int:
        """The replay top the gate enforces at this session's next packet."""
        s = self.get_session(session_id)
        rt = self.runtime_slot(s.rt_slot) if s is not None else None
        return enforced_top(session_id, s, rt)

    def runtime_capacity(self) -> int:
        return self.runtime.max_entries()

    def session_ids(self) -> set[int]:
        """The ids of every element (no element read into a structure)."""
        return set(self.sessions.keys_batch())

    def list_sessions(self) -> list[tuple[int, abi.Session]]:
        return list(self.sessions.items_batch())

    def session_fields(self) -> list[tuple[int, tuple]]:
        """Every element as (session id, SESSION_FIELDS' values), read in
        batches straight from the batch buffer (no abi.Session a session)."""
        return list(self.sessions.fields_batch(SESSION_LAYOUT))

    def count_sessions(self) -> int:
        return sum(1 for _ in self.sessions.keys())

    def runtime_views(self) -> dict[int, tuple[int, int, int, int, int]]:
        """Every runtime slot a packet has claimed, read in batches: slot ->
        (session id, generation, rx packets, rx bytes, replay top); a
        tuple, not the slot (its bitmap is most of its size)."""
        layout = value_layout(self.runtime.value_type, RUNTIME_FIELDS)
        return {slot: (sid, gen, rx_packets, rx_bytes, top)
                for slot, (sid, gen, top, rx_packets, rx_bytes)
                in self.runtime.fields_batch(layout) if sid}

    # -- config --
    def write_config(self, cfg: abi.Config) -> None:
        self.config.update(ctypes.c_int(0), cfg)

    def read_config(self) -> abi.Config:
        return self.config.lookup(ctypes.c_int(0))

    # -- fence: the daemon is the only writer --
    def write_fence(self, fence: abi.Fence) -> None:
        self.fence.update(ctypes.c_int(0), fence)

    def read_fence(self) -> abi.Fence:
        return self.fence.lookup(ctypes.c_int(0))

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
