"""The XDP gate and path probes (issue 14), through BPF_PROG_TEST_RUN and the
model in lockstep: the table of tests/kits/probe_table.py (PATH_PROBE gated
as authenticated control in every live state, drop_state for a standby's
element, the tag, ctl_floor, the key phase; PATH_PROBE_REPLY drop_bad_type),
then the buckets a probe flood from a key holder spends: the session's
control bucket, shared with REATTACH_REQ, and no more."""

from __future__ import annotations

import pytest

from jvpn.gate import abi
from jvpn.gate.config import GateConfig
from kits import probe_table as pt
from kits import rekey_table as rk
from kits.xdp_harness import Gate
from kits.xdp_lockstep import UNLIMITED, fresh

pytestmark = pytest.mark.kernel


@pytest.fixture(scope="module")
def gate():
    g = Gate(GateConfig(**UNLIMITED))
    yield g
    g.close()


@pytest.fixture
def both(gate):
    return fresh(gate, GateConfig(**UNLIMITED))


@pytest.mark.parametrize("name,steps", pt.CASES, ids=[c[0] for c in pt.CASES])
def test_probe_table_in_the_kernel_and_the_model(both, name, steps):
    rk.play(name, steps, both)
    assert both.same_runtime(), name


def test_a_probe_flood_spends_the_sessions_control_bucket_only(gate):
    """A key holder flooding probes (from any address) gets at most the
    session's control bucket through, and that bucket is the one its
    reattach requests use: the flood cannot take more than the session's
    own control budget, nor any other session's (the next session's probe
    passes)."""
    both = fresh(gate, GateConfig(session_control_pps=2, session_control_burst=2,
                                   authed_control_pps=0, global_control_pps=0))
    rk.play("setup", [rk.put("epoch0")], both)
    verdicts = [both.verdict(rk.old(c, **pt.PROBE, **rk.ELSEWHERE)) for c in range(1, 21)]
    assert verdicts == [abi.R_PASS_CONTROL] * 2 + [abi.R_DROP_RATE_SESSION] * 18
    assert both.verdict(rk.old(21, t=abi.MSG_REATTACH_REQ)) == abi.R_DROP_RATE_SESSION
    gate.tick(1_000_000_000)
    assert both.verdict(rk.old(22, t=abi.MSG_REATTACH_REQ, **rk.ELSEWHERE)) == abi.R_PASS_CONTROL
    assert both.verdict(rk.old(23, **pt.PROBE)) == abi.R_PASS_CONTROL
    assert both.same_runtime()


def test_a_forged_probe_flood_spends_no_bucket(gate):
    """Forgeries die at the tag, before any bucket: the genuine client's
    probe still passes after a thousand of them."""
    both = fresh(gate, GateConfig(session_control_pps=1, session_control_burst=1,
                                   authed_control_pps=1, authed_control_burst=1,
                                   global_control_pps=0))
    rk.play("setup", [rk.put("epoch0")], both)
    for c in range(1, 1001):
        assert both.verdict(rk.old(c, **pt.PROBE, key=bytes(range(40, 56)),
                                   **rk.ELSEWHERE)) == abi.R_DROP_BAD_TAG
    assert both.verdict(rk.old(1001, **pt.PROBE)) == abi.R_PASS_CONTROL
