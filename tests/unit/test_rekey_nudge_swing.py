"""Review k20r5 of a89d22d (jvpn/gateway/key_nudge.py), F1 (fixed): the
pace was forgotten whenever the wall clock said the keys were not expired,
and the session queued at its stranding time. (F2, not fixed: a wall clock
that does not move, frozen or held by steps back no tick sees, stalls the
nudges as it stalls every timer on the wall clock's queue.)"""

from __future__ import annotations

from test_rekey_degraded_recovery import _nudged, _since, gate  # noqa: F401 - gate: the fixture


def test_one_swing_of_the_wall_clock_across_the_keys_expiry_stops_the_nudges(
        tmp_path, gate):  # noqa: F811
    """F1: a step back to before the keys' expiry (the tick that sees it
    looks at every session) makes ``tick`` forget the pace (``sent_ms.pop``:
    "not expired") and the session is queued at its stranding time, not at
    the keys' expiry: stepped forward again 1 ms later, it gets no nudge
    until then, and stranded (its binding silent all along) it ends
    instead of being rekeyed back."""
    gw, clock, timer, b, sid, n = _nudged(tmp_path, gate)
    clock.ms -= 3_001  # 1 ms before the keys' expiry
    timer.ms += 1
    b.tick()
    clock.ms += 3_001
    for _ in range(30):  # 3 s, a tick every 100 ms (TIMER_TICK_S)
        clock.ms += 100
        timer.ms += 100
        b.tick()
    sent = _since(gw, sid, n)
    assert sent >= 2, f"{sent} nudges in 3 s after one swing of the wall clock"
