"""The rekey nudge's pace (jvpn/gateway/key_nudge.py) through wall-clock
steps: "at most one every REKEY_NUDGE_MS", and one that often while the
session is DEGRADED with expired keys, whatever the wall clock does. The
pace runs on the gateway's timer clock (never set back: CLOCK_BOOTTIME in
the daemon, ``timer`` here), the keys' expiry on the wall clock
(``clock``). Reviews: k20r3 F3 (a clock stepped back again and again sent
one nudge a step), k20r4 F2 (a clock held by small steps back got none),
k20r4 F3 (a clock swinging back and forth sent one a swing)."""

from __future__ import annotations

from test_rekey_degraded_recovery import _degraded, gate  # noqa: F401 - gate: the fixture

from jvpn.config import REKEY_NUDGE_MS
from jvpn.session import State
from kits.daemon_kit import Clock


def _nudged_degraded(tmp_path, gate):  # noqa: F811
    """A DEGRADED session whose first nudge just left; what was sent so far.
    Its binding stays silent (the client is away) up to a minute of the
    timer clock here: stranding (key_timers.stranded) measures silence on
    it, so its TTL is an hour, not the default 15 s."""
    timer = Clock()
    gw, clock, b, sid = _degraded(tmp_path, gate, timer, transport_lost_ttl_ms=3_600_000)
    b.online = False
    clock.ms += 3_000
    timer.ms += 3_000
    b.tick()  # a nudge
    return gw, clock, timer, b, sid, len(gw.sock.sent)


def _nudges_since(gw, sid, n: int) -> int:
    assert gw.table.get(sid).record.state is State.DEGRADED
    return len(gw.sock.sent) - n


def test_nudges_stay_paced_while_the_wall_clock_steps_back(tmp_path, gate):  # noqa: F811
    gw, clock, timer, b, sid, n = _nudged_degraded(tmp_path, gate)
    for _ in range(5):  # 2 ms of real time a tick, the wall clock stepped 3 ms back each
        clock.ms -= 3
        timer.ms += 2
        b.tick()
    sent = _nudges_since(gw, sid, n)
    assert sent == 0, f"{sent} nudges within 10 ms of real time (pace: {REKEY_NUDGE_MS} ms)"


def test_a_wall_clock_held_by_small_steps_back_still_gets_nudges(tmp_path, gate):  # noqa: F811
    """A minute: the wall clock runs 900 ms and is stepped back 901 ms each
    second (no progress on the whole); the nudges go on, one a second."""
    gw, clock, timer, b, sid, n = _nudged_degraded(tmp_path, gate)
    for _second in range(60):
        for _ in range(3):
            clock.ms += 300
            timer.ms += 300
            b.tick()
        clock.ms -= 901
        timer.ms += 100
        b.tick()
    sent = _nudges_since(gw, sid, n)
    assert 55 <= sent <= 60, f"{sent} nudges in 60 s of real time while the wall clock was held"


def test_a_wall_clock_swinging_back_and_forth_sends_no_nudge_a_swing(tmp_path, gate):  # noqa: F811
    gw, clock, timer, b, sid, n = _nudged_degraded(tmp_path, gate)
    for _ in range(5):  # 1 ms of real time a tick
        clock.ms -= REKEY_NUDGE_MS
        timer.ms += 1
        b.tick()
        clock.ms += REKEY_NUDGE_MS
        timer.ms += 1
        b.tick()
    sent = _nudges_since(gw, sid, n)
    assert sent == 0, f"{sent} nudges within 10 ms of real time"


def test_a_wall_clock_stepped_back_does_not_stop_the_nudges(tmp_path, gate):  # noqa: F811
    """Review k20fix's list: the pace compared the wall clock with the last
    nudge's time, so a step back held every DEGRADED session's nudges, and
    its way back to ATTACHED, for the length of the step. The pace is the
    timer clock's now (never set back): one a second of it, step or none."""
    gw, clock, timer, b, sid, n = _nudged_degraded(tmp_path, gate)
    clock.ms -= 2_500  # the gateway's wall clock stepped back (keys still expired)
    for _ in range(2):
        clock.ms += 1_000
        timer.ms += 1_000
        b.tick()
    assert _nudges_since(gw, sid, n) == 2
