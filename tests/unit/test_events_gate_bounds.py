"""The userspace gate's memory is bounded the way the kernel's maps are
(issue 10 item 4, threat 4.3 "bounded memory structures"): spoofed sources
cannot grow the per-source table past the kernel's LRU size, and sampled
security events wait in a bounded ring the daemon drains, not in a list."""

from __future__ import annotations

import ctypes
import re
from pathlib import Path

import jvpn.gate
from jvpn import wire
from jvpn.gate import abi
from jvpn.gate.config import GateConfig
from jvpn.gate.model import EVENT_RING_CAPACITY, MAX_SOURCES, Model
from jvpn.gate.userspace import UserspaceGate

C_SOURCE = Path(jvpn.gate.__file__).parent / "bpf" / "jvpn_xdp.c"
SEC = 1_000_000_000


class Clock:
    def __init__(self):
        self.now = 1_000 * SEC

    def __call__(self) -> int:
        return self.now


def _c_define(name: str) -> int:
    m = re.search(rf"#define {name} (\d+)", C_SOURCE.read_text())
    assert m, f"{name} not in {C_SOURCE}"
    return int(m.group(1))


def _initiation(counter: int = 0) -> bytes:
    hdr = wire.Header(type=abi.MSG_HANDSHAKE_INIT, session_id=0, counter=counter)
    return wire.message(hdr, None, b"\0" * 64)


def _spoofed(i: int) -> str:
    return f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}"


# Initiations beyond one source's budget are security drops (drop_rate_source),
# sampled into events.
TIGHT = {"source_control_pps": 1, "source_control_burst": 1, "global_control_pps": 0}


def test_userspace_gate_bounds_sources_like_the_kernel_lru():
    """One entry per spoofed source used to stay forever (~356 B each,
    2.4 GiB/h at 2000 new sources/s). Now the table holds at most the
    kernel's JVPN_MAX_SOURCES, evicting the least recently used."""
    assert MAX_SOURCES == _c_define("JVPN_MAX_SOURCES")
    assert UserspaceGate().model.sources.capacity == MAX_SOURCES
    clock = Clock()
    gate = UserspaceGate(GateConfig(global_control_pps=0), clock_ns=clock, max_sources=64)
    for i in range(1_000):
        clock.now += 1_000
        gate.admit(_initiation(), (_spoofed(i), 4000))
    assert len(gate.model.sources) == 64
    # the newest 64 sources are the ones kept
    kept = {abi.words_addr(words, fam) for fam, words in gate.model.sources}
    assert kept == {_spoofed(i) for i in range(1_000 - 64, 1_000)}


def test_a_source_that_keeps_sending_keeps_its_bucket():
    """Least recently used, not first in: a busy source is not evicted by a
    flood of new ones, so its own rate limit is not reset by the flood."""
    clock = Clock()
    cfg = GateConfig(source_control_pps=1, source_control_burst=1, global_control_pps=0)
    gate = UserspaceGate(cfg, clock_ns=clock, max_sources=8)
    busy = ("192.0.2.7", 4000)
    assert gate.admit(_initiation(), busy)
    for i in range(100):
        clock.now += 1_000
        gate.admit(_initiation(), (_spoofed(i), 4000))
        assert not gate.admit(_initiation(), busy)  # still limited: its bucket survived
    assert len(gate.model.sources) == 8


def test_sampled_events_wait_in_a_bounded_ring_with_a_drop_counter():
    """Every sampled security event used to be appended to a list nobody
    read. Now: a ring of the kernel ring buffer's capacity; what does not fit
    is counted (dropped, and events_suppressed as the kernel counts it)."""
    assert EVENT_RING_CAPACITY == _c_define("JVPN_EVENT_PAGES") * 4096 // (
        8 + ctypes.sizeof(abi.Event))
    assert Model(config=GateConfig().to_abi()).events.capacity == EVENT_RING_CAPACITY
    now = 1_000 * SEC
    cfg = GateConfig(events_per_sec=1_000_000, events_burst=1_000_000, **TIGHT)
    model = Model(config=cfg.to_abi(), event_capacity=16)
    assert model.run_message(_initiation(), "192.0.2.7", 4000, now) == abi.R_PASS_HANDSHAKE
    for i in range(1, 41):
        assert model.run_message(_initiation(i), "192.0.2.7", 4000, now) == abi.R_DROP_RATE_SOURCE
    assert len(model.events) == 16
    assert model.events.dropped == 24
    assert model.counters[abi.C_EVENT_SENT][0] == 16
    assert model.counters[abi.C_EVENT_SUPPRESSED][0] == 24
    assert [e.counter for e in model.events.drain()] == list(range(1, 17))  # oldest first
    assert len(model.events) == 0
    model.run_message(_initiation(99), "192.0.2.7", 4000, now)
    assert len(model.events) == 1  # room again after the drain


def test_userspace_gate_offers_its_events_to_the_daemon():
    """The daemon drains the gate's events through event_reader(), as it
    drains the kernel's ring buffer: the userspace gate's used to be None."""
    clock = Clock()
    gate = UserspaceGate(GateConfig(**TIGHT), clock_ns=clock)
    assert gate.admit(_initiation(), ("198.51.100.4", 4000))
    assert not gate.admit(_initiation(), ("198.51.100.4", 4000))
    reader = gate.event_reader()
    assert reader is not None
    [ev] = reader.poll(0)
    assert ev.reason == abi.R_DROP_RATE_SOURCE
    assert abi.words_addr(ev.saddr, ev.family) == "198.51.100.4"
    assert reader.poll(0) == []
    reader.close()
