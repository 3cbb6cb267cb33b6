"""The gate and path probes (issue 14, docs/protocol.md "Transport
selection", "The probe budget"), as one table of steps in the form of
kits/rekey_table.py (the same session 7, shapes, helpers and ``play``).
tests/bpf/test_xdp_probes.py runs it through the XDP program and the model
in lockstep.

PATH_PROBE is authenticated control like REKEY_INIT: the state mask (every
live state, not a standby's REMOTE element, nothing in BIRTH or TERMINATED),
the key phase, the tag, probe_floor (not ctl_floor: the daemon raises a
floor of the probes' own, issue 14) and freshness in the window, then the
session's own probe bucket (not the control one: probes never starve a
reattach) and the gateway-wide probe bucket (not the authenticated one:
probes never starve another session's reattach, review D).
PATH_PROBE_REPLY only travels from the gateway: drop_bad_type."""

from __future__ import annotations

from jvpn import wire
from jvpn.gate import abi
from kits.rekey_table import ELSEWHERE, OVERLAP, new, old, put

PROBE = dict(t=abi.MSG_PATH_PROBE, payload=b"q" * (wire.PATH_PROBE.size + wire.MAC_LEN))
REPLY = dict(t=abi.MSG_PATH_PROBE_REPLY,
             payload=b"a" * (wire.PATH_PROBE_REPLY.size + wire.MAC_LEN))
CTL, D = abi.R_PASS_CONTROL, abi.R_DROP_KEY_PHASE
LIVE = (abi.STATE_ATTACHED, abi.STATE_VOLATILE, abi.STATE_RECOVERING, abi.STATE_DEGRADED)

# (name, steps)
CASES = [
    # from the binding and from a candidate path alike: a probe is control
    *[(f"PATH_PROBE passes as control in {abi.STATE_NAMES[st]}",
       [put("epoch0", state=st), (old(1, **PROBE), CTL), (old(2, **PROBE, **ELSEWHERE), CTL)])
      for st in LIVE],
    # a standby's daemon answers no probe: it would never raise its floor
    ("PATH_PROBE for a standby (REMOTE) element: drop_state; its reattach passes",
     [put("epoch0", state=abi.STATE_REMOTE), (old(1, **PROBE), abi.R_DROP_STATE),
      (old(1, **PROBE, **ELSEWHERE), abi.R_DROP_STATE),
      (old(2, t=abi.MSG_REATTACH_REQ, **ELSEWHERE), CTL)]),
    *[(f"PATH_PROBE in {abi.STATE_NAMES[st]}: dropped drop_state",
       [put("epoch0", state=st), (old(1, **PROBE), abi.R_DROP_STATE)])
      for st in (abi.STATE_BIRTH, abi.STATE_TERMINATED)],
    ("forged PATH_PROBE (a key it does not hold): drop_bad_tag",
     [put("epoch0"), (old(1, **PROBE, key=bytes(range(40, 56))), abi.R_DROP_BAD_TAG),
      (old(1, **PROBE, key=bytes(range(40, 56)), **ELSEWHERE), abi.R_DROP_BAD_TAG),
      (old(1, **PROBE), CTL)]),
    # issue 14: a probe is checked against probe_floor (which only a verified
    # probe raises), not ctl_floor: one overtaken by later heartbeats or
    # control of ours passes while fresh in the window; a captured probe's
    # replays die as replays once the daemon verified it
    ("PATH_PROBE at or below probe_floor is a replay, from any address; above it passes",
     [put("epoch0"), (old(5, **PROBE), CTL), ("probe_floor", 5),
      (old(5, **PROBE), abi.R_DROP_REPLAY), (old(5, **PROBE, **ELSEWHERE), abi.R_DROP_REPLAY),
      (old(4, **PROBE), abi.R_DROP_REPLAY), (old(6, **PROBE), CTL)]),
    ("probe_floor is the probes' alone: control below it passes, and a put keeps it",
     [put("epoch0"), ("probe_floor", 9), (old(8, t=abi.MSG_REATTACH_REQ, **ELSEWHERE), CTL),
      (old(7, t=abi.MSG_REKEY_INIT), CTL), put("overlap"), (old(9, **PROBE), abi.R_DROP_REPLAY),
      (new(10, **PROBE), CTL)]),
    ("PATH_PROBE below ctl_floor but fresh in the window passes, from any address",
     [put("epoch0"), ("floor", 9), (old(5, **PROBE, **ELSEWHERE), CTL), (old(9, **PROBE), CTL),
      (old(9, t=abi.MSG_REATTACH_REQ, **ELSEWHERE), abi.R_DROP_REPLAY),
      (old(10, **PROBE), CTL)]),
    ("a passed probe moves neither the floor nor the window: an older reattach still passes",
     [put("epoch0"), (old(9, **PROBE, **ELSEWHERE), CTL), (old(9, **PROBE), CTL),
      (old(8, t=abi.MSG_REATTACH_REQ, **ELSEWHERE), CTL)]),
    ("PATH_PROBE with a counter data consumed is a replay",
     [put("epoch0"), (old(8), abi.R_PASS_DATA), (old(8, **PROBE), abi.R_DROP_REPLAY)]),
    ("PATH_PROBE below the window is a replay, even above ctl_floor",
     [put("epoch0"), (old(5000), abi.R_PASS_DATA),
      (old(5000 - abi.replay_window() - 1, **PROBE), abi.R_DROP_REPLAY),
      (old(5000 - abi.replay_window(), **PROBE), CTL)]),
    ("PATH_PROBE under a dead key phase: drop_key_phase",
     [put("epoch0"), (new(1, **PROBE), D), put("epoch1"), (old(2, **PROBE), D),
      (new(3, **PROBE), CTL)]),
    ("PATH_PROBE under the old phase during the overlap passes; after it, not",
     [*OVERLAP, (old(1, **PROBE), CTL), (new(2, **PROBE), CTL), put("epoch1"),
      (old(3, **PROBE), D), (new(4, **PROBE), CTL)]),
    ("PATH_PROBE_REPLY never travels to the gateway: drop_bad_type",
     [put("overlap"), (new(1, **REPLY), abi.R_DROP_BAD_TYPE),
      (old(2, **REPLY, **ELSEWHERE), abi.R_DROP_BAD_TYPE)]),
]
