"""The XDP gate and path probes (issue 14), through BPF_PROG_TEST_RUN and the
model in lockstep: the table of tests/kits/probe_table.py (PATH_PROBE gated
as authenticated control in every live state, drop_state for a standby's
element, the tag, probe_floor and the window but not ctl_floor, the key phase;
PATH_PROBE_REPLY drop_bad_type),
then the buckets a probe flood from a key holder spends: the session's own
probe bucket, then the gateway-wide probe bucket, never the control bucket
its REATTACH_REQ uses nor the gateway-wide authenticated budget other
sessions' reattaches use (review D)."""

from __future__ import annotations

import ctypes

import pytest

from jvpn.gate import abi
from jvpn.gate.config import GateConfig
from kits import probe_table as pt
from kits import rekey_table as rk
from kits.xdp_lockstep import UNLIMITED, fresh

pytestmark = pytest.mark.kernel


@pytest.fixture
def both(gate):
    return fresh(gate, GateConfig(**UNLIMITED))


@pytest.mark.parametrize("name,steps", pt.CASES, ids=[c[0] for c in pt.CASES])
def test_probe_table_in_the_kernel_and_the_model(both, name, steps):
    rk.play(name, steps, both)
    assert both.same_runtime(), name


def test_a_probe_below_ctl_floor_passes_and_leaves_the_floor_and_window(gate):
    """A probe overtaken by heartbeats of a faster path (ctl_floor above
    it) passes while fresh; passing moves neither ctl_floor nor the data
    window (the daemon records probes in its own window, issue 14)."""
    both = fresh(gate, GateConfig(**UNLIMITED))
    rk.play("setup", [rk.put("epoch0"), ("floor", 40), (rk.old(50), abi.R_PASS_DATA)], both)
    before = both.element().ctl_floor
    for c in (12, 30, 40):
        assert both.verdict(rk.old(c, **pt.PROBE, **rk.ELSEWHERE)) == abi.R_PASS_CONTROL
    assert both.element().ctl_floor == before == 40
    assert both.verdict(rk.old(39, t=abi.MSG_REATTACH_REQ)) == abi.R_DROP_REPLAY
    assert both.verdict(rk.old(30)) == abi.R_PASS_DATA  # the probe consumed nothing
    assert both.verdict(rk.old(50, **pt.PROBE)) == abi.R_DROP_REPLAY  # data consumed it
    assert both.same_runtime()


def test_replays_of_a_verified_probe_die_before_the_probe_bucket(gate):
    """A man-on-the-side captured one genuine probe and replays it from
    anywhere while the session is idle (its counter stays fresh in the
    window). Once the daemon verified the probe (probe_floor raised), 50
    replays die as replays, before the session's probe bucket: the
    client's next probe still passes (they used to spend the bucket and
    the client's probes died as rate_session)."""
    both = fresh(gate, GateConfig(session_probe_pps=10, session_probe_burst=10,
                                   source_control_pps=0, authed_control_pps=0,
                                   global_control_pps=0))
    rk.play("setup", [rk.put("epoch0")], both)
    assert both.verdict(rk.old(1, **pt.PROBE)) == abi.R_PASS_CONTROL
    rk.play("verified", [("probe_floor", 1)], both)  # the daemon's raise
    for i in range(50):
        src = dict(src=f"203.0.113.{i + 1}", sport=4000 + i)
        assert both.verdict(rk.old(1, **pt.PROBE, **src)) == abi.R_DROP_REPLAY
    assert both.verdict(rk.old(2, **pt.PROBE, **rk.ELSEWHERE)) == abi.R_PASS_CONTROL
    assert both.element().probe_floor == 1 and both.element().ctl_floor == 0
    assert both.same_runtime()


def test_junk_body_replays_of_one_paths_probe_header_leave_another_paths_probe(gate):
    """Review E L1: an attacker on path A drops the client's probe and
    replays its header with junk bodies (the tag does not cover the body,
    and the gate cannot consume the counter: a copy must not kill the
    genuine probe). The copies used to spend the session's one probe
    bucket, so the client's next probe, on path B, died as rate_session.
    Each counter now spends probe_tat once (probe_top); copies at or below
    it spend probe_dup_tat. Kernel and model in lockstep."""
    both = fresh(gate, GateConfig(session_probe_pps=1, session_probe_burst=2,
                                   authed_control_pps=0, global_control_pps=0))
    rk.play("setup", [rk.put("epoch0")], both)
    path_a = dict(src="203.0.113.66", sport=4444)
    verdicts = [both.verdict(rk.old(1, t=abi.MSG_PATH_PROBE, payload=bytes([i]) * 40, **path_a))
                for i in range(30)]
    assert verdicts[0] == abi.R_PASS_CONTROL and verdicts[-1] == abi.R_DROP_RATE_SESSION
    assert both.verdict(rk.old(2, **pt.PROBE, **rk.ELSEWHERE)) == abi.R_PASS_CONTROL  # path B
    assert both.gate.maps.get_runtime(rk.SID).probe_top == 2
    assert both.same_runtime()


def test_one_copy_raced_ahead_does_not_kill_the_genuine_probe(gate):
    """The copy spends probe_tat, the genuine probe (same counter) then
    passes on probe_dup_tat: the gate still consumes no probe counter."""
    both = fresh(gate, GateConfig(session_probe_pps=1, session_probe_burst=1,
                                   authed_control_pps=0, global_control_pps=0))
    rk.play("setup", [rk.put("epoch0")], both)
    assert both.verdict(rk.old(5, t=abi.MSG_PATH_PROBE, payload=b"j" * 40)) == abi.R_PASS_CONTROL
    assert both.verdict(rk.old(5, **pt.PROBE, **rk.ELSEWHERE)) == abi.R_PASS_CONTROL
    assert both.same_runtime()


def test_a_probe_flood_does_not_starve_the_sessions_reattach(gate):
    """A key holder flooding probes (or an on-path attacker replaying a
    fresh probe's copies from a candidate path before the daemon raises
    ctl_floor) gets at most the session's probe bucket through; its
    reattach requests, REKEY_INIT and TERMINATE still have their whole
    control bucket (F6: probes used to spend that bucket and starve them)."""
    both = fresh(gate, GateConfig(session_control_pps=2, session_control_burst=2,
                                   session_probe_pps=3, session_probe_burst=3,
                                   authed_control_pps=0, global_control_pps=0))
    rk.play("setup", [rk.put("epoch0")], both)
    verdicts = [both.verdict(rk.old(c, **pt.PROBE, **rk.ELSEWHERE)) for c in range(1, 21)]
    assert verdicts == [abi.R_PASS_CONTROL] * 3 + [abi.R_DROP_RATE_SESSION] * 17
    assert both.verdict(rk.old(21, t=abi.MSG_REATTACH_REQ)) == abi.R_PASS_CONTROL
    assert both.verdict(rk.old(22, t=abi.MSG_REKEY_INIT)) == abi.R_PASS_CONTROL
    assert both.verdict(rk.old(23, t=abi.MSG_REATTACH_REQ)) == abi.R_DROP_RATE_SESSION
    assert both.verdict(rk.old(24, **pt.PROBE)) == abi.R_DROP_RATE_SESSION
    assert both.same_runtime()


def test_a_reattach_flood_does_not_starve_the_sessions_probes(gate):
    """The other way round: the control bucket spent, probes still pass
    within their own bucket, and both refill with time."""
    both = fresh(gate, GateConfig(session_control_pps=1, session_control_burst=1,
                                   session_probe_pps=1, session_probe_burst=1,
                                   authed_control_pps=0, global_control_pps=0))
    rk.play("setup", [rk.put("epoch0")], both)
    assert both.verdict(rk.old(1, t=abi.MSG_REATTACH_REQ)) == abi.R_PASS_CONTROL
    assert both.verdict(rk.old(2, t=abi.MSG_REATTACH_REQ)) == abi.R_DROP_RATE_SESSION
    assert both.verdict(rk.old(3, **pt.PROBE, **rk.ELSEWHERE)) == abi.R_PASS_CONTROL
    assert both.verdict(rk.old(4, **pt.PROBE)) == abi.R_DROP_RATE_SESSION
    gate.tick(1_000_000_000)
    assert both.verdict(rk.old(5, t=abi.MSG_REATTACH_REQ, **rk.ELSEWHERE)) == abi.R_PASS_CONTROL
    assert both.verdict(rk.old(6, **pt.PROBE)) == abi.R_PASS_CONTROL
    assert both.same_runtime()


def test_the_probe_bucket_is_per_session(gate):
    """One session's probe flood leaves another session's probes alone."""
    both = fresh(gate, GateConfig(session_probe_pps=1, session_probe_burst=1,
                                   authed_control_pps=0, global_control_pps=0))
    rk.play("setup", [rk.put("epoch0")], both)
    assert both.verdict(rk.old(1, **pt.PROBE)) == abi.R_PASS_CONTROL
    assert both.verdict(rk.old(2, **pt.PROBE)) == abi.R_DROP_RATE_SESSION
    assert both.same_runtime()


def test_probes_exhausting_the_gateway_probe_budget_leave_another_sessions_reattach(gate):
    """Review D: every session's probes spent the gateway-wide authenticated
    budget, so thousands of clients probing (or copies of their fresh
    probes) starved other sessions' reattaches (drop_rate_authed). Probes
    now have a gateway-wide bucket of their own (jvpn_global.probe_tat,
    --probe-rate): exhausting it (drop_rate_global, for any session's probe)
    leaves the authenticated budget, here a single token, to session 8's
    REATTACH_REQ. Kernel and model in lockstep."""
    both = fresh(gate, GateConfig(session_probe_pps=0, session_control_pps=0,
                                   authed_control_pps=1, authed_control_burst=1,
                                   global_probe_pps=3, global_probe_burst=3,
                                   global_control_pps=0))
    rk.play("setup", [rk.put("epoch0")], both)
    other = rk.element("epoch0", rt_slot=8, rt_gen=1)
    gate.maps.put_session(8, other)
    both.model.sessions[8] = abi.Session.from_buffer_copy(other)
    verdicts = [both.verdict(rk.old(c, **pt.PROBE, **rk.ELSEWHERE)) for c in range(1, 11)]
    assert verdicts == [abi.R_PASS_CONTROL] * 3 + [abi.R_DROP_RATE_GLOBAL] * 7
    assert both.verdict(rk.old(1, sid=8, **pt.PROBE)) == abi.R_DROP_RATE_GLOBAL
    assert both.verdict(rk.old(2, sid=8, t=abi.MSG_REATTACH_REQ,
                               **rk.ELSEWHERE)) == abi.R_PASS_CONTROL
    assert both.verdict(rk.old(3, sid=8, t=abi.MSG_REATTACH_REQ)) == abi.R_DROP_RATE_AUTHED
    g = gate.maps.glob.lookup(ctypes.c_int(0))
    assert (g.authed_control_tat, g.probe_tat) == (both.model.glob.authed_control_tat,
                                                   both.model.glob.probe_tat)
    assert both.same_runtime()


def test_a_forged_probe_flood_spends_no_bucket(gate):
    """Forgeries die at the tag, before any bucket: the genuine client's
    probe still passes after a thousand of them."""
    both = fresh(gate, GateConfig(session_control_pps=1, session_control_burst=1,
                                   authed_control_pps=1, authed_control_burst=1,
                                   global_probe_pps=1, global_probe_burst=1,
                                   global_control_pps=0))
    rk.play("setup", [rk.put("epoch0")], both)
    for c in range(1, 1001):
        assert both.verdict(rk.old(c, **pt.PROBE, key=bytes(range(40, 56)),
                                   **rk.ELSEWHERE)) == abi.R_DROP_BAD_TAG
    assert both.verdict(rk.old(1001, **pt.PROBE)) == abi.R_PASS_CONTROL


@pytest.mark.parametrize("name,kind,ctype,older,grew", [
    ("session_rt", "array", "__u32", 80 + 8 * abi.replay_words(abi.REPLAY_BITS), 24),  # probe_tat
    # probe_top, probe_dup_tat (review E L1)
    ("session_rt", "array", "__u32", 88 + 8 * abi.replay_words(abi.REPLAY_BITS), 16),
    ("config", "array", "int", 128, 32),  # session_probe_*, then global_probe_* (review D)
    ("config", "array", "int", 144, 16),  # global_probe_interval_ns, global_probe_burst_ns
    ("global", "array", "int", 24, 8),  # probe_tat: the gateway-wide probe bucket (review D)
    ("sessions", "hash", "__u64", 104, 8),  # the element's probe_floor
])
def test_pins_of_the_layout_before_the_probe_bucket_are_refused_by_name(name, kind, ctype,
                                                                        older, grew):
    """The runtime and the config grew a probe bucket, the element a probe
    floor (issue 14): a build loaded over maps pinned by the previous one
    names the map and the sizes (detach, then attach again), not the
    verifier's bare error."""
    import uuid  # noqa: PLC0415
    from pathlib import Path  # noqa: PLC0415

    from jvpn.errors import LoadFailed, NotAttached  # noqa: PLC0415
    from jvpn.gate.attach import unpin  # noqa: PLC0415
    from jvpn.gate.loader import BuildOptions, Program, load_plain  # noqa: PLC0415
    from jvpn.gate.pins import GateMaps  # noqa: PLC0415

    pins = Path("/sys/fs/bpf") / f"jvt-{uuid.uuid4().hex[:11]}"
    pins.mkdir()
    flags = ", BPF_F_NO_PREALLOC" if kind == "hash" else ""
    old = load_plain(f"""
#include <uapi/linux/bpf.h>
struct old_value {{ __u64 w[{older // 8}]; }};  /* the value before issue 14 */
BPF_TABLE_PINNED("{kind}", {ctype}, struct old_value, m, 16, "{pins}/{name}"{flags});
int xdp_main(struct xdp_md *ctx) {{ {ctype} k = 0; return m.lookup(&k) ? XDP_DROP : XDP_PASS; }}
""")[0]
    try:
        with pytest.raises(LoadFailed, match=rf"another layout \({name}: {older}-byte values, "
                                             rf"this build's are {older + grew}\)"):
            Program(pins, BuildOptions(max_sessions=16, max_sources=16))
        # and a daemon or the CLI of this build opening them (an upgrade
        # without detach + attach) refuses them by name too (review r14b #6)
        with pytest.raises(NotAttached, match=rf"another build \({name}: {older}-byte values"):
            GateMaps(pins)
    finally:
        old.cleanup()
        unpin(pins)


def test_one_session_passes_at_most_its_probe_burst_and_one_copy(gate):
    """Review k16r1: probe_dup_tat was a second bucket of the same size, so
    a key holder (or anyone with captured probe headers) got twice the
    burst and twice the rate through the gate: fresh counters spent
    probe_tat, then copies of the highest spent probe_dup_tat. Each passed
    probe costs the daemon a tag check and an HMAC and spends the
    gateway-wide probe budget. Now copies take probe_tat's upper half,
    then one per refill of the whole bucket: the burst + 1 (the one is the
    genuine probe after a copy raced ahead of it, which passes even at a
    burst of 1: ``test_one_copy_raced_ahead_does_not_kill_the_genuine_probe``)."""
    burst = 4
    both = fresh(gate, GateConfig(session_probe_pps=1, session_probe_burst=burst,
                                   authed_control_pps=0, global_control_pps=0))
    rk.play("setup", [rk.put("epoch0")], both)
    passed = 0
    for c in range(1, 2 * burst + 1):  # fresh counters: probe_tat
        passed += both.verdict(rk.old(c, **pt.PROBE)) == abi.R_PASS_CONTROL
    top = both.gate.maps.get_runtime(rk.SID).probe_top
    for i in range(2 * burst):  # copies of the top one, junk bodies
        probe = rk.old(top, t=abi.MSG_PATH_PROBE, payload=bytes([i]) * 40, **rk.ELSEWHERE)
        passed += both.verdict(probe) == abi.R_PASS_CONTROL
    assert both.same_runtime()
    assert passed <= burst + 1, f"{passed} probes of one session passed a burst of {burst}"


def test_copies_and_fresh_probes_together_stay_near_the_probe_rate(gate):
    """Over time too: fresh probes and copies of the highest, each as fast
    as they go, pass at the bucket's rate plus one copy per refill of the
    whole bucket (review k16r1: twice the rate)."""
    pps, burst, seconds = 4, 4, 10
    both = fresh(gate, GateConfig(session_probe_pps=pps, session_probe_burst=burst,
                                   authed_control_pps=0, global_control_pps=0))
    rk.play("setup", [rk.put("epoch0")], both)
    passed, counter = 0, 0
    for _ in range(seconds * 20):  # every 50 ms: two fresh probes, two copies
        for _ in range(2):
            counter += 1
            passed += both.verdict(rk.old(counter, **pt.PROBE)) == abi.R_PASS_CONTROL
            copy = rk.old(counter, t=abi.MSG_PATH_PROBE, payload=b"j" * 40, **rk.ELSEWHERE)
            passed += both.verdict(copy) == abi.R_PASS_CONTROL
        gate.tick(50_000_000)
    assert both.same_runtime()
    most = burst + 1 + seconds * (pps + pps / burst)
    assert passed <= most, f"{passed} probes passed in {seconds} s at {pps}/s"


def test_probes_reordered_behind_a_newer_one_pass(gate):
    """A round of probes on several paths arrives out of order: the lower
    counters, below probe_top, pass on the upper half of the bucket (not
    only on the one copy per refill)."""
    both = fresh(gate, GateConfig(session_probe_pps=10, session_probe_burst=10,
                                   authed_control_pps=0, global_control_pps=0))
    rk.play("setup", [rk.put("epoch0")], both)
    for c in (3, 1, 2, 6, 4, 5):
        assert both.verdict(rk.old(c, **pt.PROBE, **rk.ELSEWHERE)) == abi.R_PASS_CONTROL, c
    assert both.gate.maps.get_runtime(rk.SID).probe_top == 6
    assert both.same_runtime()
