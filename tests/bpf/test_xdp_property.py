"""Property test: random packet sequences (random counters, sources, keys,
types and clock steps) go to the kernel program and to the Python model; the
verdicts, the per-session runtime state, the per-source and global buckets,
the counters and the events must be identical."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jvpn.gate import abi
from jvpn.gate.config import GateConfig
from jvpn.gate.model import Model
from kits.xdp_harness import CLIENT, CLIENT_PORT, KEY, Gate, frame, session

pytestmark = pytest.mark.kernel

# Tight limits so that every rate-limit path is exercised.
CONFIG = GateConfig(session_pps=2000, session_burst_packets=5, session_bytes_per_sec=200_000,
                    session_burst_bytes=2_000, source_control_pps=50, source_control_burst=3,
                    global_control_pps=100, global_control_burst=4, events_per_sec=100,
                    events_burst=3)
# Elements as the daemon writes them: each names a runtime slot and a
# generation; 8's window starts above a previous owner's floor.
SESSIONS = {7: session(rt_slot=0, rt_gen=1),
            8: session(addr="2001:db8::10", rt_slot=1, rt_gen=2, replay_floor=150),
            11: session(state=abi.STATE_DEGRADED, rt_slot=2, rt_gen=3)}
SOURCES = [(CLIENT, CLIENT_PORT), (CLIENT, 6666), ("203.0.113.5", CLIENT_PORT),
           ("2001:db8::10", CLIENT_PORT), ("2001:db8::11", 1)]
BIG = [2**40, abi.reject_after() - 1, abi.reject_after(), 2**64 - 1]

counters = st.one_of(st.integers(0, 300), st.integers(0, 20_000), st.sampled_from(BIG))
packets = st.tuples(
    st.sampled_from([abi.MSG_DATA] * 4 + [abi.MSG_KEEPALIVE, abi.MSG_REATTACH_REQ,
                                          abi.MSG_PATH_RESPONSE, abi.MSG_HANDSHAKE_INIT, 3]),
    st.sampled_from([7, 7, 7, 8, 11, 0xBAD]),
    counters,
    st.sampled_from(SOURCES),
    st.sampled_from([KEY] * 5 + [bytes(16)]),
    st.integers(0, 3_000),                      # payload length
    st.sampled_from([0, 0, 0, 1_000, 2_000_000, 50_000_000, 2_000_000_000]),  # clock step
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
    return rt, src, (glob.control_tat, glob.event_tat)


def _model_state(m: Model):
    rt = {sid: bytes(r)[8:] for sid in SESSIONS if (r := m.runtime_of(sid)) is not None}
    src = {(fam, words): v.tat for (fam, words), v in m.sources.items()}
    return rt, src, (m.glob.control_tat, m.glob.event_tat)


@settings(max_examples=80, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(seq=st.lists(packets, min_size=1, max_size=40))
def test_kernel_and_model_agree(gate, seq):
    gate.reset_runtime()
    base = gate.counters()
    model = Model(config=abi.Config.from_buffer_copy(bytes(gate.config)), sessions=dict(SESSIONS),
                  max_sessions=gate.max_sessions)
    for t, sid, counter, (src, sport), key, plen, step in seq:
        if t == abi.MSG_HANDSHAKE_INIT:
            sid = 0
        pkt = frame(counter, sid=sid, key=key, src=src, sport=sport, t=t, payload=b"x" * plen)
        gate.tick(step)
        want = model.run(pkt, gate.now)
        _action, got = gate.run(pkt)
        assert got == want, f"packet {t=} {sid=} {counter=} {src}:{sport}"
    assert _kernel_state(gate) == _model_state(model)
    deltas = [(a - b, c - d) for (a, c), (b, d) in zip(gate.counters(), base, strict=False)]
    assert deltas == [tuple(c) for c in model.counters]
    events = [bytes(e) for e in gate.prog.drain_events()]
    assert events == [bytes(e) for e in model.events]
