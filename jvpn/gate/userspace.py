"""The gate in the daemon, for hosts without XDP: the reference model is the gate.

It mirrors XdpGate: the daemon writes elements (with their runtime slot,
generation and replay floor) and the fence; the model initializes its own
runtime slots, as the XDP program does."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable

from jvpn.gate import abi
from jvpn.gate.config import GateConfig
from jvpn.gate.element import (
    RuntimeSlots,
    element_of,
    enforced_top,
    floors_kept,
    raised_ctl_floor,
    raised_floor,
    random_generation,
    remote_ctl_floor,
    remote_entry,
)
from jvpn.gate.model import EVENT_RING_CAPACITY, MAX_SOURCES, Model
from jvpn.keys import KeyRing, SessionKeys
from jvpn.session import SessionRecord


class UserspaceGate:
    """The same checks as the XDP program, in the daemon (hosts without XDP):
    the reference model is the gate."""

    def __init__(self, config: GateConfig | None = None,
                 clock_ns: Callable[[], int] = time.monotonic_ns, *,
                 new_generation: Callable[[], int] = random_generation,
                 max_sources: int = MAX_SOURCES, event_capacity: int = EVENT_RING_CAPACITY):
        """``max_sources`` and ``event_capacity``: the kernel's bounds by
        default (threat 4.3: spoofed sources cannot grow the daemon)."""
        self.model = Model(config=(config or GateConfig()).to_abi(), max_sources=max_sources,
                           event_capacity=event_capacity)
        self.slots = RuntimeSlots(self.model.max_sessions, new_generation=new_generation)
        # as XdpGate's: the model's runtime slots; `gateway up` may lower it (MaxSessions)
        self.capacity = self.max_sessions = self.model.max_sessions
        self.clock_ns = clock_ns
        self.checks_in_kernel = False
        self._lock = threading.Lock()
        self._events_waiting = threading.Event()

    def put(self, rec: SessionRecord, keys: SessionKeys | KeyRing, fence: int = 0,
            first: bool = False, c2s_floor: int = 0, was_remote: bool = False) -> None:
        with self._lock:
            self._write(rec, keys, fence, False, first, c2s_floor, was_remote)

    def standby(self, rec: SessionRecord, keys: SessionKeys | KeyRing,
                was_remote: bool = False) -> None:
        with self._lock:
            self._write(rec, keys, 0, True, False, 0, was_remote)

    def _write(self, rec, keys, fence: int, remote: bool, first: bool, floor: int,
               was_remote: bool) -> None:
        """As XdpGate._write (``was_remote``: the remote entry's control floor)."""
        sid = rec.session_id
        old = self.model.sessions.get(sid)
        rt_slot, rt_gen, replay_floor = self.slots.placed(sid, old, first, floor)
        entry = self.model.remote.get(sid) if old is None and was_remote else None
        ctl_floor, probe_floor = floors_kept(old, entry)
        self.model.sessions[sid] = element_of(rec, keys, fence, remote, rt_slot, rt_gen,
                                              replay_floor, ctl_floor, probe_floor)

    def put_remote(self, sid: int, keys: SessionKeys | KeyRing) -> None:
        with self._lock:
            floor = remote_ctl_floor(self.model.remote.get(sid), self.model.sessions.get(sid))
            self.model.remote[sid] = remote_entry(keys, floor)

    def remove_remote(self, sid: int) -> None:
        with self._lock:
            self.model.remote.pop(sid, None)

    def remote_ids(self) -> set[int]:
        with self._lock:
            return set(self.model.remote)

    def raise_ctl_floor(self, sid: int, counter: int) -> None:
        """As XdpGate.raise_ctl_floor (issue 10 item 5)."""
        self._raise(sid, counter, "ctl_floor")

    def raise_probe_floor(self, sid: int, counter: int) -> None:
        """As XdpGate.raise_probe_floor (issue 14)."""
        self._raise(sid, counter, "probe_floor")

    def _raise(self, sid: int, counter: int, floor: str) -> None:
        with self._lock:
            old = self.model.sessions.get(sid)
            if old is not None:
                new = raised_floor(old, counter, floor)
                if new is not None:
                    self.model.sessions[sid] = new
                return
            if floor != "ctl_floor":
                return  # a remote entry has a control floor only: it passes no probe
            new = raised_ctl_floor(self.model.remote.get(sid), counter)
            if new is not None:
                self.model.remote[sid] = new

    def batched(self) -> contextlib.AbstractContextManager:
        """As XdpGate.batched: the model's writes are dictionary stores already."""
        return contextlib.nullcontext()

    def remove(self, sid: int) -> None:
        with self._lock:
            self.model.sessions.pop(sid, None)
            self.slots.free(sid)

    def counter_top(self, sid: int) -> int:
        with self._lock:
            s = self.model.sessions.get(sid)
            rt = self.model.runtime.get(s.rt_slot) if s is not None else None
            return enforced_top(sid, s, rt)

    def ids(self) -> set[int]:
        return set(self.model.sessions)

    def runtime(self, sid: int) -> None:
        """No kernel counts: the daemon's own are the session's figures."""
        return None

    def read_counters(self) -> dict[str, dict[str, int]]:
        """The model's verdict counters, named as the XDP program's."""
        with self._lock:
            return {abi.COUNTER_NAMES[i]: {"packets": p, "bytes": b}
                    for i, (p, b) in enumerate(self.model.counters)}

    def event_reader(self) -> _EventReader:
        """The sampled security drops, for the daemon's events loop (the
        same interface as the kernel ring buffer's reader)."""
        return _EventReader(self)

    def drain_events(self) -> list:
        with self._lock:
            self._events_waiting.clear()
            return self.model.events.drain()

    def wait_events(self, timeout_s: float) -> bool:
        return self._events_waiting.wait(timeout_s)

    def detached(self) -> str | None:
        return None  # the checks run in this process: they cannot be taken away

    def publish_owners(self, node: str, lease: int, remote: dict[int, str]) -> None:
        pass  # no maps to describe

    def set_fence(self, token: int, deadline_ns: int) -> None:
        with self._lock:  # the model's clock is CLOCK_MONOTONIC too
            self.model.fence = abi.Fence(token=token, deadline_ns=deadline_ns)

    def admit(self, msg: bytes, src: tuple[str, int]) -> bool:
        with self._lock:
            reason = self.model.run_message(msg, src[0], src[1], self.clock_ns())
            if len(self.model.events):
                self._events_waiting.set()
            return abi.is_pass(reason)

    def close(self) -> None:
        pass


class _EventReader:
    """``poll(timeout_ms)``: the events waiting in the gate's ring, waiting
    up to ``timeout_ms`` for one if there are none (as EventReader does)."""

    def __init__(self, gate: UserspaceGate):
        self._gate = gate

    def poll(self, timeout_ms: int) -> list:
        got = self._gate.drain_events()
        if not got and timeout_ms > 0 and self._gate.wait_events(timeout_ms / 1000):
            got = self._gate.drain_events()
        return got

    def close(self) -> None:
        pass
