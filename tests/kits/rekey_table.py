"""The gate during a rekey (issue 13, docs/protocol.md "Rekey": the kernel
gate during the change), as one table of steps. tests/bpf/test_xdp_rekey.py
runs it through the XDP program and the model in lockstep (the same verdict
at every step, the same runtime slot at the end); tests/unit/test_model_rekey.py
runs it through the model alone.

Session 7's element goes through the rekey's three shapes, each one element
replace that keeps the runtime slot and generation (what the daemon writes,
jvpn/gate/element.py): ``epoch0`` (before: phase 0's key only), ``overlap``
(from the commit to the end of the overlap: both), ``epoch1`` (after: phase
1's key only). Epoch 0 seals under OLD with the phase flag clear, epoch 1
under NEW with it set.

A step is ("put", shape, element fields) | ("floor", counter): the daemon
verified a keepalive / control message of that counter | ("probe_floor",
counter): the daemon verified a PATH_PROBE of that counter | (frame, reason).
"""

from __future__ import annotations

from typing import Protocol

from jvpn import wire
from jvpn.gate import abi
from jvpn.gate.element import kept_floors, raised_floor
from jvpn.lab import frames
from kits.xdp_harness import CLIENT, CLIENT_PORT, GW, KEY, PORT, frame, session

OLD, NEW = KEY, bytes(range(100, 116))
SID = 7
PHASE1 = abi.FLAG_KEY_PHASE
SHAPES = {
    "epoch0": dict(key=OLD),
    "overlap": dict(key=OLD, key1=NEW),
    "epoch1": dict(key=None, key1=NEW),
}
ELSEWHERE = dict(src="198.51.100.7", sport=6000)  # a control message's new path
REKEY = dict(t=abi.MSG_REKEY_INIT, payload=b"r" * (wire.REKEY_INIT.size + wire.MAC_LEN))


def old(counter: int, **kw) -> bytes:
    """A message sealed under epoch 0 (phase 0)."""
    kw = {"sid": SID, "key": OLD, **kw}
    return frame(counter, **kw)


def new(counter: int, **kw) -> bytes:
    """A message sealed under epoch 1 (phase 1)."""
    kw = {"sid": SID, "key": NEW, "flags": PHASE1, **kw}
    return frame(counter, **kw)


def flipped(counter: int, key: bytes, flags: int) -> bytes:
    """A genuine message under ``key`` / ``flags`` whose phase flag an
    on-path attacker flipped afterwards (the tag is left as it was)."""
    msg = bytearray(wire.message(wire.Header(type=abi.MSG_DATA, session_id=SID,
                                             counter=counter, flags=flags), key, b"p" * 48))
    msg[2] ^= PHASE1
    return frames.udp_frame(CLIENT, CLIENT_PORT, GW, PORT, bytes(msg))


def retagged_under_other_key(counter: int) -> bytes:
    """Phase 1 named, but the tag computed under phase 0's key (a sender
    that names the wrong phase, or a forger holding only the old key)."""
    return frame(counter, sid=SID, key=OLD, flags=PHASE1)


def element(shape: str, **fields) -> abi.Session:
    return session(**SHAPES[shape], **fields)


def put(shape: str, **fields):
    return ("put", shape, fields)


OVERLAP = [put("overlap")]
P, D = abi.R_PASS_DATA, abi.R_DROP_KEY_PHASE
CTL = abi.R_PASS_CONTROL

# (name, steps)
CASES = [
    ("before the rekey: the current phase passes, the next one is not accepted yet",
     [put("epoch0"), (old(1), P), (new(2), D)]),
    ("overlap: the current (new) phase passes", [*OVERLAP, (new(1), P)]),
    ("overlap: the previous (old) phase passes too", [*OVERLAP, (old(1), P), (new(2), P)]),
    ("after the overlap: the old phase is dropped drop_key_phase",
     [put("epoch1"), (old(1), D), (new(2), P), (old(3), D)]),
    ("a flipped phase flag fails the tag (old packet, flag set)",
     [*OVERLAP, (flipped(1, OLD, 0), abi.R_DROP_BAD_TAG), (old(1), P)]),
    ("a flipped phase flag fails the tag (new packet, flag cleared)",
     [*OVERLAP, (flipped(1, NEW, PHASE1), abi.R_DROP_BAD_TAG), (new(1), P)]),
    ("phase 1 named, tag under phase 0's key: bad tag",
     [*OVERLAP, (retagged_under_other_key(1), abi.R_DROP_BAD_TAG)]),
    ("a flipped flag toward a phase no longer accepted: drop_key_phase",
     [put("epoch1"), (flipped(1, NEW, PHASE1), D), (new(1), P)]),
    ("forged tag under the accepted phase", [put("epoch1"),
                                              (new(1, key=bytes(16)), abi.R_DROP_BAD_TAG)]),
    ("the replay window is shared: a counter used under the old phase is a replay "
     "under the new one", [*OVERLAP, (old(10), P), (new(10), abi.R_DROP_REPLAY),
                                     (old(10), abi.R_DROP_REPLAY), (new(11), P)]),
    ("the replay window is shared: a counter used under the new phase is a replay "
     "under the old one", [*OVERLAP, (new(10), P), (old(10), abi.R_DROP_REPLAY),
                                     (old(9), P)]),
    ("an element accepting no phase passes nothing (fail closed)",
     [put("overlap", key_phases=0), (old(1), D), (new(2), D)]),
    # a torn element read (or a writer bug) pairing a mask bit with a zero
    # slot: the public zero key checks nothing, the window does not move
    ("a mask bit over an all-zero phase 1 slot: drop_key_phase",
     [put("epoch0", key_phases=abi.KEY_PHASES_ALL),
      (frame(abi.reject_after() - 1, sid=SID, key=bytes(16), flags=PHASE1), D),
      (old(2), P), (new(3, key=bytes(16), t=abi.MSG_REKEY_INIT), D)]),
    ("a mask bit over an all-zero phase 0 slot: drop_key_phase",
     [put("epoch1", key_phases=abi.KEY_PHASES_ALL),
      (frame(abi.reject_after() - 1, sid=SID, key=bytes(16)), D), (new(2), P)]),
    # REKEY_INIT: control, as the other control types (tag, ctl_floor,
    # freshness, the control buckets), in every state that takes control
    *[(f"REKEY_INIT passes as control in {abi.STATE_NAMES[st]}",
       [put("epoch0", state=st), (old(1, **REKEY), CTL), (old(2, **REKEY, **ELSEWHERE), CTL)])
      for st in (abi.STATE_ATTACHED, abi.STATE_VOLATILE, abi.STATE_RECOVERING,
                 abi.STATE_DEGRADED)],
    # a standby's daemon refuses REKEY_INIT unverified (its ctl_floor never
    # rises): the gate drops it, so a captured one cannot reach it forever
    ("REKEY_INIT for a standby (REMOTE) element: drop_state; its reattach passes",
     [put("epoch0", state=abi.STATE_REMOTE), (old(1, **REKEY), abi.R_DROP_STATE),
      (old(1, **REKEY, **ELSEWHERE), abi.R_DROP_STATE),
      (old(2, t=abi.MSG_REATTACH_REQ, **ELSEWHERE), CTL), (old(3), abi.R_DROP_STATE)]),
    *[(f"REKEY_INIT in {abi.STATE_NAMES[st]}: dropped drop_state",
       [put("epoch0", state=st), (old(1, **REKEY), abi.R_DROP_STATE)])
      for st in (abi.STATE_BIRTH, abi.STATE_TERMINATED)],
    ("REKEY_INIT at or below ctl_floor is a replay; above it passes",
     [put("epoch0"), (old(5, **REKEY), CTL), ("floor", 5), (old(5, **REKEY), abi.R_DROP_REPLAY),
      (old(4, **REKEY), abi.R_DROP_REPLAY), (old(6, **REKEY), CTL)]),
    ("REKEY_INIT with a counter data consumed is a replay",
     [put("epoch0"), (old(8), P), (old(8, **REKEY), abi.R_DROP_REPLAY)]),
    ("REKEY_INIT is not recorded by the gate (a header-only copy cannot kill it)",
     [put("epoch0"), (old(3, **dict(REKEY, payload=b"\xee" * 72)), CTL), (old(3, **REKEY), CTL)]),
    ("REKEY_INIT re-sent under the old phase during the overlap passes; after it, not",
     [*OVERLAP, (old(1, **REKEY), CTL), put("epoch1"), (old(2, **REKEY), D),
                (new(3, **REKEY), CTL)]),
    ("forged REKEY_INIT", [put("epoch0"), (old(1, **REKEY, key=bytes(16)),
                                           abi.R_DROP_BAD_TAG)]),
    ("REKEY_RESP and REKEY_REJECT never travel to the gateway",
     [put("overlap"), (new(1, t=abi.MSG_REKEY_RESP), abi.R_DROP_BAD_TYPE),
      (new(2, t=abi.MSG_REKEY_REJECT), abi.R_DROP_BAD_TYPE)]),
    # the runtime slot is the session's: window, ctl_floor and binding carry
    # over each replace (same slot, same generation)
    ("the window and the binding survive both replaces",
     [put("epoch0"), (old(1), P), (old(5), P), ("floor", 6),
      put("overlap"), (old(5), abi.R_DROP_REPLAY), (new(5), abi.R_DROP_REPLAY),
      (new(6, t=abi.MSG_KEEPALIVE, payload=b""), abi.R_DROP_REPLAY),
      (new(7, src="192.0.2.99"), abi.R_DROP_WRONG_BINDING), (new(7), P), (old(4), P),
      put("epoch1"), (new(7), abi.R_DROP_REPLAY), (old(8), D), (new(8), P),
      (new(9, sport=CLIENT_PORT + 1), abi.R_DROP_WRONG_BINDING),
      (new(9, t=abi.MSG_KEEPALIVE, payload=b""), abi.R_PASS_KEEPALIVE)]),
]


class Target(Protocol):
    """A gate the table runs against: session 7's element, written as the
    daemon writes it, and one frame's verdict."""

    def element(self) -> abi.Session | None: ...

    def write(self, element: abi.Session) -> None: ...

    def verdict(self, pkt: bytes) -> int: ...


FLOOR_STEPS = {"floor": "ctl_floor", "probe_floor": "probe_floor"}


def play(name: str, steps: list, target: Target) -> None:
    """Every step of one case; a put keeps the slot, the generation and the
    floors (element.kept_floors), as the daemon's replace does."""
    for i, step in enumerate(steps):
        if step[0] == "put":
            target.write(element(step[1], rt_slot=SID, rt_gen=1,
                                 **kept_floors(target.element()), **step[2]))
        elif step[0] in FLOOR_STEPS:
            raised = raised_floor(target.element(), step[1], FLOOR_STEPS[step[0]])
            assert raised is not None, f"{name}: step {i} raises no floor"
            target.write(raised)
        else:
            pkt, want = step
            got = target.verdict(pkt)
            assert got == want, (f"{name}: step {i}: {abi.COUNTER_NAMES[got]}, "
                                 f"expected {abi.COUNTER_NAMES[want]}")
