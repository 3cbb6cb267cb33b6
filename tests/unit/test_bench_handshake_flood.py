"""`bench handshake`'s legitimate client under the flood (k18flood): each
try is one legitimate client handshaking once, as jvpn's client does. The
bug: every try came from one address, so the bench's client alone went
over the gate's budget per source (20/s, burst 10) by the sixth handshake
and waited its back-off (2-4 s) -- the budget, not the flood, made the
slow tries. And the gate's verdict on each of its initiations is named."""

from __future__ import annotations

from jvpn.bench.handshake import (
    DEFAULT_THRESHOLD,
    Rig,
    TracedGate,
    is_legit,
    legit_source,
    under_flood,
)
from jvpn.gate import abi
from jvpn.gate.userspace import UserspaceGate
from jvpn.wire import Header

TRIES = 12  # 24 initiations within a second: over one source's burst of 10


def test_a_dozen_tries_under_a_small_flood_all_complete_within_a_second(tmp_path):
    rig = Rig(tmp_path, 1, DEFAULT_THRESHOLD, gate=UserspaceGate())
    try:
        out = under_flood(rig, pps=200, tries=TRIES)  # cookies on: two initiations a try
        source_drops = rig.gw.gate.read_counters()["drop_rate_source"]["packets"]
    finally:
        rig.close()
    assert out["not_completed"] == 0 and out["max"] < 1_000, out["legit_ms"]
    assert source_drops == 0


def test_each_try_comes_from_its_own_legitimate_source():
    sources = [legit_source(i) for i in range(TRIES)]
    assert len(set(sources)) == TRIES and all(is_legit(s) for s in sources)
    assert not is_legit(("198.18.0.1", 1024))  # the throughput runs' sources
    assert not is_legit(("203.0.113.7", 40000))


def test_the_traced_gate_names_its_verdict_on_a_legitimate_source():
    gate = TracedGate(is_legit, clock_ns=lambda: 10**12)  # one instant: no refill
    init = Header(type=abi.MSG_HANDSHAKE_INIT, session_id=0, counter=0).pack()
    msgs = [init + bytes([i]) * 64 for i in range(11)]
    passed = [gate.admit(m, legit_source(0)) for m in msgs]
    assert passed == [True] * 10 + [False]  # the source's burst, then its budget
    assert [gate.verdicts[m] for m in msgs] == ["pass_handshake"] * 10 + ["drop_rate_source"]
    gate.admit(init + bytes(64), ("192.0.2.9", 999))  # a stranger: not traced
    assert len(gate.verdicts) == 11
