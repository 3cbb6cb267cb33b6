"""A loaded jvpn XDP program for verdict tests: unique pin directory, the test
clock, helpers to add sessions and to run one frame and learn its reason code
(from the per-reason counters, exactly as an operator would)."""

from __future__ import annotations

import ctypes
import uuid
from pathlib import Path

from jvpn import wire
from jvpn.gate import abi, testrun
from jvpn.gate.attach import unpin
from jvpn.gate.config import GateConfig
from jvpn.gate.loader import BuildOptions, Program
from jvpn.lab import frames

KEY = bytes(range(16))
CLIENT, CLIENT_PORT = "192.0.2.10", 5555
GW = "192.0.2.1"
PORT = abi.DEFAULT_PORT


def session(addr=CLIENT, port=CLIENT_PORT, key=KEY, state=abi.STATE_ATTACHED, key1=None,
            **kw):
    """An element: ``key`` is key phase 0's header key, ``key1`` phase 1's
    (None: no key in that slot); by default it accepts the phases that
    have a key (``key_phases`` overrides)."""
    kw.setdefault("bind_family", abi.AF_INET6 if ":" in addr else abi.AF_INET)
    kw.setdefault("key_phases", (abi.key_phase_bit(0) if key is not None else 0)
                  | (abi.key_phase_bit(1) if key1 is not None else 0))
    return abi.Session(tag_key=wire.key_words(key or bytes(16)),
                       tag_key_phase1=wire.key_words(key1 or bytes(16)), state=state,
                       bind_addr=abi.addr_words(addr), bind_port=abi.port_word(port), **kw)


def frame(counter, sid=7, key=KEY, src=CLIENT, sport=CLIENT_PORT, t=abi.MSG_DATA,
          payload=b"p" * 48, dst=None, dport=PORT, **hdr):
    if dst is None:
        dst = "2001:db8::1" if ":" in src else GW
    msg = wire.message(wire.Header(type=t, session_id=sid, counter=counter, **hdr), key, payload)
    return frames.udp_frame(src, sport, dst, dport, msg)


class Gate:
    max_sessions = 1024  # runtime slots of the test build

    def __init__(self, config: GateConfig | None = None, replay_bits: int = abi.REPLAY_BITS):
        # 15 characters: test_gates.py reads these pins through an attachment
        # record, whose name must be a valid interface name (jvpn/ifname.py)
        self.pins = Path("/sys/fs/bpf") / f"jvt-{uuid.uuid4().hex[:11]}"
        self.prog = Program(self.pins, BuildOptions(replay_bits=replay_bits, test_clock=True,
                                                    max_sessions=self.max_sessions,
                                                    max_sources=1024))
        self.maps = self.prog.maps()
        self.replay_bits = replay_bits
        self.config = (config or GateConfig()).to_abi()
        self.maps.write_config(self.config)
        self.now = 1_000_000_000_000
        self.maps.set_test_clock(self.now)

    def close(self):
        try:
            self.maps.close()
            self.prog.close()
        finally:
            unpin(self.pins)

    def put(self, sid: int, element: abi.Session) -> None:
        """An element as the daemon writes it: with a runtime slot and a
        generation (slot = sid, generation 1, unless the test chose them)."""
        if not element.rt_gen:
            element.rt_slot, element.rt_gen = sid % self.max_sessions, 1
        self.maps.put_session(sid, element)

    def set_config(self, config: GateConfig) -> None:
        self.config = config.to_abi()
        self.maps.write_config(self.config)

    def tick(self, ns: int) -> None:
        self.now += ns
        self.maps.set_test_clock(self.now)

    def counters(self) -> list[tuple[int, int]]:
        c = self.maps.read_counters()
        return [(c[abi.COUNTER_NAMES[i]]["packets"], c[abi.COUNTER_NAMES[i]]["bytes"])
                for i in range(abi.C_MAX)]

    def run(self, frame_bytes: bytes) -> tuple[int, int]:
        """(XDP action, reason code) for one frame."""
        before = self.counters()
        res = testrun.run(self.prog.prog_fd, frame_bytes)
        after = self.counters()
        moved = [i for i in range(abi.R_VERDICT_MAX) if after[i][0] != before[i][0]]
        assert len(moved) == 1, f"expected one verdict counter to move, got {moved}"
        return res.action, moved[0]

    def reset_runtime(self) -> None:
        """Forget every per-session, per-source and global runtime state, and
        the fence (a test writes the maps XDP and the daemon own)."""
        zero = abi.session_rt_type(self.replay_bits)()
        for slot in range(self.max_sessions):
            self.maps.runtime.update(ctypes.c_uint32(slot), zero)
        self.maps.write_fence(abi.Fence())
        for k in list(self.maps.sources.keys()):
            self.maps.sources.delete(k)
        self.maps.glob.update(ctypes.c_int(0), abi.Global())
        self.prog.drain_events()
