"""Review k20r4 of ef0500f (jvpn/gateway/key_nudge.py): a wall clock read
before the last nudge restarts the pace from now. A wall clock that does
not advance on the whole -- stepped back, again and again, by what it ran
meanwhile (an NTP source an on-path party spoofs, a VM's clock held by its
host, two time daemons fighting) -- then never reaches the last nudge plus
REKEY_NUDGE_MS: every step back moves the pace's start back with it, and
a DEGRADED session with expired keys gets no nudge at all (a3bc100 sent
one a step; the code before it none until the clock passed the old
time). Here a minute of ticks, the clock running 900 ms and stepped back
901 ms each second: no nudge in 60 s, so the session stays DEGRADED (no
data) as long as the clock is held. Low severity: fail closed, and it
needs a held clock. Pacing by the timer's monotonic clock (CLOCK_BOOTTIME,
as 18833f6 ages attempts) gives one a second here, at most one a
REKEY_NUDGE_MS in test_rekey_nudge_pace.py's case."""

from __future__ import annotations

from test_rekey_degraded_recovery import _degraded, gate  # noqa: F401 - gate: the fixture

from jvpn.session import State


def test_a_wall_clock_held_by_small_steps_back_still_gets_nudges(tmp_path, gate):  # noqa: F811
    gw, clock, b, sid = _degraded(tmp_path, gate)
    b.online = False
    clock.ms += 3_000
    b.tick()  # a nudge
    n = len(gw.sock.sent)
    for _second in range(60):
        for _ in range(3):  # 300 ms of real time a tick, the clock with it
            clock.ms += 300
            b.tick()
        clock.ms -= 901  # stepped back by what it ran, and a millisecond
        b.tick()
    assert gw.table.get(sid).record.state is State.DEGRADED
    sent = len(gw.sock.sent) - n
    assert sent >= 30, f"{sent} nudges in 60 s of real time while the wall clock was held"


def test_a_wall_clock_swinging_back_and_forth_sends_no_nudge_a_swing(tmp_path, gate):  # noqa: F811
    """The other side of ef0500f: k20r3 F3 (one nudge a step back) comes
    back with a clock that swings: stepped forward REKEY_NUDGE_MS, back
    again, forward... Each step back restarts the pace from the low
    reading, the next step forward is then a whole interval past it: one
    nudge a swing, here 5 in 10 ms of real time (pace: one a second)."""
    gw, clock, b, sid = _degraded(tmp_path, gate)
    b.online = False
    clock.ms += 3_000
    b.tick()  # a nudge
    n = len(gw.sock.sent)
    for _ in range(5):  # 1 ms of real time a tick
        clock.ms -= 1_000
        b.tick()
        clock.ms += 1_000
        b.tick()
    assert gw.table.get(sid).record.state is State.DEGRADED
    sent = len(gw.sock.sent) - n
    assert sent <= 1, f"{sent} nudges within 10 ms of real time"
