"""The reference model alone (no kernel): replay window, GCRA, verdict order."""

import pytest

from jvpn import wire
from jvpn.gate import abi
from jvpn.gate.config import GateConfig
from jvpn.gate.model import Model, gcra_next
from jvpn.lab import frames
from jvpn.replay import ReplayWindow, replay_accept
from kits.vectors import replay_cases

KEY = bytes(range(16))
CLIENT, GW, PORT = "192.0.2.10", "192.0.2.1", abi.DEFAULT_PORT


@pytest.mark.parametrize("name,steps", replay_cases(), ids=[c[0] for c in replay_cases()])
def test_replay_window_wireguard_cases(name, steps):
    rt = abi.SessionRt()
    got = [replay_accept(rt, c) for c, _ in steps]
    assert got == [ok for _, ok in steps]


@pytest.mark.parametrize("bits", [128, 256, 2048])
def test_replay_window_other_sizes(bits):
    rt = abi.session_rt_type(bits)()
    for _, steps in replay_cases(bits):
        rt = abi.session_rt_type(bits)()
        assert [replay_accept(rt, c, bits) for c, _ in steps] == [ok for _, ok in steps]


def test_gcra_burst_then_rate():
    tat, allowed = 0, 0
    for _ in range(20):  # interval 10, burst tolerance 40 -> 5 back to back
        nxt = gcra_next(tat, 1000, 10, 40, 1)
        if nxt:
            tat, allowed = nxt, allowed + 1
    assert allowed == 5
    assert gcra_next(tat, 1010, 10, 40, 1)  # one interval later: one more


def _model(**kw) -> Model:
    m = Model(config=GateConfig(**kw).to_abi())
    m.sessions[7] = abi.Session(tag_key=wire.key_words(KEY), key_phases=abi.key_phase_bit(0),
                                state=abi.STATE_ATTACHED,
                                bind_family=abi.AF_INET, bind_addr=abi.addr_words(CLIENT),
                                bind_port=abi.port_word(5555))
    return m


def _data(counter, sid=7, key=KEY, src=CLIENT, sport=5555, t=abi.MSG_DATA):
    msg = wire.message(wire.Header(type=t, session_id=sid, counter=counter), key, b"p" * 20)
    return frames.udp_frame(src, sport, GW, PORT, msg)


def test_verdict_order_on_model():
    m = _model()
    assert m.run(_data(1), 0) == abi.R_PASS_DATA
    assert m.run(_data(1), 0) == abi.R_DROP_REPLAY
    assert m.run(_data(2, sid=8), 0) == abi.R_DROP_UNKNOWN_SESSION
    assert m.run(_data(2, key=bytes(16)), 0) == abi.R_DROP_BAD_TAG
    assert m.run(_data(2, sport=6666), 0) == abi.R_DROP_WRONG_BINDING
    # a reattach from a new address is not binding-checked
    assert m.run(_data(2, sport=6666, t=abi.MSG_REATTACH_REQ), 0) == abi.R_PASS_CONTROL
    assert m.run(frames.tcp_frame(CLIENT, GW), 0) == abi.R_PASS_OTHER
    assert m.counters[abi.R_PASS_DATA] == [1, len(_data(1))]


def test_forged_tag_does_not_move_the_window():
    m = _model()
    m.run(_data(5), 0)
    before = bytes(m.runtime_of(7))
    assert m.run(_data(10_000, key=bytes(16)), 0) == abi.R_DROP_BAD_TAG
    assert bytes(m.runtime_of(7)) == before


@pytest.mark.parametrize("name,steps", replay_cases(), ids=[c[0] for c in replay_cases()])
def test_userspace_replay_window_same_answers(name, steps):
    w = ReplayWindow()
    assert [w.accept(c) for c, _ in steps] == [ok for _, ok in steps]


def test_runtime_slots_reuse_late_and_renew_generations():
    from jvpn.gate.element import RuntimeSlots

    gens = iter(range(100, 200))
    slots = RuntimeSlots(3, {9: abi.Session(rt_slot=1, rt_gen=5)},
                         new_generation=lambda: next(gens))
    first = slots.place(7, None, first=True, floor=40)
    assert first == dict(rt_slot=2, rt_gen=100, replay_floor=40)  # never-used slots first
    again = slots.place(7, abi.Session(**first), first=False, floor=10)
    assert again == dict(rt_slot=2, rt_gen=100, replay_floor=40)  # same generation: same window
    assert slots.place(7, abi.Session(**first), first=True, floor=10)["rt_gen"] == 101
    assert slots.place(8, None, first=False, floor=0)["rt_slot"] == 0
    slots.free(9)
    slots.free(8)
    assert slots.place(10, None, first=True, floor=0)["rt_slot"] == 1  # least recently freed
    assert slots.place(11, None, first=True, floor=0)["rt_slot"] == 0
    with pytest.raises(Exception, match="no runtime slot"):
        slots.place(12, None, first=True, floor=0)
