"""Adversarial review k16r1: the probe bucket split (review E L1), kernel
and model in lockstep. Fails on the reviewed code."""

from __future__ import annotations

import pytest

from jvpn.gate import abi
from jvpn.gate.config import GateConfig
from kits import probe_table as pt
from kits import rekey_table as rk
from kits.xdp_lockstep import fresh

pytestmark = pytest.mark.kernel


def test_one_session_passes_no_more_probes_than_its_probe_burst(gate):
    """docs/xdp.md: the session's own probe bucket, burst
    `session_probe_burst`. With probe_dup_tat a second bucket of the same
    size, a key holder (or anyone with captured probe headers) gets twice
    the burst and twice the rate through the gate: fresh counters spend
    probe_tat, then copies of the highest spend probe_dup_tat. Each passed
    probe costs the daemon a tag check and an HMAC, and spends the
    gateway-wide probe budget twice as fast per session (half as many
    sessions drain `global_probe_pps` and every client's probes die as
    drop_rate_global)."""
    burst = 4
    both = fresh(gate, GateConfig(session_probe_pps=1, session_probe_burst=burst,
                                   authed_control_pps=0, global_control_pps=0))
    rk.play("setup", [rk.put("epoch0")], both)
    passed = 0
    for c in range(1, 2 * burst + 1):  # fresh counters: probe_tat
        passed += both.verdict(rk.old(c, **pt.PROBE)) == abi.R_PASS_CONTROL
    top = both.gate.maps.get_runtime(rk.SID).probe_top
    for i in range(2 * burst):  # copies of the top one, junk bodies: probe_dup_tat
        probe = rk.old(top, t=abi.MSG_PATH_PROBE, payload=bytes([i]) * 40, **rk.ELSEWHERE)
        passed += both.verdict(probe) == abi.R_PASS_CONTROL
    assert both.same_runtime()
    assert passed <= burst, f"{passed} probes of one session passed a burst of {burst}"
