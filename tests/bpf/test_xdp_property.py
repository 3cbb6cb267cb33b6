"""Property test: random packet sequences (random counters, sources, keys,
key phases, types and clock steps) go to the kernel program and to the Python model; the
verdicts, the per-session runtime state, the per-source and global buckets,
the counters and the events must be identical. The second test wraps the
messages the way an attacker may (issue 10 item 12): VLAN stacks of 0..4
tags (802.1Q and 802.1AD, VID 0 and others), IPv6 extension chains of 0..5
headers (options, routing, first and later fragments), IPv4 fragments and
options, frames cut short anywhere, and UDP source port 0."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jvpn.gate import abi
from jvpn.gate.config import GateConfig
from jvpn.gate.model import Model
from kits.stacks import DST, FIRST_FRAG, HOP, LATER_FRAG, RT, VLAN_AD, VLAN_Q, jvpn_frame
from kits.xdp_harness import CLIENT, CLIENT_PORT, KEY, Gate, frame, session

pytestmark = pytest.mark.kernel

# Tight limits so that every rate-limit path is exercised.
CONFIG = GateConfig(session_pps=2000, session_burst_packets=5, session_bytes_per_sec=200_000,
                    session_burst_bytes=2_000, source_control_pps=50, source_control_burst=3,
                    global_control_pps=100, global_control_burst=4, events_per_sec=100,
                    events_burst=3, session_control_pps=40, session_control_burst=2,
                    authed_control_pps=60, authed_control_burst=3)
# Elements as the daemon writes them: each names a runtime slot and a
# generation; 8's window starts above a previous owner's floor.
# 12 and 13 are a session in a rekey (issue 13): during the overlap (both key
# phases) and after it (phase 1's key only).
KEY1 = bytes(range(100, 116))
PHASE1 = abi.FLAG_KEY_PHASE
SESSIONS = {7: session(rt_slot=0, rt_gen=1),
            8: session(addr="2001:db8::10", rt_slot=1, rt_gen=2, replay_floor=150),
            11: session(state=abi.STATE_DEGRADED, rt_slot=2, rt_gen=3),
            12: session(key1=KEY1, rt_slot=3, rt_gen=4),
            13: session(key=None, key1=KEY1, rt_slot=4, rt_gen=5)}
SOURCES = [(CLIENT, CLIENT_PORT), (CLIENT, 6666), ("203.0.113.5", CLIENT_PORT),
           ("2001:db8::10", CLIENT_PORT), ("2001:db8::11", 1), ("203.0.113.6", 0)]
BIG = [2**40, abi.reject_after() - 1, abi.reject_after(), 2**64 - 1]

counters = st.one_of(st.integers(0, 300), st.integers(0, 20_000), st.sampled_from(BIG))
packets = st.tuples(
    st.sampled_from([abi.MSG_DATA] * 4 + [abi.MSG_KEEPALIVE, abi.MSG_REATTACH_REQ,
                                          abi.MSG_PATH_RESPONSE, abi.MSG_HANDSHAKE_INIT, 3,
                                          abi.MSG_REKEY_INIT, abi.MSG_PATH_PROBE,
                                          abi.MSG_PATH_PROBE_REPLY]),
    st.sampled_from([7, 7, 7, 8, 11, 12, 12, 13, 0xBAD]),
    counters,
    st.sampled_from(SOURCES),
    # (header key, flags): mostly right, sometimes a wrong key or phase
    st.sampled_from([(KEY, 0)] * 4 + [(KEY1, PHASE1)] * 2 + [(bytes(16), 0), (KEY, PHASE1),
                                                            (KEY1, 0)]),
    st.integers(0, 3_000),                      # payload length
    st.sampled_from([0, 0, 0, 1_000, 2_000_000, 50_000_000, 2_000_000_000]),  # clock step
)


# How a message is wrapped: (VLAN tags, IPv6 chain, IPv4 fragment offset
# field, IPv4 options, cut the IP packet after this many bytes or not).
wrappings = st.tuples(
    st.lists(st.tuples(st.sampled_from([VLAN_Q, VLAN_AD]), st.sampled_from([0, 0, 1, 100, 4095])),
             max_size=4),
    st.lists(st.sampled_from([HOP, RT, DST, FIRST_FRAG, LATER_FRAG]), max_size=5),
    st.sampled_from([0, 0, 0, 0x2000, 1, 0x2001, 0x4000]),
    st.sampled_from([b"", b"", b"\x01" * 4, b"\x01" * 40]),
    st.one_of(st.none(), st.none(), st.integers(0, 120)),
)


@pytest.fixture(scope="module")
def gate():
    g = Gate(CONFIG)
    for sid, s in SESSIONS.items():
        g.maps.put_session(sid, s)
    yield g
    g.close()


def _kernel_state(g: Gate):
    rt = {sid: bytes(r)[8:] for sid in SESSIONS if (r := g.maps.get_runtime(sid)) is not None}
    src = {(k.family, tuple(k.addr)): v.tat for k, v in g.maps.sources.items()}
    glob = g.maps.glob.lookup(__import__("ctypes").c_int(0))
    return rt, src, (glob.control_tat, glob.event_tat, glob.authed_control_tat)


def _model_state(m: Model):
    rt = {sid: bytes(r)[8:] for sid in SESSIONS if (r := m.runtime_of(sid)) is not None}
    src = {(fam, words): v.tat for (fam, words), v in m.sources.items()}
    return rt, src, (m.glob.control_tat, m.glob.event_tat, m.glob.authed_control_tat)


def _message_frame(packet, wrapping=None) -> bytes:
    t, sid, counter, (src, sport), (key, flags), plen, _step = packet
    if t == abi.MSG_HANDSHAKE_INIT:
        sid = 0
    pkt = frame(counter, sid=sid, key=key, src=src, sport=sport, t=t, payload=b"x" * plen,
                flags=flags)
    if wrapping is None:
        return pkt
    tags, chain, frag_off, options, cut = wrapping
    v6 = ":" in src
    return jvpn_frame(pkt[62 if v6 else 42:], src=src, sport=sport, tags=tags,
                      chain=chain if v6 else (), frag_off=0 if v6 else frag_off,
                      options=b"" if v6 else options, cut=cut)


def _may_reach_our_socket(packet, wrapping) -> bool:
    """Whether the kernel could deliver this frame (alone or reassembled with
    later fragments) to a socket on our port: it is whole, and it is not a
    later fragment (those are checked through their first fragment)."""
    if wrapping is None:
        return True
    _tags, chain, frag_off, _options, cut = wrapping
    if cut is not None:
        return False
    if ":" in packet[3][0]:
        return LATER_FRAG not in chain
    return not frag_off & 0x1FFF


def _check_gate_covers(packet, wrapping, reason: int) -> None:
    """Issue 10 items 12 and 1: nothing that may reach the daemon passes
    unchecked, and nothing from source port 0 passes at all."""
    if _may_reach_our_socket(packet, wrapping):
        assert reason != abi.R_PASS_OTHER, f"passed unchecked: {packet[:4]} {wrapping}"
    if packet[3][1] == 0:
        assert not abi.is_pass(reason) or reason == abi.R_PASS_OTHER


def _run_sequence(gate: Gate, seq) -> None:
    """Every (packet, wrapping) to both; then the whole state must match."""
    gate.reset_runtime()
    base = gate.counters()
    model = Model(config=abi.Config.from_buffer_copy(bytes(gate.config)), sessions=dict(SESSIONS),
                  max_sessions=gate.max_sessions)
    for packet, wrapping in seq:
        pkt = _message_frame(packet, wrapping)
        gate.tick(packet[-1])
        want = model.run(pkt, gate.now)
        _action, got = gate.run(pkt)
        assert got == want, f"packet {packet[:4]} wrapped {wrapping}: {pkt.hex()}"
        _check_gate_covers(packet, wrapping, got)
    assert _kernel_state(gate) == _model_state(model)
    deltas = [(a - b, c - d) for (a, c), (b, d) in zip(gate.counters(), base, strict=False)]
    assert deltas == [tuple(c) for c in model.counters]
    events = [bytes(e) for e in gate.prog.drain_events()]
    assert events == [bytes(e) for e in model.events]


_SETTINGS = settings(max_examples=80, deadline=None,
                     suppress_health_check=[HealthCheck.function_scoped_fixture,
                                            HealthCheck.too_slow])


@_SETTINGS
@given(seq=st.lists(packets, min_size=1, max_size=40))
def test_kernel_and_model_agree(gate, seq):
    _run_sequence(gate, [(p, None) for p in seq])


@_SETTINGS
@given(seq=st.lists(st.tuples(packets, wrappings), min_size=1, max_size=30))
def test_kernel_and_model_agree_on_stacks(gate, seq):
    _run_sequence(gate, seq)
