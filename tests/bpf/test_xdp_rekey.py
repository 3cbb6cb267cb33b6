"""The XDP gate during a rekey (issue 13), through BPF_PROG_TEST_RUN and the
model in lockstep: the table of tests/kits/rekey_table.py (old-key packets
pass only while the element accepts both phases, a flipped phase flag fails
the tag, the replay window, ctl_floor and binding are the session's across
the replaces, REKEY_INIT is gated as control), then what a drop_key_phase
leaves untouched and the control bucket REKEY_INIT spends."""

from __future__ import annotations

import os

import pytest

from jvpn.gate import abi
from jvpn.gate.config import GateConfig
from kits import rekey_table as rk
from kits.xdp_lockstep import UNLIMITED, fresh

pytestmark = pytest.mark.kernel

@pytest.fixture
def both(gate):
    return fresh(gate, GateConfig(**UNLIMITED))


@pytest.mark.parametrize("name,steps", rk.CASES, ids=[c[0] for c in rk.CASES])
def test_rekey_table_in_the_kernel_and_the_model(both, name, steps):
    rk.play(name, steps, both)
    assert both.same_runtime(), name


def test_a_key_phase_drop_moves_no_state_and_is_a_security_event(both):
    """The phase is checked before the tag: a packet of a phase the element
    no longer accepts (a late old-key packet, or anyone's forgery naming it)
    touches no window, bucket or counter of the session. It is a security
    drop, as a bad tag is (sampled and budgeted as every such event): a
    forger must not vanish from the events by naming the other phase."""
    rk.play("setup", [rk.put("epoch1"), (rk.new(10), abi.R_PASS_DATA)], both)
    both.gate.prog.drain_events()
    both.model.events.drain()
    before = bytes(both.gate.maps.get_runtime(rk.SID))
    for c in (11, 1 << 40, abi.reject_after() - 1):
        assert both.verdict(rk.old(c)) == abi.R_DROP_KEY_PHASE
        assert both.verdict(rk.old(c, **rk.REKEY)) == abi.R_DROP_KEY_PHASE
    assert bytes(both.gate.maps.get_runtime(rk.SID)) == before
    got, want = both.gate.prog.drain_events(), both.model.events.drain()
    assert [e.reason for e in got] == [e.reason for e in want] == [abi.R_DROP_KEY_PHASE] * 6
    assert both.verdict(rk.new(11)) == abi.R_PASS_DATA  # the window did not jump


def _forgery(counter: int, phase1: bool) -> bytes:
    """An off-path spoofer's frame: a known session id, a key it does not
    have (random), the phase flag of its choice."""
    kw = dict(sid=rk.SID, key=os.urandom(16), src=f"203.0.113.{counter % 250 + 1}",
              sport=1024 + counter)
    if phase1:
        kw["flags"] = rk.PHASE1
    return rk.frame(counter, **kw)


@pytest.mark.parametrize("shape", ["epoch0", "epoch1"])
def test_a_forger_naming_either_phase_is_a_security_event(both, shape):
    """Review R3 F1: outside an overlap one of the two phases is always
    refused before the tag; forgeries naming it are events as bad tags are,
    each with its own reason (the XdpSecurityDrop event's DROP_KEY_PHASE)."""
    rk.play("setup", [rk.put(shape)], both)
    both.gate.prog.drain_events()
    both.model.events.drain()
    accepted_is_1 = shape == "epoch1"
    reasons = []
    for c in range(1, 21):
        reasons.append(both.verdict(_forgery(c, phase1=accepted_is_1)))
        reasons.append(both.verdict(_forgery(c + 100, phase1=not accepted_is_1)))
    assert reasons == [abi.R_DROP_BAD_TAG, abi.R_DROP_KEY_PHASE] * 20
    got, want = both.gate.prog.drain_events(), both.model.events.drain()
    assert [e.reason for e in got] == [e.reason for e in want] == reasons
    assert abi.COUNTER_NAMES[abi.R_DROP_KEY_PHASE].upper() == "DROP_KEY_PHASE"


def test_key_phase_events_are_budgeted_as_every_security_event(gate):
    """A flood of key-phase forgeries costs the event budget, not more
    events: the same GCRA and sampling as bad tags."""
    both = fresh(gate, GateConfig(**UNLIMITED, events_per_sec=1, events_burst=2))
    rk.play("setup", [rk.put("epoch0")], both)
    both.gate.prog.drain_events()
    both.model.events.drain()
    for c in range(1, 51):
        assert both.verdict(_forgery(c, phase1=True)) == abi.R_DROP_KEY_PHASE
    got, want = both.gate.prog.drain_events(), both.model.events.drain()
    assert len(got) == len(want) and 1 <= len(got) <= 3


def test_a_captured_rekey_init_never_passes_a_standby(gate):
    """Review R3 F4: a standby's daemon refuses REKEY_INIT before verifying
    it, so its ctl_floor never rises; the gate must not pass a captured one
    again and again (each a RekeyDenied at every standby)."""
    both = fresh(gate, GateConfig(session_control_pps=1, session_control_burst=1,
                                   authed_control_pps=0, global_control_pps=0))
    rk.play("setup", [rk.put("epoch0", state=abi.STATE_REMOTE)], both)
    captured = rk.old(42, **rk.REKEY)
    for _ in range(20):
        assert both.verdict(captured) == abi.R_DROP_STATE
        gate.tick(1_000_000_000)
    # the control bucket is untouched: the handoff's reattach still passes
    assert both.verdict(rk.old(43, t=abi.MSG_REATTACH_REQ, **rk.ELSEWHERE)) == abi.R_PASS_CONTROL


def test_rekey_init_spends_the_sessions_control_bucket(gate):
    both = fresh(gate, GateConfig(session_control_pps=1, session_control_burst=1,
                                   authed_control_pps=0, global_control_pps=0))
    rk.play("setup", [rk.put("overlap")], both)
    assert both.verdict(rk.old(1, **rk.REKEY)) == abi.R_PASS_CONTROL
    # the same bucket whichever phase the request names, and with reattaches
    assert both.verdict(rk.new(2, **rk.REKEY)) == abi.R_DROP_RATE_SESSION
    assert both.verdict(rk.new(3, t=abi.MSG_REATTACH_REQ)) == abi.R_DROP_RATE_SESSION
    gate.tick(1_000_000_000)
    assert both.verdict(rk.new(4, **rk.REKEY)) == abi.R_PASS_CONTROL
    assert both.same_runtime()


def test_a_replace_never_touches_the_runtime_slot(both):
    """Adding and removing the second key is an element write only: the
    slot the XDP program owns is byte for byte what it was."""
    rk.play("setup", [rk.put("epoch0"), (rk.old(1), abi.R_PASS_DATA)], both)
    before = bytes(both.gate.maps.runtime_slot(rk.SID))
    for shape in ("overlap", "epoch1"):
        rk.play(shape, [rk.put(shape)], both)
        assert bytes(both.gate.maps.runtime_slot(rk.SID)) == before, shape
        assert both.gate.maps.counter_top(rk.SID) == 2


def test_pins_of_the_older_element_layout_are_refused_by_name():
    """The element grew (issue 13): a build loaded over maps pinned by the
    previous one names the map and the sizes, instead of the verifier's
    bare "Permission denied"."""
    import uuid  # noqa: PLC0415
    from pathlib import Path  # noqa: PLC0415

    from jvpn.errors import LoadFailed  # noqa: PLC0415
    from jvpn.gate.attach import unpin  # noqa: PLC0415
    from jvpn.gate.loader import BuildOptions, Program, load_plain  # noqa: PLC0415

    pins = Path("/sys/fs/bpf") / f"jvt-{uuid.uuid4().hex[:11]}"
    pins.mkdir()
    old = load_plain(f"""
#include <uapi/linux/bpf.h>
struct old_session {{ __u64 w[10]; }};  /* the 80-byte element before issue 13 */
BPF_TABLE_PINNED("hash", __u64, struct old_session, s, 16, "{pins}/sessions",
                 BPF_F_NO_PREALLOC);
int xdp_main(struct xdp_md *ctx) {{ __u64 k = 0; return s.lookup(&k) ? XDP_DROP : XDP_PASS; }}
""")[0]
    try:
        with pytest.raises(LoadFailed, match=r"another layout \(sessions: 80-byte values, "
                                             r"this build's are 112\)"):
            Program(pins, BuildOptions(max_sessions=16, max_sources=16))
    finally:
        old.cleanup()
        unpin(pins)


def test_kernel_and_model_agree_on_random_masks_zero_slots_flags_and_types(both):
    """Kernel = model for random masks (0..255), zero and real key slots,
    random header flags and message types, counters and floors, in every
    live state (from review R3's held checks: the zero-slot refusal and the
    standby's allowed types are the same on both)."""
    import random  # noqa: PLC0415

    from kits.xdp_harness import session  # noqa: PLC0415

    rnd = random.Random(13)
    keys = [rk.OLD, rk.NEW, bytes(16)]
    seen = set()
    for _ in range(60):
        k0, k1 = rnd.choice([*keys, None]), rnd.choice([*keys, None])
        both.write(session(key=k0, key1=k1, key_phases=rnd.randrange(256),
                           state=rnd.choice([abi.STATE_ATTACHED, abi.STATE_DEGRADED,
                                             abi.STATE_REMOTE, abi.STATE_RECOVERING]),
                           rt_slot=rk.SID, rt_gen=1, ctl_floor=rnd.choice([0, 50, 1000]),
                           probe_floor=rnd.choice([0, 50, 1000])))
        for _ in range(15):
            t = rnd.choice([abi.MSG_DATA, abi.MSG_KEEPALIVE, abi.MSG_REKEY_INIT,
                            abi.MSG_REATTACH_REQ, abi.MSG_REKEY_RESP, abi.MSG_TERMINATE,
                            abi.MSG_PATH_PROBE, abi.MSG_PATH_PROBE_REPLY])
            flags = rnd.randrange(1 << 16) if rnd.random() < 0.2 else rnd.choice([0, 4, 8, 12])
            payload = b"" if t == abi.MSG_KEEPALIVE else b"x" * 80
            seen.add(both.verdict(rk.frame(rnd.randrange(1, 2000), sid=rk.SID,
                                           key=rnd.choice(keys), t=t, flags=flags,
                                           payload=payload)))
    assert {abi.R_DROP_KEY_PHASE, abi.R_DROP_BAD_TAG, abi.R_PASS_DATA} <= seen
    assert len(both.gate.prog.drain_events()) == len(both.model.events.drain())
