"""The two gate adapters the daemon drives (XdpGate on pinned maps, the
UserspaceGate on the model), through their public methods: the same answers,
and the daemon's writes limited to its own maps: session elements and the
fence. The runtime slots (replay windows) are written by the gate alone."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from jvpn.gate import abi
from jvpn.gate.config import GateConfig
from jvpn.gate.kernel import XdpGate
from jvpn.gate.paths import GatePaths
from jvpn.gate.records import Attachment
from jvpn.gate.userspace import UserspaceGate
from jvpn.keys import SessionKeys
from jvpn.session import SessionRecord, State, Transport
from kits.xdp_harness import CLIENT, CLIENT_PORT, KEY, Gate, frame

pytestmark = pytest.mark.kernel

KEYS = SessionKeys(7, bytes(32), bytes(32), KEY, bytes(16), bytes(32))
REC = SessionRecord(session_id=7, state=State.ATTACHED, version=1, created_ms=0,
                    last_change_ms=0, binding=Transport(CLIENT, CLIENT_PORT))


class _TestBuildGate(XdpGate):
    """The harness runs its program through BPF_PROG_TEST_RUN and never
    attaches it: there is no attachment for the gate's watch to check."""

    def detached(self) -> str | None:
        return None


class XdpUnderTest:
    """XdpGate on a test build's pins, found through an attachment record."""

    def __init__(self, tmp_path: Path, harness: Gate):
        self.harness = harness
        for sid, _ in harness.maps.list_sessions():
            harness.maps.remove_session(sid)
        harness.reset_runtime()
        pins = harness.pins
        paths = GatePaths(pin_root=pins.parent, run_dir=tmp_path)
        Attachment(ifname=pins.name, ifindex=0, mode="test", ports=[abi.DEFAULT_PORT],
                   pin_dir=str(pins), replay_bits=abi.REPLAY_BITS,
                   attached_at=time.time()).save(paths)
        self.gate = _TestBuildGate(pins.name, paths)

    def passes(self, pkt: bytes) -> bool:
        return abi.is_pass(self.harness.run(pkt)[1])

    def passes_from(self, pkt: bytes, _src: str) -> bool:
        return self.passes(pkt)  # the kernel reads the source in the frame

    def runtime_written(self) -> bool:
        zero = bytes(abi.SessionRt())
        return any(bytes(self.harness.maps.runtime_slot(i)) != zero
                   for i in range(self.harness.max_sessions))

    def tick(self, ns: int) -> None:
        self.harness.tick(ns)

    def now(self) -> int:
        return self.harness.now

    def close(self) -> None:
        self.gate.close()


class UserspaceUnderTest:
    def __init__(self, _tmp_path: Path, _harness: Gate):
        self.clock = 1_000_000_000_000
        self.gate = UserspaceGate(GateConfig(), clock_ns=lambda: self.clock)

    def passes(self, pkt: bytes) -> bool:
        return self.gate.admit(pkt[42:], (CLIENT if pkt[26:30] == bytes([192, 0, 2, 10])
                                          else "198.51.100.7", CLIENT_PORT))

    def passes_from(self, pkt: bytes, src: str) -> bool:
        """As the daemon's socket hands it over: the message and its source."""
        return self.gate.admit(pkt[62 if ":" in src else 42:], (src, CLIENT_PORT))

    def runtime_written(self) -> bool:
        return bool(self.gate.model.runtime)

    def tick(self, ns: int) -> None:
        self.clock += ns

    def now(self) -> int:
        return self.clock

    def close(self) -> None:
        self.gate.close()


@pytest.fixture(scope="module")
def harness():
    g = Gate(GateConfig())
    yield g
    g.close()


@pytest.fixture(params=[XdpUnderTest, UserspaceUnderTest], ids=["xdp", "userspace"])
def under_test(request, tmp_path, harness):
    u = request.param(tmp_path, harness)
    yield u
    u.close()


V6_CLIENT = "2001:db8::10"
# (the client's transport as the daemon got it, a frame's source, passes?):
# the element the daemon writes for an IPv6 binding is the IPv6 layout the
# program matches, and a mapped IPv4 spelling is written as plain IPv4 (an
# AF_INET6 binding of ::ffff:a.b.c.d would match no IPv4 frame)
BINDINGS = [
    ("2001:DB8:0::10", V6_CLIENT, True),
    (V6_CLIENT, "2001:db8::11", False),
    (V6_CLIENT, CLIENT, False),
    ("::ffff:192.0.2.10", CLIENT, True),
    ("::ffff:192.0.2.10", "::ffff:192.0.2.10", False),  # IPv6 frame: not the IPv4 binding
    (CLIENT, V6_CLIENT, False),
]


@pytest.mark.parametrize(("bound", "src", "passes"), BINDINGS)
def test_the_daemons_binding_matches_the_frames_of_its_transport(under_test, bound, src, passes):
    rec = REC.with_(binding=Transport(bound, CLIENT_PORT))
    under_test.gate.put(rec, KEYS, first=True)
    assert under_test.passes_from(frame(1, src=src), src) == passes


def test_an_ipv6_binding_is_the_layout_the_program_reads(harness, tmp_path):
    u = XdpUnderTest(tmp_path, harness)
    try:
        u.gate.put(REC.with_(binding=Transport("2001:DB8::10", CLIENT_PORT)), KEYS, first=True)
        element = harness.maps.get_session(7)
        assert element.bind_family == abi.AF_INET6
        assert abi.words_addr(element.bind_addr, abi.AF_INET6) == V6_CLIENT
        assert abi.word_port(element.bind_port) == CLIENT_PORT
    finally:
        u.close()


def test_a_new_session_starts_above_the_floor_without_a_runtime_write(under_test):
    u = under_test
    u.gate.put(REC, KEYS, first=True, c2s_floor=100)
    assert not u.runtime_written()  # the daemon wrote its element only
    assert u.gate.counter_top(7) == 100
    assert not u.passes(frame(99))
    assert u.passes(frame(100))
    assert u.gate.counter_top(7) == 101


def test_standby_then_handoff_back_never_reopens_the_window(under_test):
    u = under_test
    u.gate.put(REC, KEYS, first=True)
    assert u.passes(frame(10)) and u.passes(frame(20))
    u.gate.standby(REC, KEYS)
    assert u.gate.counter_top(7) == 21  # the window stayed: what the handover reads
    assert not u.passes(frame(21))  # REMOTE: no data
    assert u.passes(frame(21, t=abi.MSG_REATTACH_REQ, src="198.51.100.7"))
    u.gate.put(REC, KEYS, first=True, c2s_floor=5)  # back here, a low floor
    assert not u.passes(frame(15))  # unseen, but below what this gateway saw
    assert u.passes(frame(23))


def test_remove_leaves_the_runtime_to_the_gate(under_test):
    u = under_test
    u.gate.put(REC, KEYS, first=True)
    assert u.passes(frame(1))
    u.gate.remove(7)
    assert u.gate.ids() == set() and u.gate.counter_top(7) == 0
    assert not u.passes(frame(2))
    # The same session again (adopted back): a new slot, above the floor the
    # daemon carries in the record, as when remove deleted the runtime.
    u.gate.put(REC, KEYS, first=True, c2s_floor=2)
    assert not u.passes(frame(1)) and u.passes(frame(2))


def test_fence_is_the_daemons_own_map(under_test):
    u = under_test
    before = bytes(u.harness.maps.read_config()) if isinstance(u, XdpUnderTest) else None
    u.gate.put(REC, KEYS, fence=4, first=True)
    u.gate.set_fence(5, u.now() + 1_000_000)
    assert not u.passes(frame(1))  # an element under an older lease
    u.gate.put(REC, KEYS, fence=5)
    assert u.passes(frame(2))
    u.tick(1_000_000)
    assert not u.passes(frame(3))  # the lease's deadline passed
    u.gate.set_fence(0, 0)
    assert u.passes(frame(4))
    if before is not None:
        assert bytes(u.harness.maps.read_config()) == before  # jvpn_config: attach's alone


def test_a_rekey_is_one_replace_per_step_on_both_gates(under_test):
    """Issue 13: put() / standby() take the session's key ring. While it
    holds two epochs, both phases pass; once the old one is dropped, its
    packets do not; the window (one for both epochs), the control floor and
    the slot's generation carry over every replace."""
    from jvpn.keys import KeyRing  # noqa: PLC0415
    from kits import rekey_table as rk  # noqa: PLC0415

    u = under_test
    e1 = SessionKeys(7, bytes(32), bytes(32), rk.NEW, bytes(16), bytes(32), epoch=1)
    ring = KeyRing(KEYS)
    u.gate.put(REC, ring, first=True)
    assert u.passes(rk.old(1)) and not u.passes(rk.new(2))
    u.gate.raise_ctl_floor(7, 3)
    ring = ring.rotated(e1)
    u.gate.put(REC.with_(version=2), ring)
    assert u.passes(rk.new(4)) and u.passes(rk.old(5))
    assert not u.passes(rk.new(5)) and not u.passes(rk.old(4))
    assert not u.passes(rk.new(3, **rk.REKEY)) and u.passes(rk.new(6, **rk.REKEY))
    u.gate.standby(REC.with_(version=3), ring)  # handed over mid-rekey: reattach only
    assert not u.passes(rk.new(7)) and not u.passes(rk.old(7, **rk.REKEY, **rk.ELSEWHERE))
    assert u.passes(rk.old(7, t=abi.MSG_REATTACH_REQ, **rk.ELSEWHERE))
    u.gate.put(REC.with_(version=4), ring.with_confirmed().without_previous(), first=True)
    assert not u.passes(rk.old(8)) and u.passes(rk.new(8))
    assert u.gate.counter_top(7) == 9


def test_the_probe_floor_carries_over_every_replace_on_both_gates(under_test):
    """Issue 14: the probe floor the daemon raised (raise_probe_floor, a
    verified probe) is kept wherever the control floor is: a rekey's
    replace, a standby, a put as new on this gateway (a restart over the
    pinned maps); it never goes down, and it is not the control floor."""
    from jvpn.keys import KeyRing  # noqa: PLC0415
    from kits import probe_table as pt  # noqa: PLC0415
    from kits import rekey_table as rk  # noqa: PLC0415

    u = under_test
    e1 = SessionKeys(7, bytes(32), bytes(32), rk.NEW, bytes(16), bytes(32), epoch=1)
    ring = KeyRing(KEYS)
    u.gate.put(REC, ring, first=True)
    u.gate.raise_probe_floor(7, 5)
    assert not u.passes(rk.old(5, **pt.PROBE)) and u.passes(rk.old(4, t=abi.MSG_REATTACH_REQ))
    ring = ring.rotated(e1)
    u.gate.put(REC.with_(version=2), ring)  # a rekey's commit
    assert not u.passes(rk.new(5, **pt.PROBE)) and u.passes(rk.new(6, **pt.PROBE))
    u.gate.standby(REC.with_(version=3), ring)
    u.gate.put(REC.with_(version=4), ring, first=True)  # ours again (a restart, a handover)
    u.gate.raise_probe_floor(7, 3)  # never lowered
    assert not u.passes(rk.new(5, **pt.PROBE, **rk.ELSEWHERE)) and u.passes(rk.new(7, **pt.PROBE))
