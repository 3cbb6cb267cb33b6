"""The gate during a rekey without a kernel: the table of
tests/kits/rekey_table.py through the model alone (tests/bpf/test_xdp_rekey.py
runs the same table through XDP and the model in lockstep), the element the
daemon writes for a key ring, and the userspace gate fed rings."""

from __future__ import annotations

import pytest

from jvpn import wire
from jvpn.gate import abi
from jvpn.gate.config import GateConfig
from jvpn.gate.element import header_keys, session_element
from jvpn.gate.model import Model
from jvpn.gate.userspace import UserspaceGate
from jvpn.keys import KeyRing, SessionKeys
from jvpn.session import SessionRecord, State, Transport
from kits import rekey_table as rk
from kits.xdp_harness import CLIENT, CLIENT_PORT

UNLIMITED = dict(session_pps=0, session_bytes_per_sec=0, source_control_pps=0,
                 global_control_pps=0)


class ModelOnly:
    def __init__(self):
        self.model = Model(config=GateConfig(**UNLIMITED).to_abi())

    def element(self) -> abi.Session | None:
        return self.model.sessions.get(rk.SID)

    def write(self, element: abi.Session) -> None:
        self.model.sessions[rk.SID] = abi.Session.from_buffer_copy(element)

    def verdict(self, pkt: bytes) -> int:
        return self.model.run(pkt, 1_000_000_000)


@pytest.mark.parametrize("name,steps", rk.CASES, ids=[c[0] for c in rk.CASES])
def test_rekey_table_in_the_model(name, steps):
    rk.play(name, steps, ModelOnly())


def _keys(epoch: int, hdr: bytes) -> SessionKeys:
    return SessionKeys(rk.SID, bytes(32), bytes(32), hdr, bytes([0xAA]) * 16, bytes(32),
                       epoch=epoch)


E0, E1, E2 = _keys(0, rk.OLD), _keys(1, rk.NEW), _keys(2, bytes(range(50, 66)))
UNUSED = bytes([0x5A]) * 16  # the injected filler of a slot no live epoch uses
REC = SessionRecord(session_id=rk.SID, state=State.ATTACHED, version=1, created_ms=0,
                    last_change_ms=0, binding=Transport(CLIENT, CLIENT_PORT))


@pytest.mark.parametrize("keys,slot0,slot1,mask", [
    (E0, rk.OLD, UNUSED, 1),
    (KeyRing(E0), rk.OLD, UNUSED, 1),
    (KeyRing(E0).rotated(E1), rk.OLD, rk.NEW, 3),              # committed, unconfirmed
    (KeyRing(E0).rotated(E1).with_confirmed(), rk.OLD, rk.NEW, 3),
    (KeyRing(E0).rotated(E1).without_previous(), UNUSED, rk.NEW, 2),
    (KeyRing(E1).rotated(E2), E2.hdr_c2s, rk.NEW, 3),          # epoch 2 is phase 0 again
    (KeyRing(E1).rotated(E2).without_previous(), E2.hdr_c2s, UNUSED, 1),
], ids=["keys", "ring-of-one", "overlap", "overlap-confirmed", "after-overlap",
        "second-rekey", "after-second"])
def test_the_element_holds_each_live_epochs_key_in_its_phase_slot(keys, slot0, slot1, mask):
    e = session_element(REC, keys, unused_key=lambda: UNUSED)
    assert tuple(e.tag_key) == wire.key_words(slot0)
    assert tuple(e.tag_key_phase1) == wire.key_words(slot1)
    assert e.key_phases == mask
    assert header_keys(keys, lambda: UNUSED) == dict(
        tag_key=wire.key_words(slot0), tag_key_phase1=wire.key_words(slot1), key_phases=mask)


def test_an_unused_slot_holds_random_bytes_never_the_zero_key():
    """Review R3 F2: the zero key is public; an unused slot holds 16 random
    bytes (a new draw per element), so a torn read pairing its mask bit
    with it checks no tag anyone can compute."""
    ring = KeyRing(E0).rotated(E1).without_previous()
    slots = {tuple(session_element(REC, ring).tag_key) for _ in range(4)}
    assert len(slots) == 4 and (0, 0) not in slots
    assert tuple(session_element(REC, E0).tag_key_phase1) != (0, 0)


def test_the_model_refuses_a_zero_key_slot_whatever_the_mask():
    target = ModelOnly()
    target.write(rk.element("epoch0", rt_slot=rk.SID, rt_gen=1,
                            key_phases=abi.KEY_PHASES_ALL))  # phase 1's slot is zero
    forged = rk.frame(abi.reject_after() - 1, sid=rk.SID, key=bytes(16), flags=rk.PHASE1)
    assert target.verdict(forged) == abi.R_DROP_KEY_PHASE
    assert target.verdict(rk.old(2)) == abi.R_PASS_DATA  # the window did not move


def test_the_userspace_gate_through_a_rekey():
    """put() with the ring at each step (the daemon's writes): old-key data
    passes only while the ring holds the old epoch, the window and control
    floor carry over, the slot and generation stay."""
    gate = UserspaceGate(GateConfig(), clock_ns=lambda: 1_000_000_000_000,
                         new_generation=lambda: 77)
    src = (CLIENT, CLIENT_PORT)

    def admit(frame_bytes: bytes) -> bool:
        return gate.admit(frame_bytes[42:], src)

    ring = KeyRing(E0)
    gate.put(REC, ring, first=True)
    assert admit(rk.old(1)) and not admit(rk.new(2))
    gate.raise_ctl_floor(rk.SID, 3)
    ring = ring.rotated(E1)
    gate.put(REC.with_(version=2), ring)
    element = gate.model.sessions[rk.SID]
    assert (element.rt_gen, element.ctl_floor, element.key_phases) == (77, 3, 3)
    assert admit(rk.new(4)) and admit(rk.old(5))
    assert not admit(rk.new(5)) and not admit(rk.old(4))  # one window for both epochs
    assert not admit(rk.new(3, **rk.REKEY))  # the floor carried over
    gate.put(REC.with_(version=3), ring.with_confirmed().without_previous())
    assert not admit(rk.old(6)) and admit(rk.new(6))
    assert gate.counter_top(rk.SID) == 7
    counts = gate.read_counters()
    assert counts["drop_key_phase"]["packets"] == 2
