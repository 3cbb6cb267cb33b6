"""Review D, finding 1: PATH_PROBEs spent the gateway-wide authenticated
budget (2 000/s), shared with every session's REATTACH_REQ, PATH_RESPONSE,
REKEY_INIT and TERMINATE. Thousands of multi-homed clients probing once a
second (no attacker), or a man-on-the-side's copies of each fresh probe
before the daemon raised probe_floor, took it all: other sessions'
reattaches died as drop_rate_authed. Probes now spend a gateway-wide bucket
of their own (jvpn_global.probe_tat, GateConfig.global_probe_pps). The
model, with the default GateConfig; tests/bpf/test_xdp_probes.py has the
kernel in lockstep."""
import random

from jvpn.gate import abi
from jvpn.gate.config import GateConfig
from jvpn.gate.model import Model
from kits import probe_table as pt
from kits.xdp_harness import frame, session

NS = 1_000_000_000


def _model(sids) -> Model:
    m = Model(config=GateConfig().to_abi())  # the defaults
    for sid in sids:
        m.sessions[sid] = session()
        m.sessions[sid].rt_slot, m.sessions[sid].rt_gen = sid % 60000, 1
    return m


def _reattach(sid: int, counter: int) -> bytes:
    return frame(counter, sid=sid, t=abi.MSG_REATTACH_REQ, src="198.51.100.7", sport=6000,
                 payload=b"r" * 100)


def test_copies_of_fresh_probes_do_not_drain_the_authed_budget():
    """A man-on-the-side copies each fresh probe it sees (before the daemon
    verified it and raised probe_floor): the copies pass the gate up to the
    session's probe bucket, but spend only probe buckets."""
    victim, n = 100_000, 220
    m = _model([*range(1, n + 1), victim])
    for sid in range(1, n + 1):
        p = frame(5, sid=sid, **pt.PROBE)
        for _copy in range(10):
            m.run(p, NS)
    for sid in range(1, n + 1):
        m.sessions[sid].probe_floor = 5  # the daemon verified each: copies die from here on
    assert m.run(_reattach(victim, 9), NS) == abi.R_PASS_CONTROL


def _probing_gateway(n: int, secs: int = 3) -> tuple[int, int]:
    """``n`` sessions probing once a second (random phase), 50 others each
    sending a reattach request a second: (reattaches passed, tried)."""
    rnd = random.Random(1)
    victims = range(100_000, 100_050)
    m = _model([*range(1, n + 1), *victims])
    phase = {sid: rnd.randrange(NS) for sid in range(1, n + 1)}
    ev = []
    for sec in range(1, secs + 1):
        ev += [(sec * NS + phase[s], "probe", s, 10 * sec) for s in range(1, n + 1)]
        ev += [(sec * NS + rnd.randrange(NS), "req", v, 10 * sec + 1) for v in victims]
    ok = tried = 0
    for t, kind, sid, c in sorted(ev):
        if kind == "probe":
            m.run(frame(c, sid=sid, **pt.PROBE), t)
            m.sessions[sid].probe_floor = c  # the daemon verified it
        else:
            tried += 1
            ok += m.run(_reattach(sid, c), t) == abi.R_PASS_CONTROL
    return ok, tried


def test_other_sessions_probes_do_not_starve_a_reattach():
    """4 000 probing sessions took ~47% of the victims' reattaches before."""
    ok, tried = _probing_gateway(4000)
    assert ok == tried, f"{tried - ok}/{tried} reattach requests dropped"
