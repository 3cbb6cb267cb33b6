"""Review k20r3 of a3bc100 (fixed: a step back restarts the pace from now)
(jvpn/gateway/key_nudge.py): the rekey nudge's
pace reads a wall clock behind the last nudge as a new start. A clock
stepped back again and again (an NTP source an on-path party spoofs, two
time daemons fighting, a VM's clock) sends one nudge a step: here 2 ms of
real time apart, not REKEY_NUDGE_MS. Bounded by the steps (low severity:
the binding is the session's proven one), but the pace the module
promises ("at most one every REKEY_NUDGE_MS") does not hold. Pacing by
the timer clock (CLOCK_BOOTTIME, as 18833f6 ages attempts) keeps both
this and a3bc100's case (its test: a nudge 1 s after a step back)."""

from __future__ import annotations

from test_rekey_degraded_recovery import _degraded, gate  # noqa: F401 - gate: the fixture

from jvpn.config import REKEY_NUDGE_MS
from jvpn.session import State


def test_nudges_stay_paced_while_the_wall_clock_steps_back(tmp_path, gate):  # noqa: F811
    gw, clock, b, sid = _degraded(tmp_path, gate)
    b.online = False
    clock.ms += 3_000
    b.tick()  # a nudge
    n = len(gw.sock.sent)
    for _ in range(5):  # 2 ms of real time a tick, the wall clock stepped 5 ms back each time
        clock.ms -= 3
        b.tick()
    assert gw.table.get(sid).record.state is State.DEGRADED
    sent = len(gw.sock.sent) - n
    assert sent == 0, f"{sent} nudges within 10 ms of real time (pace: {REKEY_NUDGE_MS} ms)"
